"""What an upstream handler reports to the counting partitions: its events and its event-time clock.

Each input partition of the counters (a `likes` partition, whose prompts count, or a
`prompt-feedback` partition) is a source with its own clock: the highest `ts` of every record it
has processed. After each batch a source sends one `CountRecord` to every counting partition
that has events from it, or which it last told it was idle, or to which its clock has moved in
a way that matters since it last reported: past a window boundary plus the grace (a window may
close there), or at all after `refresh_s` seconds of wall clock (the partition's watermark and
its gauges stay current). So every counting partition hears each source's progress, including
a partition that none of its records hash to (the rule that keeps one source from holding
windows open everywhere: docs/quality.md), and windows close in the same batch as if every clock
movement were sent: only a boundary crossing can close one, and it is always sent (the wall
clock decides only when a clock inside one window is refreshed). Clock-only records no longer
grow with batches x partitions squared: with P partitions a source sends at most P of them per
window of event time and per `refresh_s`, whatever its batch rate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from likeflow.domain.quality.counting import WindowPolicy
from streams.events import CountRecord, CreatorEvent, source_name


@dataclass(slots=True)
class _Reported:
    clock: int = -1
    idle: bool = False
    at_s: float = 0.0  # when it was reported (the caller's monotonic clock, seconds)


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
    _events: dict[tuple[int, int], tuple[list[CreatorEvent], list[int], list[int]]] = field(
        default_factory=dict
    )
    _reported: dict[tuple[int, int], _Reported] = field(default_factory=dict)

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
        events = self._events.get((source, k))
        if events is None:
            events = self._events[(source, k)] = ([], [], [])
        events[0].append(event)
        events[1].append(self.clocks.get(source, event.ts))
        events[2].append(offset)

    def records(self, sources: set[int], now_s: float = 0.0) -> list[tuple[int, CountRecord]]:
        """(counting partition, record) of this batch for the source partitions it read; `now_s`
        is the caller's monotonic clock (seconds), for the refresh of clocks (module doc)."""
        out: list[tuple[int, CountRecord]] = []
        for source in sorted(sources):
            clock = self.clocks.get(source, 0)
            name = source_name(self.topic, source)
            for k in range(self.counting_partitions):
                events, clocks, offsets = self._events.pop((source, k), ([], [], []))
                reported = self._reported.get((source, k))
                if reported is None:
                    reported = self._reported[(source, k)] = _Reported()
                if events or reported.idle or self._matters(reported, clock, now_s):
                    out.append((k, CountRecord(name, clock, events, clocks, False, offsets)))
                    reported.clock, reported.idle, reported.at_s = clock, False, now_s
        return out

    def _matters(self, reported: _Reported, clock: int, now_s: float) -> bool:
        """Whether a counting partition that was last told `reported` by a source must hear its
        `clock` now: never told, a window boundary crossed (shifted by the grace: the watermark
        is the clock minus the grace), or the refresh interval passed."""
        if clock <= reported.clock:
            return False
        if reported.clock < 0 or now_s - reported.at_s >= self.refresh_s:
            return True
        policy = self.policy
        shifted = policy.grace_ms
        return (clock - shifted) // policy.size_ms != (reported.clock - shifted) // policy.size_ms

    def idle_records(self, source: int) -> list[tuple[int, CountRecord]]:
        """Tell every counting partition that `source` is idle (caught up, nothing new for a while)."""
        clock = self.clocks.get(source, 0)
        name = source_name(self.topic, source)
        out = []
        for k in range(self.counting_partitions):
            reported = self._reported.get((source, k))
            if reported is None:
                reported = self._reported[(source, k)] = _Reported()
            if not reported.idle:
                out.append((k, CountRecord(name, clock, [], [], idle=True)))
                reported.clock, reported.idle = clock, True
        return out

    def forget(self) -> None:
        """After a rebalance: the sources may have moved; the next batch reports afresh."""
        self.clocks.clear()
        self._events.clear()
        self._reported.clear()
