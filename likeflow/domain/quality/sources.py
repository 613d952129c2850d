"""What an upstream handler reports to the counting partitions: its events and its event-time clock.

Each input partition of the counters (a `likes` partition, whose prompts count, or a
`prompt-feedback` partition) is a source with its own clock: the highest `ts` of every record it
has processed. After each batch a source reports a `CountRecord` to every counting partition
that has events from it; and to every counting partition when it was last reported idle, or
when its clock has moved in a way that matters since it last told them all: past a window
boundary plus the grace (a window may close there), or at all after `refresh_s` seconds of wall
clock (the partition's watermark and its gauges stay current). So every counting partition
hears each source's progress, including a partition that none of its records hash to (the rule
that keeps one source from holding windows open everywhere: docs/quality.md), and windows close
in the same batch as if every clock movement were sent: only a boundary crossing can close one,
and it is always sent (the wall clock decides only when a clock inside one window is refreshed).

The reports of one batch go out as one `CountBatch` per counting partition, carrying the
sections of every source of the batch: with P partitions a handler writes at most P records per
batch, not one per source and counting partition, and a source sends clock-only sections to
the P counting partitions once per window of event time and per `refresh_s`, whatever its batch
rate. The per-batch work is proportional to the events and the sources, not to sources x P,
except on the (rare) batches where a clock must reach every counting partition.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from likeflow.domain.quality.counting import WindowPolicy
from streams.events import CountBatch, CountRecord, CreatorEvent, source_name


@dataclass(slots=True)
class _Reported:
    """What a source last told every counting partition: its clock, whether idle, and when."""

    clock: int = -1
    idle: bool = False
    at_s: float = 0.0  # when it was reported (the caller's monotonic clock, seconds)


# A source's events of one batch for one counting partition: the events, the source's clock at
# each, and the offset of the record each came from.
_Events = tuple[list[CreatorEvent], list[int], list[int]]


@dataclass
class SourceReports:
    """Count records of the sources (partitions of `topic`) one worker owns, batch by batch."""

    topic: str
    counting_partitions: int
    partition_of: Callable[[str], int]  # creator_id -> counting partition
    # Window size and grace: when a clock-only record is due (module doc).
    policy: WindowPolicy = field(default_factory=WindowPolicy)
    # Wall-clock seconds after which a clock that moved inside its window is sent anyway.
    refresh_s: float = 60.0
    clocks: dict[int, int] = field(default_factory=dict)  # source partition -> its clock (epoch ms)
    _events: dict[int, dict[int, _Events]] = field(default_factory=dict)  # source -> k -> events
    _reported: dict[int, _Reported] = field(default_factory=dict)  # source -> told to every k

    def observe(self, source: int, ts: int) -> int:
        """Advance source partition `source`'s clock to `ts` if later; returns the clock."""
        clock = self.clocks.get(source, 0)
        if ts > clock:
            self.clocks[source] = clock = ts
        return clock

    def add(self, source: int, event: CreatorEvent, offset: int) -> None:
        """An event of `source` from the record at `offset` of the source partition, counted in
        the window of its own ts (after `observe`)."""
        k = self.partition_of(event.creator_id)
        by_partition = self._events.get(source)
        if by_partition is None:
            by_partition = self._events[source] = {}
        events = by_partition.get(k)
        if events is None:
            events = by_partition[k] = ([], [], [])
        events[0].append(event)
        events[1].append(self.clocks.get(source, event.ts))
        events[2].append(offset)

    def records(self, sources: set[int], now_s: float = 0.0) -> list[tuple[int, CountBatch]]:
        """(counting partition, record) of this batch for the source partitions it read, one
        record per counting partition; `now_s` is the caller's monotonic clock (seconds), for the
        refresh of clocks (module doc)."""
        sections: dict[int, list[CountRecord]] = {}
        for source in sorted(sources):
            clock = self.clocks.get(source, 0)
            name = source_name(self.topic, source)
            by_partition = self._events.pop(source, {})
            reported = self._reported.get(source)
            if reported is None:
                reported = self._reported[source] = _Reported()
            if reported.idle or self._matters(reported, clock, now_s):
                # Every counting partition hears this clock (with the events that go there).
                for k in range(self.counting_partitions):
                    events, clocks, offsets = by_partition.get(k) or ([], [], [])
                    section = CountRecord(name, clock, events, clocks, False, offsets)
                    sections.setdefault(k, []).append(section)
                reported.clock, reported.idle, reported.at_s = clock, False, now_s
                continue
            for k, (events, clocks, offsets) in by_partition.items():
                section = CountRecord(name, clock, events, clocks, False, offsets)
                sections.setdefault(k, []).append(section)
        return [(k, CountBatch(sections[k])) for k in sorted(sections)]

    def _matters(self, reported: _Reported, clock: int, now_s: float) -> bool:
        """Whether the counting partitions, last told `reported` all together by a source, must
        all hear its `clock` now: never told, a window boundary crossed (shifted by the grace:
        the watermark is the clock minus the grace), or the refresh interval passed. (A
        partition told a later clock with events since is in the same window as `reported`: a
        boundary crossing is told to all in the batch where it happens.)"""
        if clock <= reported.clock:
            return False
        if reported.clock < 0 or now_s - reported.at_s >= self.refresh_s:
            return True
        policy = self.policy
        shifted = policy.grace_ms
        return (clock - shifted) // policy.size_ms != (reported.clock - shifted) // policy.size_ms

    def idle_records(self, source: int) -> list[tuple[int, CountBatch]]:
        """Tell every counting partition that `source` is idle (caught up, nothing new for a
        while); nothing when it was told so already."""
        reported = self._reported.get(source)
        if reported is None:
            reported = self._reported[source] = _Reported()
        if reported.idle:
            return []
        clock = self.clocks.get(source, 0)
        name = source_name(self.topic, source)
        reported.clock, reported.idle = clock, True
        return [
            (k, CountBatch([CountRecord(name, clock, [], [], idle=True)]))
            for k in range(self.counting_partitions)
        ]

    def forget(self) -> None:
        """After a rebalance: the sources may have moved; the next batch reports afresh."""
        self.clocks.clear()
        self._events.clear()
        self._reported.clear()
