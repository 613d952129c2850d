"""Sends invalid records to the dead-letter topic with their original bytes, counted by reason."""

from __future__ import annotations

import logging
import time
from typing import Any

from likeflow.deadletter import dead_letter_headers
from likeflow.metrics import Metrics
from streams.events import Invalid

log = logging.getLogger(__name__)

LOG_EVERY_S = 1.0


class DeadLetterSink:
    """Dead-letters one Faust event; logs at most one line per reason per second."""

    def __init__(self, topic: Any, metrics: Metrics) -> None:
        self._topic = topic
        self._metrics = metrics
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    async def send(self, event: Any, invalid: Invalid) -> None:
        """Forward `event`'s original record with `likeflow.dlq.*` headers; never raises on content."""
        message = event.message
        reason = invalid.reason.value
        await self._topic.send(
            key=message.key,
            value=message.value,
            headers=dead_letter_headers(
                message.headers,
                reason=reason,
                error=invalid.error,
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
            ),
        )
        self._metrics.dead_letters.labels(message.topic, reason).inc()
        self._log(message, reason, invalid.error)

    def _log(self, message: Any, reason: str, error: str) -> None:
        now = time.monotonic()
        if now - self._last_logged.get(reason, 0.0) < LOG_EVERY_S:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return
        self._last_logged[reason] = now
        log.warning(
            "dead letter %s[%d]@%d reason=%s: %s (%d more with this reason not logged)",
            message.topic,
            message.partition,
            message.offset,
            reason,
            error,
            self._suppressed.pop(reason, 0),
        )
