"""Agent `count_creator_events`: exact per-creator window counts, closing and expiry by event time."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import faust
import orjson

from agents.context import PipelineContext
from likeflow.domain.quality.counting import Outcome, window_key
from likeflow.domain.quality.engine import apply_event
from likeflow.domain.quality.index import PartitionIndex
from likeflow.sinks.redis_quality import WindowsUpdate
from streams.events import CreatorEvent, DeadLetterReason, Invalid
from streams.topics import CREATOR_EVENTS
from tables import delete_for_event, put_for_event


@dataclass(slots=True)
class EventTableStore:
    """The engine's Store over the Faust table, writing changelogs to the event's partition."""

    table: Any
    event: Any

    def get(self, key: str) -> Any:
        return self.table.get(key)

    def put(self, key: str, value: Any) -> None:
        put_for_event(self.table, self.event, key, value)

    def delete(self, key: str) -> None:
        delete_for_event(self.table, self.event, key)


def register(app: faust.App, ctx: PipelineContext) -> Any:
    """Register the agent on `app`; returns it (for tests)."""
    table = ctx.tables.creator_counts
    policy = ctx.windows
    metrics = ctx.metrics
    indexes: dict[int, PartitionIndex] = {}
    consumed = metrics.records_consumed.labels(ctx.settings.topic(CREATOR_EVENTS))
    within_s = ctx.settings.batch_within_ms / 1000
    batch_seconds = metrics.batch_duration.labels("count_creator_events")

    def forget_indexes(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        # Recovery after a rebalance may have added rows for newly assigned partitions.
        indexes.clear()

    app.on_partitions_assigned.connect(forget_indexes)  # type: ignore[arg-type]  # mode stub is stricter than its runtime

    def index_for(partition: int) -> PartitionIndex:
        if partition not in indexes:
            indexes[partition] = PartitionIndex.rebuild(list(table.data.items()), partition)
        return indexes[partition]

    async def process(event: Any, updates: dict[str, WindowsUpdate]) -> None:
        message = event.message
        creator_event = CreatorEvent.from_trusted(orjson.loads(message.value))
        effects = apply_event(
            EventTableStore(table, event),
            index_for(message.partition),
            partition=message.partition,
            offset=message.offset,
            event=creator_event,
            policy=policy,
        )
        metrics.creator_events.labels(creator_event.kind, effects.outcome.value).inc()
        if effects.outcome is Outcome.LATE:
            metrics.late_records.inc()
            error = f"ts={creator_event.ts} is in a window closed at {effects.clock.closed_until}"
            await ctx.dead_letters.send(event, Invalid(DeadLetterReason.LATE, error))
        watermark_ms = effects.clock.high_ts - policy.grace_ms
        metrics.watermark_delay.labels(str(message.partition)).set(
            max(0.0, time.time() - watermark_ms / 1000)
        )
        for closed in effects.closed:
            # The judge's input. After a crash a window may be sent twice with the same content;
            # the judge applies each (creator, window) once.
            await ctx.topics.creator_windows.send(
                key=closed["creator_id"].encode(), value=orjson.dumps(closed)
            )
            metrics.windows_closed.inc()
        for creator_id in effects.changed.keys() | effects.removed.keys():
            # Version = the source offset being processed: monotonic per creator, since all of a
            # creator's events are on one partition of `creator-events`.
            update = updates.setdefault(creator_id, WindowsUpdate(creator_id, message.offset))
            update.version = message.offset
            for start in effects.changed.get(creator_id, ()):
                row = table.get(window_key(creator_id, start))
                update.written[start] = row["counts"]
                update.deleted.discard(start)
            for start in effects.removed.get(creator_id, ()):
                update.written.pop(start, None)
                update.deleted.add(start)

    async def count_creator_events(stream: Any) -> None:
        async for events in stream.take_events(ctx.settings.batch_max, within=within_s):
            started = time.perf_counter()
            updates: dict[str, WindowsUpdate] = {}
            for event in events:
                consumed.inc()
                await process(event, updates)
            await ctx.quality_store.write_windows(list(updates.values()), policy.size_ms)
            batch_seconds.observe(time.perf_counter() - started)

    return app.agent(ctx.topics.creator_events, name="count_creator_events")(count_creator_events)
