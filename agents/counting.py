"""Agent `count_creator_events`: exact per-creator window counts, closing and expiry by event time."""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
import orjson

from agents.context import PipelineContext
from agents.quality_index import SEEN_BUCKET_MS, PartitionIndex, QualityIndex
from likeflow.domain.quality.counting import (
    Outcome,
    PartitionClock,
    WindowRow,
    advance,
    classify,
    clock_key,
    expired_before,
    seen_key,
    window_key,
)
from likeflow.domain.quality.windows import window_start
from likeflow.sinks.redis_quality import windows_key
from streams.events import CreatorEvent, DeadLetterReason, Invalid
from streams.topics import CREATOR_EVENTS
from tables import delete_for_event, put_for_event

log = logging.getLogger(__name__)


def register(app: faust.App, ctx: PipelineContext) -> Any:
    """Register the agent on `app`; returns it (for tests)."""
    table = ctx.tables.creator_counts
    policy = ctx.windows
    metrics = ctx.metrics
    index = QualityIndex(table)
    consumed = metrics.records_consumed.labels(ctx.settings.topic(CREATOR_EVENTS))
    within_s = ctx.settings.batch_within_ms / 1000
    batch_seconds = metrics.batch_duration.labels("count_creator_events")

    def forget_index(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        # Recovery after a rebalance may have added rows for newly assigned partitions.
        index.invalidate()

    app.on_partitions_assigned.connect(forget_index)  # type: ignore[arg-type]  # mode stub is stricter than its runtime

    async def process(event: Any, touched: dict[str, tuple[int, int]]) -> None:
        message = event.message
        partition, offset = message.partition, message.offset
        ev = CreatorEvent.from_trusted(orjson.loads(message.value))
        part = index.for_partition(partition)
        clock = PartitionClock.from_dict(table.get(clock_key(partition)))
        start = window_start(ev.ts, policy.size_ms)
        row_data = table.get(window_key(ev.creator_id, start))
        row = WindowRow.from_dict(row_data) if row_data else None
        seen = table.get(seen_key(ev.event_id))
        outcome = classify(
            clock, row, seen["offset"] if seen else None, offset=offset, ts=ev.ts, policy=policy
        )
        metrics.creator_events.labels(ev.kind, outcome.value).inc()
        if outcome is Outcome.COUNTED:
            row = row or WindowRow(ev.creator_id, start)
            row.counts.add_event(ev.kind, ev.amount_cents)
            row.last_offset = offset
            # Write order matters for crash safety (see likeflow/domain/quality/counting.py):
            # the row, then the dedupe entry, then the clock.
            put_for_event(
                table, event, window_key(ev.creator_id, start), {**row.to_dict(), "partition": partition}
            )
            put_for_event(
                table, event, seen_key(ev.event_id), {"offset": offset, "ts": ev.ts, "partition": partition}
            )
            part.add_window(ev.creator_id, start)
            part.add_seen(ev.event_id, ev.ts)
            touched[ev.creator_id] = (partition, offset)
        elif outcome is Outcome.LATE:
            metrics.late_records.inc()
            await ctx.dead_letters.send(
                event,
                Invalid(DeadLetterReason.LATE, f"ts={ev.ts} is in a window closed at {clock.closed_until}"),
            )
        closing = advance(clock, offset=offset, ts=ev.ts, policy=policy)
        put_for_event(table, event, clock_key(partition), clock.to_dict())
        watermark_ms = clock.high_ts - policy.grace_ms
        metrics.watermark_delay.labels(str(partition)).set(max(0.0, time.time() - watermark_ms / 1000))
        if closing:
            await close_windows(event, part, closing, touched)
            expire(event, part, clock, touched)

    async def close_windows(
        event: Any, part: PartitionIndex, starts: list[int], touched: dict[str, tuple[int, int]]
    ) -> None:
        for start in starts:
            for creator_id in sorted(part.windows.get(start, ())):
                row = table.get(window_key(creator_id, start))
                if row is None:
                    continue
                closed = {
                    "creator_id": creator_id,
                    "start_ms": start,
                    "end_ms": start + policy.size_ms,
                    **row["counts"],
                    "source_partition": event.message.partition,
                }
                # The judge's input. After a crash a window may be sent twice with the same
                # content; the judge applies each (creator, window) once.
                await ctx.topics.creator_windows.send(key=creator_id.encode(), value=orjson.dumps(closed))
                metrics.windows_closed.inc()

    def expire(
        event: Any, part: PartitionIndex, clock: PartitionClock, touched: dict[str, tuple[int, int]]
    ) -> None:
        windows_below, seen_below = expired_before(clock, policy)
        for start in [s for s in part.windows if s < windows_below]:
            for creator_id in part.windows.pop(start):
                delete_for_event(table, event, window_key(creator_id, start))
                part.drop_window(creator_id, start)
                touched[creator_id] = (event.message.partition, event.message.offset)
        for bucket in [b for b in part.seen if b + SEEN_BUCKET_MS <= seen_below]:
            for event_id in part.seen.pop(bucket):
                delete_for_event(table, event, seen_key(event_id))

    def serving_docs(touched: dict[str, tuple[int, int]]) -> list[tuple[str, int, dict[str, Any]]]:
        docs = []
        for creator_id, (partition, offset) in touched.items():
            part = index.for_partition(partition)
            windows = []
            for start in sorted(part.by_creator.get(creator_id, ())):
                row = table.get(window_key(creator_id, start))
                if row is not None:
                    windows.append({"start_ms": start, "end_ms": start + policy.size_ms, **row["counts"]})
            # Version = the source offset being processed: monotonic per creator, since all
            # of a creator's events are on one partition of `creator-events`.
            docs.append((windows_key(ctx.quality_store.prefix, creator_id), offset, {"windows": windows}))
        return docs

    async def count_creator_events(stream: Any) -> None:
        async for events in stream.take_events(ctx.settings.batch_max, within=within_s):
            started = time.perf_counter()
            touched: dict[str, tuple[int, int]] = {}
            for event in events:
                consumed.inc()
                await process(event, touched)
            await ctx.quality_store.write(serving_docs(touched))
            batch_seconds.observe(time.perf_counter() - started)

    return app.agent(ctx.topics.creator_events, name="count_creator_events")(count_creator_events)
