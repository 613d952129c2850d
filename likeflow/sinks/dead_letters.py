"""Sends invalid records to the dead-letter topic with their original bytes, counted by reason."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

from likeflow.engine import OutputBatch, OutRecord
from likeflow.metrics import Metrics
from likeflow.sinks.dead_letter_records import (
    HEADER_PREFIX,
    dead_letter_headers,
    fitted,
    pseudonymised_header,
    without_raw_user_id,
)
from streams.events import Invalid

log = logging.getLogger(__name__)

LOG_EVERY_S = 1.0


class SourceRecord(Protocol):
    """A consumed record: aiokafka's ConsumerRecord and Faust's Message both fit."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any


class DeadLetterSink:
    """Queues dead letters on a batch's outputs; logs at most one line per reason per second.

    Dead letters of `user_keyed_topics` (full names) keep no raw user id: key and `user_id` are
    replaced by the pseudonym where the record can be parsed, and the record is marked so the
    edge does not pseudonymise it again if it is repaired and published anew; those of
    `user_field_topics` (records that name a user but are keyed otherwise) get their `user_id`
    field replaced. Every dead letter fits the topic: a key or value over its limit is cut to it,
    with its size and SHA-256 in headers, and the original headers are capped. A dead letter the
    broker still refuses for good is counted (`likeflow_dead_letters_refused_total`), logged and
    skipped: the batch's offsets then move on, so one record cannot stop the worker.
    """

    def __init__(
        self,
        topic: str,
        partition_of: Any,
        metrics: Metrics,
        user_keyed_topics: Collection[str] = (),
        pseudonymize: Callable[[str], str] | None = None,
        *,
        user_field_topics: Collection[str] = (),
        max_key_bytes: int = 512,
        max_value_bytes: int = 65_536,
    ) -> None:
        self.topic = topic
        self._partition_of = partition_of  # key bytes -> partition of the dead-letter topic
        self._metrics = metrics
        self._user_keyed = frozenset(user_keyed_topics) if pseudonymize else frozenset()
        self._user_field = frozenset(user_field_topics) if pseudonymize else frozenset()
        self._pseudonymize = pseudonymize
        self._max_key_bytes = max_key_bytes
        self._max_value_bytes = max_value_bytes
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def add(
        self,
        outputs: OutputBatch,
        record: SourceRecord,
        invalid: Invalid,
        value: bytes | None = None,
    ) -> None:
        """Queue `record`'s original key, value and headers (or `value` instead of the original
        one) with `likeflow.dlq.*` headers on `outputs`; never raises on content."""
        reason = invalid.reason.value
        headers = dead_letter_headers(
            record.headers,
            reason=reason,
            error=invalid.error,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
        key, value = record.key, record.value if value is None else value
        # The key first (an oversized one is no user id, and is never hashed or pseudonymised
        # whole), then the raw user id out, then the value cut: its SHA-256 names no raw id.
        key, _, cut_key = fitted(key, None, max_key_bytes=self._max_key_bytes, max_value_bytes=0)
        user_keyed = record.topic in self._user_keyed
        if (user_keyed or record.topic in self._user_field) and self._pseudonymize is not None:
            key, value, changed = without_raw_user_id(
                key, value, self._pseudonymize, key_is_user_id=user_keyed
            )
            if changed:
                headers = pseudonymised_header(headers)
        _, value, cut_value = fitted(None, value, max_key_bytes=0, max_value_bytes=self._max_value_bytes)
        headers += cut_key + cut_value
        outputs.add(
            self.topic, self._partition_of(key or b""), key, value, None, headers, on_refused=self._refused
        )
        self._metrics.dead_letters.labels(record.topic, reason).inc()
        self._log(record, reason, invalid.error)

    def _refused(self, record: OutRecord, exc: BaseException) -> None:
        headers = dict(record[3])
        source = headers.get(HEADER_PREFIX + "topic", b"?").decode("utf-8", "replace")
        self._metrics.dead_letters_refused.labels(source).inc()
        log.error(
            "dead letter of %s[%s]@%s refused by the broker (%r): counted and skipped; the record's "
            "offset is committed without it (is the dead-letter topic's max.message.bytes below 1 MiB?)",
            source,
            headers.get(HEADER_PREFIX + "partition", b"?").decode("utf-8", "replace"),
            headers.get(HEADER_PREFIX + "offset", b"?").decode("utf-8", "replace"),
            exc,
        )

    def add_all(self, outputs: OutputBatch, invalid: Sequence[tuple[SourceRecord, Invalid]]) -> None:
        """`add` for each (record, why) pair."""
        for record, why in invalid:
            self.add(outputs, record, why)

    def _log(self, record: SourceRecord, reason: str, error: str) -> None:
        now = time.monotonic()
        if now - self._last_logged.get(reason, 0.0) < LOG_EVERY_S:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return
        self._last_logged[reason] = now
        log.warning(
            "dead letter %s[%d]@%d reason=%s: %s (%d more with this reason not logged)",
            record.topic,
            record.partition,
            record.offset,
            reason,
            error,
            self._suppressed.pop(reason, 0),
        )
