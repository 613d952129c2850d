"""In-memory index of the creator_counts table by partition: which windows and dedupe entries exist.

Faust tables have no range scans, so closing and expiring windows by event time needs an index.
It is rebuilt from the table (after recovery) the first time a partition is seen after a
rebalance, and kept up to date on every write.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

SEEN_BUCKET_MS = 3_600_000


@dataclass(slots=True)
class PartitionIndex:
    """Keys of one partition: window rows by start and by creator, dedupe entries by hour."""

    windows: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    by_creator: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    seen: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))

    def add_window(self, creator_id: str, start_ms: int) -> None:
        self.windows[start_ms].add(creator_id)
        self.by_creator[creator_id].add(start_ms)

    def drop_window(self, creator_id: str, start_ms: int) -> None:
        self.windows.get(start_ms, set()).discard(creator_id)
        starts = self.by_creator.get(creator_id)
        if starts is not None:
            starts.discard(start_ms)
            if not starts:
                del self.by_creator[creator_id]

    def add_seen(self, event_id: str, ts: int) -> None:
        self.seen[ts - ts % SEEN_BUCKET_MS].add(event_id)


class QualityIndex:
    """Partition -> PartitionIndex, rebuilt lazily from the table after each rebalance."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._partitions: dict[int, PartitionIndex] = {}

    def invalidate(self) -> None:
        """Forget everything (called on rebalance: recovery may have changed the table)."""
        self._partitions.clear()

    def for_partition(self, partition: int) -> PartitionIndex:
        """The index of `partition`, scanning the table once if needed."""
        index = self._partitions.get(partition)
        if index is None:
            index = PartitionIndex()
            for key, value in list(self._table.data.items()):
                if not isinstance(value, dict) or value.get("partition") != partition:
                    continue
                if key.startswith("w|"):
                    index.add_window(value["creator_id"], value["start_ms"])
                elif key.startswith("s|"):
                    index.add_seen(key[2:], value["ts"])
            self._partitions[partition] = index
        return index
