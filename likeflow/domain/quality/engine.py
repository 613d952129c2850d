"""Applies one count record to key-value state: the single implementation of the counter logic.

The live handler runs it over a `likeflow.engine.ChangelogStore`; `likeflow backfill` runs it
over a dict. Both get the same counts from the same records in the same order
(likeflow/domain/quality/counting.py explains the rules and why they are exact).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from likeflow.domain.quality.counting import (
    CLOCK_ORDER,
    ROW_ORDER,
    SEEN_ORDER,
    Outcome,
    PartitionClock,
    Seen,
    WindowPolicy,
    WindowRow,
    classify,
    clock_key,
    closing,
    expired_before,
    seen_key,
    window_key,
)
from likeflow.domain.quality.index import SEEN_BUCKET_MS, PartitionIndex
from likeflow.domain.quality.windows import window_start
from streams.events import CountBatch, CountRecord, CreatorEvent

StoredValue = WindowRow | Seen | PartitionClock


class Store(Protocol):
    """Key-value state of one counting partition (values are the counting dataclasses)."""

    def get(self, key: str) -> StoredValue | None: ...

    def put(self, key: str, value: StoredValue, order: int) -> None: ...

    def delete(self, key: str, order: int) -> None: ...


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    """A creator's window as sent to the judge: its counts at `revision` (1 on first closing)."""

    creator_id: str
    start_ms: int
    end_ms: int
    counts: dict[str, int]
    revision: int
    source_partition: int

    def to_dict(self) -> dict[str, object]:
        """The `creator-windows` record (docs/events.md)."""
        return {
            "creator_id": self.creator_id,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            **self.counts,
            "revision": self.revision,
            "source_partition": self.source_partition,
        }


@dataclass(slots=True)
class Effects:
    """What applying records changed, for the caller's sinks (accumulates over a batch)."""

    outcomes: list[tuple[CreatorEvent, Outcome]] = field(default_factory=list)
    late: list[tuple[CreatorEvent, str, str]] = field(default_factory=list)  # (event, why, source)
    future: list[tuple[CreatorEvent, str, str]] = field(default_factory=list)  # (event, why, source)
    closed: list[ClosedWindow] = field(default_factory=list)
    changed: dict[str, dict[int, WindowRow]] = field(default_factory=dict)  # creator -> start -> row
    removed: dict[str, set[int]] = field(default_factory=dict)  # creator -> window starts expired
    # State written before the time ceiling existed, found beyond it and repaired: partitions
    # (`repair_partition`) and count records whose clocks were brought down to it.
    repaired_partitions: int = 0
    repaired_records: int = 0
    dropped_rows: int = 0  # window rows that started beyond the ceiling, deleted


def load_clock(store: Store, partition: int) -> PartitionClock:
    """The partition's clock from `store` (a fresh one if none). A caller that applies records
    to it calls `repair_partition` first."""
    value = store.get(clock_key(partition))
    return value if isinstance(value, PartitionClock) else PartitionClock()


def repair_partition(
    store: Store,
    index: PartitionIndex,
    clock: PartitionClock,
    *,
    partition: int,
    ceiling: int,
    policy: WindowPolicy,
    effects: Effects,
) -> bool:
    """Bring a partition's state written before the time ceiling existed under `ceiling` (epoch
    ms: the worker's clock plus the allowed skew); True when something was repaired.

    An earlier version counted records stamped in year 9999 and let them move the clocks. Such
    state is repaired where it is loaded, so a worker that holds it mends it on start:

    - the clock (`PartitionClock.repair`): source clocks and `closed_until` brought back;
    - window rows that start beyond the ceiling are deleted (and their Redis fields, through
      `effects.removed`): they hold only events that would now be refused, and can never close
      nor expire (both follow the watermark, which stays under the ceiling);
    - dedupe entries of an hour that starts beyond the ceiling are deleted: they would never
      expire (their source's clock stays under it).

    Cheap when there is nothing to repair (a look at the clock and at the index's window starts
    and dedupe hours), so the handler calls it for every partition of every batch. Idempotent,
    and crash-safe: the deletions and the clock go through `store` like any other write, and a
    repair a crash lost is made again on the next load.
    """
    repaired = clock.repair(ceiling, policy)
    junk = [start for start in index.windows if start > ceiling]
    for start in junk:
        for creator_id in sorted(index.windows.pop(start)):
            store.delete(window_key(creator_id, start), ROW_ORDER)
            index.drop_window(creator_id, start)
            effects.removed.setdefault(creator_id, set()).add(start)
            effects.changed.get(creator_id, {}).pop(start, None)
            effects.dropped_rows += 1
    for buckets in index.seen.values():
        for bucket in [b for b in buckets if b > ceiling]:
            for event_id in buckets.pop(bucket):
                store.delete(seen_key(event_id), SEEN_ORDER)
            repaired = True
    repaired = repaired or bool(junk)
    if repaired:
        store.put(clock_key(partition), clock, CLOCK_ORDER)
        effects.repaired_partitions += 1
    return repaired


def apply_record(
    store: Store,
    index: PartitionIndex,
    clock: PartitionClock,
    *,
    partition: int,
    offset: int,
    record: CountRecord | CountBatch,
    policy: WindowPolicy,
    effects: Effects,
    ceiling: int,
) -> None:
    """Apply the count record read at `offset` of counting partition `partition`.

    Counts each of its events exactly once (or not at all when late, or stamped beyond
    `ceiling`), advances the sources' clocks, closes the windows the partition's watermark
    passed and expires old state. `clock` is the partition's clock, updated in place and written
    to `store` last. A `CountBatch` applies its sections in order, each as its source's next
    record; its events are stamped (offset, index) with the index counted across the sections,
    and windows close once, after the last section.

    `ceiling` (epoch ms) is the newest event time accepted: the caller's wall clock plus the
    allowed skew, fixed for a batch (`likeflow backfill`: for its run). The record's clocks are
    brought down to it, so no source clock passes it (a record written by an earlier version may
    carry a clock from year 9999, which would make every later record of its source late); an
    event beyond it is `Outcome.FUTURE`, in `effects.future`.
    """
    sections = record.sections if isinstance(record, CountBatch) else (record,)
    revised: set[tuple[str, int]] = set()
    base = 0
    for section in sections:
        _apply_section(store, index, clock, offset, base, section, policy, effects, ceiling, revised)
        base += len(section.events)
    starts = closing(clock, policy, min(index.windows, default=None))
    for start in starts:
        for creator_id in sorted(index.windows.get(start, ())):
            revised.add((creator_id, start))
    for creator_id, start in sorted(revised, key=lambda cs: (cs[1], cs[0])):
        _close(store, creator_id, start, partition, policy, effects)
    if starts:
        _expire(store, index, clock, policy, effects)
    for source in dict.fromkeys(section.source for section in sections):
        _expire_seen(store, index, clock, source, policy)
    clock.offset = max(clock.offset, offset)
    store.put(clock_key(partition), clock, CLOCK_ORDER)


def _apply_section(
    store: Store,
    index: PartitionIndex,
    clock: PartitionClock,
    offset: int,
    base: int,
    record: CountRecord,
    policy: WindowPolicy,
    effects: Effects,
    ceiling: int,
    revised: set[tuple[str, int]],
) -> None:
    """Count one source's events (stamped from index `base` on) and move its clock; windows
    counted into after they closed go to `revised`."""
    was_new = record.source not in clock.sources
    source = clock.source(record.source)
    old_clock, old_idle = source.clock, source.idle
    offsets = record.offsets
    if record.clock > ceiling or (record.clocks and max(record.clocks) > ceiling):
        effects.repaired_records += 1
    for i, event in enumerate(record.events):
        # max(source clock, reported), at most the ceiling (comparisons: the hot path).
        event_clock = record.clocks[i] if i < len(record.clocks) else event.ts
        if event_clock < source.clock:
            event_clock = source.clock
        if event_clock > ceiling:
            event_clock = ceiling
        start = window_start(event.ts, policy.size_ms)
        row_key = window_key(event.creator_id, start)
        row = store.get(row_key)
        row = row if isinstance(row, WindowRow) else None
        # Prompts and likes from a source that reports offsets are de-duplicated by offset (each
        # kind against its own high mark), with no entry.
        kind = event.kind
        by_offset = (kind == "prompt" or kind == "like") and i < len(offsets) and offsets[i] >= 0
        high = source.like_offset if kind == "like" else source.offset
        seen = None if by_offset else store.get(seen_key(event.event_id))
        seen = seen if isinstance(seen, Seen) else None
        stamp = base + i
        outcome = classify(
            clock,
            row,
            seen,
            offset=offset,
            index=stamp,
            ts=event.ts,
            source_clock=event_clock,
            policy=policy,
            ceiling=ceiling,
            source_offset=offsets[i] if by_offset else -1,
            source_high=high,
        )
        source.clock = event_clock
        if by_offset and offsets[i] > high:
            if kind == "like":
                source.like_offset = offsets[i]
            else:
                source.offset = offsets[i]
        effects.outcomes.append((event, outcome))
        if outcome is Outcome.REDELIVERED:
            if seen is None and not by_offset and offset > clock.offset:
                # Recognised by the row's stamp: the row reached the changelog with this event
                # counted, but a crash lost the dedupe entry written after it. Restore the entry,
                # or a later copy of the event would find none and be counted a second time.
                _remember(store, index, event, offset, stamp, record.source)
            if row is not None:
                # Serve the row again: what was derived from it before the crash may not have
                # been written (the writes are absolute and versioned, so this is idempotent).
                effects.changed.setdefault(event.creator_id, {})[start] = row
        elif outcome is Outcome.LATE:
            effects.late.append((event, _why_late(event, source.clock, clock, policy), record.source))
        elif outcome is Outcome.FUTURE:
            why = f"ts={event.ts} is beyond the newest event time accepted, {ceiling} (clock plus skew)"
            effects.future.append((event, why, record.source))
        elif outcome is Outcome.COUNTED:
            row = row or WindowRow(event.creator_id, start)
            row.counts.add_event(event.kind, event.amount_cents)
            row.last_offset, row.last_index = offset, stamp
            store.put(row_key, row, ROW_ORDER)
            if not by_offset:
                _remember(store, index, event, offset, stamp, record.source)
            index.add_window(event.creator_id, start)
            effects.changed.setdefault(event.creator_id, {})[start] = row
            if start < clock.closed_until:
                revised.add((event.creator_id, start))  # a closed window counted more: send it again
    source.clock = min(max(source.clock, record.clock), ceiling)
    source.idle = record.idle
    clock.moved(record.source, old_clock, old_idle, was_new, policy)


def _remember(
    store: Store, index: PartitionIndex, event: CreatorEvent, offset: int, i: int, source: str
) -> None:
    store.put(seen_key(event.event_id), Seen(offset, i, event.ts, source), SEEN_ORDER)
    index.add_seen(source, event.event_id, event.ts)


def _why_late(event: CreatorEvent, source_clock: int, clock: PartitionClock, policy: WindowPolicy) -> str:
    start = window_start(event.ts, policy.size_ms)
    if start + policy.size_ms <= clock.closed_until - policy.retention_ms:
        return f"ts={event.ts} is in a window expired before {clock.closed_until - policy.retention_ms}"
    return (
        f"ts={event.ts} is in a window its source closed (source clock {source_clock}, "
        f"grace {policy.grace_ms} ms)"
    )


def _close(
    store: Store, creator_id: str, start: int, partition: int, policy: WindowPolicy, effects: Effects
) -> None:
    row = store.get(window_key(creator_id, start))
    if not isinstance(row, WindowRow):
        return
    row.revision += 1
    store.put(window_key(creator_id, start), row, ROW_ORDER)
    effects.closed.append(
        ClosedWindow(creator_id, start, start + policy.size_ms, row.counts.to_dict(), row.revision, partition)
    )


def _expire(
    store: Store, index: PartitionIndex, clock: PartitionClock, policy: WindowPolicy, effects: Effects
) -> None:
    windows_below = expired_before(clock, policy)
    for start in [s for s in index.windows if s < windows_below]:
        for creator_id in index.windows.pop(start):
            store.delete(window_key(creator_id, start), ROW_ORDER)
            index.drop_window(creator_id, start)
            effects.removed.setdefault(creator_id, set()).add(start)
            effects.changed.get(creator_id, {}).pop(start, None)


def _expire_seen(
    store: Store, index: PartitionIndex, clock: PartitionClock, source: str, policy: WindowPolicy
) -> None:
    # Dedupe entries follow their own source's clock: a duplicate comes from the same source
    # (same key, same input partition), so it cannot arrive once that clock is a horizon past it.
    below = clock.source(source).clock - policy.dedupe_horizon_ms
    buckets = index.seen.get(source)
    if not buckets:
        return
    for bucket in [b for b in buckets if b + SEEN_BUCKET_MS <= below]:
        for event_id in buckets.pop(bucket):
            store.delete(seen_key(event_id), SEEN_ORDER)
