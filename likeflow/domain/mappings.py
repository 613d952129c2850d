"""Which `video-products` update wins: the newest `ts`, so replays and reorders are harmless."""

from __future__ import annotations

from enum import Enum

from streams.events import MappingRemoval, VideoMapping


class MappingOutcome(Enum):
    """What one valid `video-products` record does to the current mapping."""

    SET = "set"
    REMOVED = "removed"
    STALE = "stale"


def mapping_outcome(current: VideoMapping | None, update: VideoMapping | MappingRemoval) -> MappingOutcome:
    """Newest `ts` wins, so a redelivered or reordered older record never overwrites a newer one.

    A tombstone (ts None) always removes; an update with the same `ts` re-applies (idempotent).
    """
    if current is not None and update.ts is not None and update.ts < current.ts:
        return MappingOutcome.STALE
    if isinstance(update, MappingRemoval):
        return MappingOutcome.REMOVED
    return MappingOutcome.SET
