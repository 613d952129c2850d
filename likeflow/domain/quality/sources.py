"""What an upstream handler reports to the counting partitions: its events and its event-time clock.

Each input partition of the counters (a `likes` partition, whose prompts count, or a
`prompt-feedback` partition) is a source with its own clock: the highest `ts` of every record it
has processed. After each batch a source sends one `CountRecord` to every counting partition
that has events from it, or to which its clock has moved since it last reported, or which it
last told it was idle. So every counting partition hears each source's progress, including a
partition that none of its records hash to (the rule that keeps one source from holding windows
open everywhere: docs/quality.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from streams.events import CountRecord, CreatorEvent, source_name


@dataclass(slots=True)
class _Reported:
    clock: int = -1
    idle: bool = False


@dataclass
class SourceReports:
    """Count records of the sources (partitions of `topic`) one worker owns, batch by batch."""

    topic: str
    counting_partitions: int
    partition_of: Callable[[str], int]  # creator_id -> counting partition
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

    def records(self, sources: set[int]) -> list[tuple[int, CountRecord]]:
        """(counting partition, record) of this batch for the source partitions it read."""
        out: list[tuple[int, CountRecord]] = []
        for source in sorted(sources):
            clock = self.clocks.get(source, 0)
            name = source_name(self.topic, source)
            for k in range(self.counting_partitions):
                events, clocks, offsets = self._events.pop((source, k), ([], [], []))
                reported = self._reported.get((source, k))
                if reported is None:
                    reported = self._reported[(source, k)] = _Reported()
                if events or clock > reported.clock or reported.idle:
                    out.append((k, CountRecord(name, clock, events, clocks, False, offsets)))
                    reported.clock, reported.idle = clock, False
        return out

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
