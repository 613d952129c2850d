"""Index of one counting partition's state: which windows and dedupe entries exist.

Key-value state (a changelog-backed store, or a dict in a backfill) has no range scans, so
closing and expiring by event time needs an index. It is rebuilt from the state's items (after
a recovery or a rebalance) and kept up to date on every write.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from likeflow.domain.quality.counting import Seen, WindowRow

SEEN_BUCKET_MS = 3_600_000


@dataclass(slots=True)
class PartitionIndex:
    """Keys of one partition: window rows by start and by creator, dedupe entries by source and hour."""

    windows: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    by_creator: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    seen: dict[str, dict[int, set[str]]] = field(default_factory=dict)

    def add_window(self, creator_id: str, start_ms: int) -> None:
        """Note a window row."""
        self.windows[start_ms].add(creator_id)
        self.by_creator[creator_id].add(start_ms)

    def drop_window(self, creator_id: str, start_ms: int) -> None:
        """Forget a window row."""
        self.windows.get(start_ms, set()).discard(creator_id)
        starts = self.by_creator.get(creator_id)
        if starts is not None:
            starts.discard(start_ms)
            if not starts:
                del self.by_creator[creator_id]

    def add_seen(self, source: str, event_id: str, ts: int) -> None:
        """Note a dedupe entry (bucketed by its source and hour of event time, for expiry)."""
        buckets = self.seen.get(source)
        if buckets is None:
            buckets = self.seen[source] = {}
        bucket = ts - ts % SEEN_BUCKET_MS
        ids = buckets.get(bucket)
        if ids is None:
            ids = buckets[bucket] = set()
        ids.add(event_id)

    @classmethod
    def rebuild(cls, items: Iterable[tuple[str, Any]]) -> PartitionIndex:
        """Index (key, value) items of one partition's state (values: the counting dataclasses)."""
        index = cls()
        for key, value in items:
            if isinstance(value, WindowRow):
                index.add_window(value.creator_id, value.start_ms)
            elif isinstance(value, Seen):
                index.add_seen(value.source, key[2:], value.ts)
        return index
