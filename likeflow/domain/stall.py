"""Stall detection: input partitions with consumer lag whose committed offset stopped moving.

A worker makes progress on a partition when the group's committed offset on it advances: Faust
commits an offset only after every record before it has been processed (acknowledged), so an
offset that stays put while records wait behind it means nothing on that partition is being
finished, whatever else the worker does. That covers a consumer that stopped fetching, an agent
that hangs, and a record lost between fetch and agent (Faust then never commits past it).

Pure: fed with samples of (committed, end) offsets and a clock; never reads Kafka itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

PartitionKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Offsets:
    """One partition as the group sees it: committed offset and log end offset."""

    committed: int
    end: int

    @property
    def lag(self) -> int:
        return max(0, self.end - self.committed)


@dataclass(frozen=True, slots=True)
class Stuck:
    """A partition with lag whose committed offset has not moved for `seconds`."""

    topic: str
    partition: int
    committed: int
    lag: int
    seconds: float


class StallDetector:
    """Tracks, per partition, when its committed offset last moved or its lag was zero.

    `excused` samples (a rebalance or table recovery, the join's replica catching up, a dependency
    being retried, no fresh offsets) restart every partition's clock: waiting there is expected,
    and a restart would not help.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._since: dict[PartitionKey, float] = {}
        self._committed: dict[PartitionKey, int] = {}

    def observe(self, now_s: float, offsets: Mapping[PartitionKey, Offsets], excused: bool) -> float:
        """Take one sample; returns the seconds since the least recent progress (0 if none behind)."""
        for key in set(self._since) - set(offsets):
            # Revoked partitions are someone else's now.
            del self._since[key]
            self._committed.pop(key, None)
        for key, o in offsets.items():
            moved = self._committed.get(key) != o.committed
            if excused or moved or o.lag == 0 or key not in self._since:
                self._since[key] = now_s
            self._committed[key] = o.committed
        return self.seconds_since_progress(now_s, offsets)

    def seconds_since_progress(self, now_s: float, offsets: Mapping[PartitionKey, Offsets]) -> float:
        behind = [now_s - self._since[k] for k, o in offsets.items() if o.lag > 0 and k in self._since]
        return max(behind, default=0.0)

    def stuck(self, now_s: float, offsets: Mapping[PartitionKey, Offsets]) -> list[Stuck]:
        """Partitions behind with no progress for at least the timeout, most stuck first."""
        out = [
            Stuck(topic, partition, o.committed, o.lag, now_s - self._since[(topic, partition)])
            for (topic, partition), o in offsets.items()
            if o.lag > 0
            and (topic, partition) in self._since
            and now_s - self._since[(topic, partition)] >= self.timeout_s
        ]
        return sorted(out, key=lambda s: (-s.seconds, s.topic, s.partition))
