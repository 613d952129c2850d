"""Applies one creator event to key-value state: the single implementation of the counter logic.

The live agent runs it over its Faust table; `likeflow backfill` runs it over a dict. Both get
the same counts from the same events in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from likeflow.domain.quality.counting import (
    Outcome,
    PartitionClock,
    WindowPolicy,
    WindowRow,
    advance,
    classify,
    clock_key,
    expired_before,
    seen_key,
    window_key,
)
from likeflow.domain.quality.index import SEEN_BUCKET_MS, PartitionIndex
from likeflow.domain.quality.windows import window_start
from streams.events import CreatorEvent


class Store(Protocol):
    """Key-value state of one partition's counters."""

    def get(self, key: str) -> Any: ...

    def put(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...


@dataclass(slots=True)
class Effects:
    """What applying one event changed, for the caller's sinks."""

    outcome: Outcome
    clock: PartitionClock
    closed: list[dict[str, Any]] = field(default_factory=list)  # final window records, for the judge
    changed: dict[str, set[int]] = field(default_factory=dict)  # creator -> window starts written
    removed: dict[str, set[int]] = field(default_factory=dict)  # creator -> window starts expired


def apply_event(
    store: Store,
    index: PartitionIndex,
    *,
    partition: int,
    offset: int,
    event: CreatorEvent,
    policy: WindowPolicy,
) -> Effects:
    """Count `event` (read at `offset` of `partition`) exactly once, close and expire windows.

    Write order (row, dedupe entry, clock) is what makes redelivery after a crash safe; see
    likeflow/domain/quality/counting.py.
    """
    clock = PartitionClock.from_dict(store.get(clock_key(partition)))
    start = window_start(event.ts, policy.size_ms)
    row_key = window_key(event.creator_id, start)
    row_data = store.get(row_key)
    row = WindowRow.from_dict(row_data) if row_data else None
    seen = store.get(seen_key(event.event_id))
    outcome = classify(
        clock, row, seen["offset"] if seen else None, offset=offset, ts=event.ts, policy=policy
    )
    effects = Effects(outcome, clock)
    if outcome is Outcome.REDELIVERED and seen is None and offset > clock.offset:
        # Recognised by the row's offset stamp: the row reached the changelog with this event
        # counted, but a crash lost the dedupe entry written after it. Restore the entry, or a
        # later copy of the event (an upstream duplicate, or feedback forwarded again after the
        # crash) would find no entry and be counted a second time.
        store.put(seen_key(event.event_id), {"offset": offset, "ts": event.ts, "partition": partition})
        index.add_seen(event.event_id, event.ts)
    if outcome is Outcome.COUNTED:
        row = row or WindowRow(event.creator_id, start)
        row.counts.add_event(event.kind, event.amount_cents)
        row.last_offset = offset
        store.put(row_key, {**row.to_dict(), "partition": partition})
        store.put(seen_key(event.event_id), {"offset": offset, "ts": event.ts, "partition": partition})
        index.add_window(event.creator_id, start)
        index.add_seen(event.event_id, event.ts)
        effects.changed.setdefault(event.creator_id, set()).add(start)
    closing = advance(clock, offset=offset, ts=event.ts, policy=policy)
    store.put(clock_key(partition), clock.to_dict())
    if closing:
        effects.closed = _closed_windows(store, index, closing, partition, policy)
        _expire(store, index, clock, policy, effects)
    return effects


def _closed_windows(
    store: Store, index: PartitionIndex, starts: list[int], partition: int, policy: WindowPolicy
) -> list[dict[str, Any]]:
    closed = []
    for start in starts:
        for creator_id in sorted(index.windows.get(start, ())):
            row = store.get(window_key(creator_id, start))
            if row is not None:
                closed.append(
                    {
                        "creator_id": creator_id,
                        "start_ms": start,
                        "end_ms": start + policy.size_ms,
                        **row["counts"],
                        "source_partition": partition,
                    }
                )
    return closed


def _expire(
    store: Store, index: PartitionIndex, clock: PartitionClock, policy: WindowPolicy, effects: Effects
) -> None:
    windows_below, seen_below = expired_before(clock, policy)
    for start in [s for s in index.windows if s < windows_below]:
        for creator_id in index.windows.pop(start):
            store.delete(window_key(creator_id, start))
            index.drop_window(creator_id, start)
            effects.removed.setdefault(creator_id, set()).add(start)
    for bucket in [b for b in index.seen if b + SEEN_BUCKET_MS <= seen_below]:
        for event_id in index.seen.pop(bucket):
            store.delete(seen_key(event_id))
