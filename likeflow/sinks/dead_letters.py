"""Sends invalid records to the dead-letter topic with their original bytes, counted by reason."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

from likeflow.metrics import Metrics
from likeflow.sinks.dead_letter_records import dead_letter_headers, pseudonymised_header, without_raw_user_id
from likeflow.sinks.kafka_batch import OutputBatch
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
    edge does not pseudonymise it again if it is repaired and published anew.
    """

    def __init__(
        self,
        topic: str,
        partition_of: Any,
        metrics: Metrics,
        user_keyed_topics: Collection[str] = (),
        pseudonymize: Callable[[str], str] | None = None,
    ) -> None:
        self.topic = topic
        self._partition_of = partition_of  # key bytes -> partition of the dead-letter topic
        self._metrics = metrics
        self._user_keyed = frozenset(user_keyed_topics) if pseudonymize else frozenset()
        self._pseudonymize = pseudonymize
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
        if record.topic in self._user_keyed and self._pseudonymize is not None:
            key, value, changed = without_raw_user_id(key, value, self._pseudonymize)
            if changed:
                headers = pseudonymised_header(headers)
        outputs.add(self.topic, self._partition_of(key or b""), key, value, None, headers)
        self._metrics.dead_letters.labels(record.topic, reason).inc()
        self._log(record, reason, invalid.error)

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
