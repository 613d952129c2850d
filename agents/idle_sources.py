"""Idle inputs of the creator counters: a caught-up, quiet source stops holding windows open."""

from __future__ import annotations

import logging
import time
from typing import Any

from agents.context import PipelineContext
from likeflow.domain.quality.sources import SourceReports
from likeflow.engine import OutputBatch
from streams.topics import CREATOR_EVENTS

log = logging.getLogger(__name__)


class IdleSources:
    """Reports the owned partitions of the counters' inputs that are idle (an app timer).

    A partition is idle when its worker has delivered it up to its high watermark, no batch of
    its topic is in flight, and nothing new has arrived for `LIKEFLOW_QUALITY_IDLE_AFTER_S`.
    Each counting partition is told once (`SourceReports.idle_records`) and leaves the source
    out of its watermark until the source's next record. Idleness is decided by the wall clock,
    but it changes only when windows are first sent to the judge, never the counts
    (docs/quality.md).
    """

    def __init__(self, ctx: PipelineContext, consumer: Any, sources: dict[str, SourceReports]) -> None:
        self._ctx = ctx
        self._consumer = consumer  # () -> the app's BatchConsumer
        self._sources = sources  # full topic name -> that topic's reports
        self._counts_topic = ctx.settings.topic(CREATOR_EVENTS)
        self._started = time.monotonic()

    async def check(self) -> None:
        """One check; sends the idle markers that are due."""
        consumer = self._consumer()
        if consumer is None or self._ctx.settings.quality_idle_after_s <= 0:
            return
        now = time.monotonic()
        quiet_for = self._ctx.settings.quality_idle_after_s
        records = []
        for tp in consumer.assignment():
            reports = self._sources.get(tp.topic)
            if reports is None or consumer.batches_pending(tp.topic):
                continue
            last = consumer.delivered_at(tp) or self._started
            if now - last >= quiet_for and consumer.caught_up(tp):
                for k, record in reports.idle_records(tp.partition):
                    records.append((k, record))
        if not records:
            return
        outputs = OutputBatch(self._ctx.producer())
        for k, record in records:
            outputs.add(self._counts_topic, k, record.key, record.to_json(), record.clock or None)
        await outputs.send()
        await outputs.delivered()
        log.info(
            "idle inputs reported to the creator counters: %s",
            ", ".join(sorted({s.source for _, r in records for s in r.sections})),
        )
