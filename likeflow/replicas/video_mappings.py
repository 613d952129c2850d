"""Every worker's copy of all video → products mappings, read from the compacted `video-products`."""

from __future__ import annotations

import time

from likeflow.domain.mappings import MappingOutcome, mapping_outcome
from likeflow.replicas.compacted import CompactedFollower
from streams.events import Invalid, VideoMapping
from streams.validation import InputLimits, decode_mapping


class VideoMappings(CompactedFollower):
    """video_id -> VideoMapping, replicated on every worker: the table side of the like join.

    Likes arrive keyed by user, and the prompt agent needs the user's state and the video's
    mapping in one place. Replicating the (small, slowly changing) mapping set on every worker
    joins each like where it is consumed, instead of re-keying every like by video and back by
    user (two extra Kafka hops per like). The lookup is processing-time: the mapping this worker
    has applied when the like is processed. Invalid records are skipped here; the partitioned
    `ingest_mappings` agent dead-letters each of them once.
    """

    def __init__(self, limits: InputLimits) -> None:
        super().__init__()
        self._limits = limits
        self._mappings: dict[str, VideoMapping] = {}

    def get(self, video_id: str) -> VideoMapping | None:
        """The video's current mapping, or None when it has no products."""
        return self._mappings.get(video_id)

    def __len__(self) -> int:
        return len(self._mappings)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one `video-products` record (newest `ts` wins; a tombstone removes)."""
        update = decode_mapping(key, value, self._limits.at(int(time.time() * 1000)))
        if isinstance(update, Invalid):
            return
        if mapping_outcome(self._mappings.get(update.video_id), update) is MappingOutcome.STALE:
            return
        if isinstance(update, VideoMapping):
            self._mappings[update.video_id] = update
        else:
            self._mappings.pop(update.video_id, None)
