"""Exact, idempotent counting of creator events in event-time windows, with a clock per source.

Each counting partition (a partition of `creator-events`) receives count records from several
sources: every `likes` partition (the job's own prompts) and every `prompt-feedback` partition.
Each source has its own event-time clock, so an input that lags behind the others (feedback
hours behind the likes, a replay of likes before feedback) decides nothing for them:

- a record is **late** only against its own source: when its window ended at or before the
  source's watermark (the source's clock minus the grace);
- a window **closes** (its counts go to the judge) when every source that is not idle has
  passed it: the partition's watermark is the minimum over those sources;
- an **idle** source (caught up and quiet, `CountRecord.idle`) is left out of that minimum until
  its next record; when every source is idle, the watermark is the highest source clock (all
  have caught up, so nothing is waited for). A record from an idle source that is not late
  against its own clock still counts, even into a window that has closed meanwhile; the window
  is then sent to the judge again with a higher revision. Counts therefore depend only on each
  source's own order, never on how the sources interleave or on idleness: a replay gives the
  same windows.

Every state write of one counting partition goes to the same changelog partition, in order, and
each flush writes window rows, then dedupe entries, then the partition clock. After a crash the
restored state is the state after some prefix of those writes; each row and dedupe entry is
stamped with the (offset, index) of the event that last wrote it, and the clock with the offset
of the last record fully applied, so a redelivered event is recognised whichever of its writes
survived, and nothing is counted twice or lost.

No clock moves past the **time ceiling** (epoch ms: the worker's clock plus
LIKEFLOW_MAX_CLOCK_SKEW_S, fixed once per batch by the caller). An event stamped beyond it is
not counted (`Outcome.FUTURE`, dead-lettered as `future_ts`); a record's clocks beyond it are
brought down to it; a partition clock stored by an earlier version that let them through is
repaired when it is loaded (`PartitionClock.repair`). The ceiling is the one input besides
idleness that comes from the wall clock: it only decides for records and state stamped in the
future, which the handlers upstream already refuse.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from likeflow.domain.quality.windows import Counts, window_start

# Write order within one flush (likeflow.engine.ChangelogStore): rows, dedupe entries, clock.
ROW_ORDER, SEEN_ORDER, CLOCK_ORDER = 0, 1, 2


@dataclass(frozen=True, slots=True)
class WindowPolicy:
    """Window size, lateness grace, retention and the dedupe horizon, all in ms of event time;
    `sources` are the inputs every counting partition waits for before it closes a window."""

    size_ms: int = 3_600_000
    grace_ms: int = 3_600_000
    retention_ms: int = 7 * 24 * 3_600_000
    dedupe_horizon_ms: int = 24 * 3_600_000
    sources: tuple[str, ...] = ()


@dataclass(slots=True)
class SourceClock:
    """What one source has reported to this partition: its clock (epoch ms), whether it is idle,
    and the highest source offset of a prompt event (`offset`) and of a like event
    (`like_offset`) applied: prompts and likes are de-duplicated by them, each kind apart (a
    like and its prompt come from the same record)."""

    clock: int = 0
    idle: bool = False
    offset: int = -1
    like_offset: int = -1


@dataclass(slots=True)
class _Summary:
    """The watermark's inputs over a policy's expected sources (see `PartitionClock.watermark`).

    `heap` holds (clock, name) of the expected sources that are not idle, pushed at each
    advance; an entry is stale once its source moved on or went idle, and is dropped when it
    reaches the top. So the lowest clock costs O(log n) per advance, not a walk over the 2P
    sources of a partition.
    """

    expected: tuple[str, ...]
    expected_set: frozenset[str]
    missing: int  # expected sources not heard from yet
    heap: list[tuple[int, str]]
    highest: int | None  # the highest clock (> 0) of the expected sources

    def lowest(self, sources: dict[str, SourceClock]) -> int | None:
        """The lowest clock of the expected sources that are not idle (None: all idle)."""
        heap = self.heap
        while heap:
            clock, name = heap[0]
            source = sources.get(name)
            if source is not None and not source.idle and source.clock == clock:
                return clock
            heapq.heappop(heap)
        return None


@dataclass(slots=True)
class PartitionClock:
    """Event-time progress of one counting partition.

    `offset` is the last `creator-events` offset fully applied; `sources` every source's clock;
    windows ending at or before `closed_until` have been closed (sent to the judge).
    """

    offset: int = -1
    sources: dict[str, SourceClock] = field(default_factory=dict)
    closed_until: int = 0
    # Derived, never stored: kept current by `moved`, so a record does not walk every source
    # (with P partitions there are 2P sources); None until first needed, or when unsure.
    _summary: _Summary | None = field(default=None, compare=False, repr=False)

    def source(self, name: str) -> SourceClock:
        """The clock of source `name` (a fresh one for a source not heard from yet)."""
        clock = self.sources.get(name)
        if clock is None:
            clock = self.sources[name] = SourceClock()
        return clock

    def watermark(self, policy: WindowPolicy) -> int | None:
        """The partition's watermark (epoch ms): the lowest clock of the expected sources that are
        not idle, minus the grace. When every source is idle, the highest clock minus the grace:
        all of them have caught up, and a record one of them sends later still counts (the window
        is revised). None while no source has a clock."""
        summary = self._summary
        if summary is None or summary.expected is not policy.sources:
            summary = self._summarise(policy)
        if summary.missing:
            return -policy.grace_ms  # a source not heard from yet holds every window open
        lowest = summary.lowest(self.sources)
        if lowest is None:
            lowest = summary.highest
        return None if lowest is None else lowest - policy.grace_ms

    def _summarise(self, policy: WindowPolicy) -> _Summary:
        expected = policy.sources or tuple(self.sources)
        missing = 0
        heap: list[tuple[int, str]] = []
        highest: int | None = None
        for name in expected:
            clock = self.sources.get(name)
            if clock is None:
                missing += 1
                continue
            if not clock.idle:
                heap.append((clock.clock, name))
            if clock.clock > 0 and (highest is None or clock.clock > highest):
                highest = clock.clock
        heapq.heapify(heap)
        return _Summary(policy.sources, frozenset(expected), missing, heap, highest)

    def moved(self, name: str, old_clock: int, old_idle: bool, was_new: bool, policy: WindowPolicy) -> None:
        """Source `name` changed from (`old_clock`, `old_idle`) to its current clock and idleness
        (`was_new`: it was not heard from before): update the watermark's inputs in O(log n),
        or recompute them when a clock went down (a repair).

        Only a clock whose every change goes through here keeps the inputs (`apply_record`
        does); `watermark` walks the sources of any other clock, so a direct change of a source
        (a test, a repair) is never hidden by them.
        """
        summary = self._summary
        if summary is None or summary.expected is not policy.sources:
            if policy.sources:
                self._summary = self._summarise(policy)
            return
        if name not in summary.expected_set:
            return
        source = self.sources[name]
        if not was_new and source.clock < old_clock:
            self._summary = self._summarise(policy)  # repaired down: rare
            return
        if was_new:
            summary.missing -= 1
        if source.clock > 0 and (summary.highest is None or source.clock > summary.highest):
            summary.highest = source.clock
        if not source.idle and (was_new or old_idle or source.clock != old_clock):
            heap = summary.heap
            heapq.heappush(heap, (source.clock, name))
            if len(heap) > 4 * len(summary.expected) + 64:
                self._summary = self._summarise(policy)  # drop the stale entries

    def repair(self, ceiling: int, policy: WindowPolicy) -> bool:
        """Bring a clock stored before the time ceiling existed under `ceiling` (epoch ms); True
        when something changed (an earlier version let a record stamped in year 9999 move it).

        Every source clock beyond the ceiling is brought down to it. A `closed_until` beyond it
        (the partition's watermark followed such a source) is set back to what the repaired
        clocks give: windows up to the real watermark close again, in order, with the next
        record (a window already sent is sent again with a higher revision, which the judge
        applies as such); a later one would call windows closed that no source has passed.
        Idempotent: a repaired clock is left alone by any later, higher ceiling.
        """
        changed = False
        for source in self.sources.values():
            if source.clock > ceiling:
                source.clock, changed = ceiling, True
        if changed:
            self._summary = None  # clocks changed outside `moved`
        if self.closed_until > ceiling:
            watermark = self.watermark(policy)
            self.closed_until = 0 if watermark is None else closed_until(watermark, policy.size_ms)
            changed = True
        return changed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the table."""
        return {
            "offset": self.offset,
            "sources": {n: [s.clock, s.idle, s.offset, s.like_offset] for n, s in self.sources.items()},
            "closed_until": self.closed_until,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PartitionClock:
        """Rebuild; None gives a fresh clock."""
        if not data:
            return cls()
        sources = {
            n: SourceClock(
                int(v[0]), bool(v[1]), int(v[2]) if len(v) > 2 else -1, int(v[3]) if len(v) > 3 else -1
            )
            for n, v in data.get("sources", {}).items()
        }
        return cls(int(data["offset"]), sources, int(data["closed_until"]))


@dataclass(slots=True)
class WindowRow:
    """One creator's counts in one window, stamped with the event that last counted into it.

    `revision` is how many times the window has been sent to the judge (0: not yet closed).
    """

    creator_id: str
    start_ms: int
    counts: Counts = field(default_factory=Counts)
    last_offset: int = -1
    last_index: int = -1
    revision: int = 0

    def stamped_at_or_after(self, offset: int, index: int) -> bool:
        """Whether the event at (`offset`, `index`) already counted into this row."""
        return (self.last_offset, self.last_index) >= (offset, index)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the table."""
        return {
            "creator_id": self.creator_id,
            "start_ms": self.start_ms,
            "counts": self.counts.to_dict(),
            "last_offset": self.last_offset,
            "last_index": self.last_index,
            "revision": self.revision,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WindowRow:
        """Rebuild from the table."""
        return cls(
            data["creator_id"],
            data["start_ms"],
            Counts.from_dict(data["counts"]),
            data["last_offset"],
            data.get("last_index", -1),
            data.get("revision", 0),
        )


@dataclass(slots=True)
class Seen:
    """The dedupe entry of an event id: where it was counted, its ts and its source."""

    offset: int
    index: int
    ts: int
    source: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the table."""
        return {"offset": self.offset, "index": self.index, "ts": self.ts, "source": self.source}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Seen:
        """Rebuild from the table."""
        return cls(data["offset"], data.get("index", 0), data["ts"], data.get("source", ""))


class Outcome(StrEnum):
    """What happened to one creator event."""

    COUNTED = "counted"
    REDELIVERED = "redelivered"  # this very event was applied before a crash
    DUPLICATE = "duplicate"  # another event with the same event_id was counted
    LATE = "late"  # its window had closed for its source (or expired)
    FUTURE = "future_ts"  # stamped beyond the time ceiling (the worker's clock plus the skew)


def window_key(creator_id: str, start_ms: int) -> str:
    """Table key of a window row."""
    return f"w|{creator_id}|{start_ms}"


def seen_key(event_id: str) -> str:
    """Table key of a dedupe entry."""
    return f"s|{event_id}"


def clock_key(partition: int) -> str:
    """Table key of a partition clock."""
    return f"p|{partition}"


def classify(
    clock: PartitionClock,
    row: WindowRow | None,
    seen: Seen | None,
    *,
    offset: int,
    index: int,
    ts: int,
    source_clock: int,
    policy: WindowPolicy,
    ceiling: int,
    source_offset: int = -1,
    source_high: int = -1,
) -> Outcome:
    """Decide what the event at (`offset`, `index`) with event time `ts` does, before any write.

    `row` is the window row it would count into, `seen` its event_id's dedupe entry (if seen
    within the horizon), `source_clock` its source's clock at this event (at most `ceiling`,
    the newest event time accepted, epoch ms; a later `ts` is never counted). A prompt or like
    event is de-duplicated by `source_offset`, the like it came from, against `source_high`, the
    highest one of its kind applied from its source: a source reports its likes in order, so an
    event at or below it was counted (or found late) before, whether re-sent after a restart or
    for a duplicate like. Other events are de-duplicated by their event_id (`seen`).
    """
    if offset <= clock.offset or (row is not None and row.stamped_at_or_after(offset, index)):
        return Outcome.REDELIVERED
    if ts > ceiling:
        return Outcome.FUTURE
    if source_offset >= 0:
        if source_offset <= source_high:
            return Outcome.DUPLICATE
    elif seen is not None:
        return Outcome.REDELIVERED if (seen.offset, seen.index) == (offset, index) else Outcome.DUPLICATE
    end = window_start(ts, policy.size_ms) + policy.size_ms
    if end <= closed_until(source_clock - policy.grace_ms, policy.size_ms):
        return Outcome.LATE
    if end <= clock.closed_until - policy.retention_ms:
        return Outcome.LATE  # the window is gone (its source was idle longer than the retention)
    return Outcome.COUNTED


def closed_until(watermark: int, size_ms: int) -> int:
    """End of the last window a watermark (epoch ms) has passed: windows ending at or before it
    are closed."""
    return window_start(watermark, size_ms) if watermark > 0 else 0


def closing(clock: PartitionClock, policy: WindowPolicy, earliest: int | None = None) -> list[int]:
    """Move `closed_until` to the partition's watermark; the starts of the windows that close now,
    oldest first (at most the retention's worth). `earliest` is the start of the oldest window
    held: the first closing starts there."""
    watermark = clock.watermark(policy)
    if watermark is None:
        return []
    new_closed = closed_until(watermark, policy.size_ms)
    if new_closed <= clock.closed_until:
        return []
    if clock.closed_until:
        first = clock.closed_until
    else:
        first = (
            min(earliest, new_closed - policy.size_ms)
            if earliest is not None
            else new_closed - policy.size_ms
        )
    starts = list(range(max(first, new_closed - policy.retention_ms), new_closed, policy.size_ms))
    clock.closed_until = new_closed
    return starts


def expired_before(clock: PartitionClock, policy: WindowPolicy) -> int:
    """Window rows that start before this (epoch ms) are expired."""
    return clock.closed_until - policy.retention_ms
