"""Exact, idempotent counting of creator events per source partition, in event time.

Every table write of one source partition goes to the same changelog partition, in order, and
Kafka keeps that order: after a crash the restored state is the state after some prefix of the
writes. Each event writes its window row (stamped with the event's offset), then its dedupe
entry, then the partition clock (stamped with the offset) -- so a redelivered event is
recognised whichever of its writes survived, and nothing is counted twice or lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from likeflow.domain.quality.windows import Counts, window_start


@dataclass(frozen=True, slots=True)
class WindowPolicy:
    """Window size, lateness grace, retention and the dedupe horizon, all in ms of event time."""

    size_ms: int = 3_600_000
    grace_ms: int = 3_600_000
    retention_ms: int = 7 * 24 * 3_600_000
    dedupe_horizon_ms: int = 24 * 3_600_000


@dataclass(slots=True)
class PartitionClock:
    """Event-time progress of one source partition.

    `offset` is the last source offset fully processed; `high_ts` the highest event ts seen;
    windows ending at or before `closed_until` are closed (the watermark is high_ts - grace).
    """

    offset: int = -1
    high_ts: int = 0
    closed_until: int = 0

    def to_dict(self) -> dict[str, int]:
        """JSON-ready form for the table."""
        return {"offset": self.offset, "high_ts": self.high_ts, "closed_until": self.closed_until}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PartitionClock:
        """Rebuild; None gives a fresh clock."""
        return cls(**data) if data else cls()


@dataclass(slots=True)
class WindowRow:
    """One creator's counts in one window, with the offset of the last event applied to it."""

    creator_id: str
    start_ms: int
    counts: Counts = field(default_factory=Counts)
    last_offset: int = -1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the table."""
        return {
            "creator_id": self.creator_id,
            "start_ms": self.start_ms,
            "counts": self.counts.to_dict(),
            "last_offset": self.last_offset,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WindowRow:
        """Rebuild from the table."""
        return cls(
            data["creator_id"], data["start_ms"], Counts.from_dict(data["counts"]), data["last_offset"]
        )


class Outcome(StrEnum):
    """What happened to one creator event."""

    COUNTED = "counted"
    REDELIVERED = "redelivered"  # this very record was applied before a crash
    DUPLICATE = "duplicate"  # another record with the same event_id was counted
    LATE = "late"  # its window had closed


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
    seen_offset: int | None,
    *,
    offset: int,
    ts: int,
    policy: WindowPolicy,
) -> Outcome:
    """Decide what one event at source `offset` with event time `ts` does, before any write.

    `row` is the window row it would count into, `seen_offset` the source offset recorded with
    its event_id if that was seen within the dedupe horizon.
    """
    if offset <= clock.offset or (row is not None and row.last_offset >= offset):
        return Outcome.REDELIVERED
    if seen_offset is not None:
        return Outcome.REDELIVERED if seen_offset == offset else Outcome.DUPLICATE
    if window_start(ts, policy.size_ms) + policy.size_ms <= clock.closed_until:
        return Outcome.LATE
    return Outcome.COUNTED


def advance(clock: PartitionClock, *, offset: int, ts: int, policy: WindowPolicy) -> list[int]:
    """Move the clock past this event; returns the starts of windows that close now, oldest first.

    A window [s, s + size) closes once the watermark (highest ts - grace) reaches its end.
    """
    clock.offset = max(clock.offset, offset)
    clock.high_ts = max(clock.high_ts, ts)
    watermark = clock.high_ts - policy.grace_ms
    new_closed = window_start(watermark, policy.size_ms) if watermark > 0 else 0
    if new_closed <= clock.closed_until:
        return []
    first = clock.closed_until if clock.closed_until else new_closed - policy.size_ms
    closing = list(range(max(first, new_closed - policy.retention_ms), new_closed, policy.size_ms))
    clock.closed_until = new_closed
    return closing


def expired_before(clock: PartitionClock, policy: WindowPolicy) -> tuple[int, int]:
    """(window starts below this are expired, dedupe entries with ts below this are expired)."""
    return clock.closed_until - policy.retention_ms, clock.high_ts - policy.dedupe_horizon_ms
