"""Retention of per-user state: users idle past the horizon (event time) are deleted with a tombstone."""

from __future__ import annotations

from collections.abc import Callable

from likeflow.domain.privacy import is_expired
from likeflow.domain.ranking import HOUR_MS
from likeflow.domain.user_state import UserState
from likeflow.engine import ChangelogStore


class RetentionSweeper:
    """Drops users idle longer than `retention_ms`, judged by each partition's event-time clock.

    The clock of a partition is the highest event ts this worker processed from it; a sweep of
    that partition runs when its clock has advanced `every_ms` since the last one (and once on
    the first event after start). Event time, not the wall clock: a replay of last month expires
    exactly what the live run expired. A partition is only swept right after this worker
    processed one of its records, so it owns that partition's changelog at that moment; the
    tombstones go out with the partition's next flush.

    The last activity of every user of a partition is indexed in memory (filled from the store
    on the partition's first sweep, then kept up to date by `touch`), so a sweep decodes no state.
    """

    def __init__(
        self,
        store: ChangelogStore[UserState],
        retention_ms: int,
        on_expired: Callable[[int], None],
        every_ms: int = HOUR_MS,
    ) -> None:
        self._store = store
        self._retention_ms = retention_ms
        self._on_expired = on_expired
        self._every_ms = every_ms
        self._clock: dict[int, int] = {}
        self._next_sweep: dict[int, int] = {}
        self._last_active: dict[int, dict[str, int]] = {}

    def observe(self, partition: int, ts: int) -> None:
        """Advance `partition`'s clock to epoch-ms `ts` if later."""
        if ts > self._clock.get(partition, 0):
            self._clock[partition] = ts

    def touch(self, partition: int, user: str, state: UserState) -> None:
        """Note `user`'s state as just written."""
        index = self._last_active.get(partition)
        if index is not None:
            index[user] = state.last_active_ts

    def sweep_due(self, partitions: set[int] | None = None) -> int:
        """Sweep every partition (of `partitions`, default all observed) whose clock passed its
        next sweep point; returns users dropped."""
        dropped = 0
        for partition, clock in self._clock.items():
            if partitions is not None and partition not in partitions:
                continue
            if clock >= self._next_sweep.get(partition, 0):
                dropped += self.sweep(partition, clock)
                self._next_sweep[partition] = clock + self._every_ms
        return dropped

    def sweep(self, partition: int, clock_ms: int) -> int:
        """Delete the users of `partition` idle since before `clock_ms - retention_ms`.

        Each deletion writes a tombstone to the changelog, so compaction removes the user's
        history from Kafka too and a restore after a crash does not bring them back.
        """
        index = self._last_active.get(partition)
        if index is None:
            index = self._last_active[partition] = {}
            for user in self._store.keys(partition):
                state = self._store.get(partition, user)
                if state is not None:
                    index[user] = state.last_active_ts
        expired = [u for u, ts in index.items() if is_expired(ts, clock_ms, self._retention_ms)]
        for user in expired:
            self._store.delete(partition, user)
            del index[user]
        if expired:
            self._on_expired(len(expired))
        return len(expired)

    def forget(self) -> None:
        """After a rebalance: partitions may have moved; clocks and indexes start afresh."""
        self._clock.clear()
        self._next_sweep.clear()
        self._last_active.clear()
