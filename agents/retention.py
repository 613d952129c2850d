"""Retention of per-user state: each table entry records its partition; expired users get tombstones."""

from __future__ import annotations

from typing import Any

from likeflow.domain.privacy import is_expired
from likeflow.domain.ranking import HOUR_MS
from likeflow.domain.user_state import UserState

PARTITION_FIELD = "partition"


def state_record(state: UserState, partition: int) -> dict[str, Any]:
    """The table value of `state`: its dict plus the partition whose changelog holds it.

    Keys are pseudonyms, which cannot be hashed back to the `likes` partition of the raw user
    id; remembering the partition lets a sweep write each tombstone to the right changelog
    partition (the one the key's owner restores from).
    """
    record = state.to_dict()
    record[PARTITION_FIELD] = partition
    return record


class RetentionSweeper:
    """Drops users idle longer than `retention_ms`, judged by each partition's event-time clock.

    The clock of a partition is the highest event ts this worker processed from it; a sweep of
    that partition runs when its clock has advanced `every_ms` since the last one (and once on
    the first event after start). Event time, not the wall clock: a replay of last month expires
    exactly what the live run expired. A partition is only swept right after this worker
    processed one of its events, so it owns that partition's changelog at that moment.
    """

    def __init__(self, table: Any, retention_ms: int, on_expired: Any, every_ms: int = HOUR_MS) -> None:
        self._table = table
        self._retention_ms = retention_ms
        self._on_expired = on_expired
        self._every_ms = every_ms
        self._clock: dict[int, int] = {}
        self._next_sweep: dict[int, int] = {}

    def observe(self, partition: int, ts: int) -> None:
        """Advance `partition`'s clock to epoch-ms `ts` if later."""
        if ts > self._clock.get(partition, 0):
            self._clock[partition] = ts

    def sweep_due(self) -> int:
        """Sweep every partition whose clock passed its next sweep point; returns users dropped."""
        dropped = 0
        for partition, clock in self._clock.items():
            if clock >= self._next_sweep.get(partition, 0):
                dropped += self.sweep(partition, clock)
                self._next_sweep[partition] = clock + self._every_ms
        return dropped

    def sweep(self, partition: int, clock_ms: int) -> int:
        """Delete the users of `partition` idle since before `clock_ms - retention_ms`.

        Each deletion writes a tombstone to the changelog, so compaction removes the user's
        history from Kafka too and a restore after a crash does not bring them back.
        """
        data = self._table.data
        expired = [
            key
            for key, value in data.items()
            if value
            and value.get(PARTITION_FIELD) == partition
            and is_expired(UserState.last_active_of(value), clock_ms, self._retention_ms)
        ]
        for key in expired:
            data.pop(key, None)
            self._table.send_changelog(partition, key, None, value_serializer="raw")
        if expired:
            self._on_expired(len(expired))
        return len(expired)
