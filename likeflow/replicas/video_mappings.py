"""Every worker's copy of all video → products mappings, read from the compacted `video-products`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from likeflow.domain.mappings import MappingOutcome, mapping_outcome
from likeflow.replicas.compacted import CompactedFollower
from streams.events import Invalid, VideoMapping
from streams.validation import InputLimits, decode_mapping

log = logging.getLogger(__name__)


class VideoMappings(CompactedFollower):
    """video_id -> VideoMapping, replicated on every worker: the table side of the like join.

    Likes arrive keyed by user, and the prompt agent needs the user's state and the video's
    mapping in one place. Replicating the (small, slowly changing) mapping set on every worker
    joins each like where it is consumed, instead of re-keying every like by video and back by
    user (two extra Kafka hops per like). The lookup is processing-time: the mapping this worker
    has applied when the like is processed. Invalid records are skipped here; the partitioned
    `ingest_mappings` agent dead-letters each of them once.

    Memory is bounded: the replica holds at most `max_bytes` (updates included), each mapping
    counted as `footprint` (its record's size plus Python's overhead per mapping and product:
    1.1-1.4x of what tracemalloc reports, from 3-product mappings with short titles to 50-product
    ones with 256-character titles, so the cap errs on the safe side). At the cap the mapping of
    a new video is refused (`on_refused`), and a held video whose update would pass it is
    dropped (its old mapping is stale); updates that fit and removals still apply. A flood of
    invented videos or of growing updates cannot crash every worker, and a restart that re-reads
    the compacted topic stops at the same bound (near the cap, which videos fit can differ
    between workers: each admits in the order it read the partitions).
    """

    def __init__(
        self,
        limits: InputLimits,
        max_bytes: int = 256 * 1024 * 1024,
        on_refused: Callable[[], None] | None = None,
        on_size: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__()
        self._limits = limits
        self._max_bytes = max_bytes
        self._on_refused = on_refused
        self._on_size = on_size
        self._mappings: dict[str, VideoMapping] = {}
        self._sizes: dict[str, int] = {}
        self.bytes = 0
        self._last_warned = 0.0

    def get(self, video_id: str) -> VideoMapping | None:
        """The video's current mapping, or None when it has no products."""
        return self._mappings.get(video_id)

    def __len__(self) -> int:
        return len(self._mappings)

    def apply(self, key: bytes | None, value: bytes | None, timestamp_ms: int | None = None) -> None:
        """Apply one `video-products` record (newest `ts` wins; a tombstone removes).

        Its `ts` is judged against the earlier of the worker's clock and the record's Kafka
        timestamp (`timestamp_ms`): every worker, and this one after a restart that re-reads the
        compacted topic, then accepts or refuses the same records, not more as the wall clock
        moves on (a producer whose clock runs ahead would otherwise see its refused mapping
        accepted later, over a newer one)."""
        now = int(time.time() * 1000)
        if timestamp_ms is not None and 0 < timestamp_ms < now:
            now = timestamp_ms
        update = decode_mapping(key, value, self._limits.at(now))
        if isinstance(update, Invalid):
            return
        if mapping_outcome(self._mappings.get(update.video_id), update) is MappingOutcome.STALE:
            return
        video_id = update.video_id
        held = self._sizes.get(video_id, 0)
        if isinstance(update, VideoMapping):
            size = footprint(len(value or b""), len(update.products))
            if self.bytes - held + size <= self._max_bytes:
                self._mappings[video_id] = update
                self._sizes[video_id] = size
                self.bytes += size - held
            else:
                # Over the cap: a new video is refused; a held one that grows past it is dropped
                # rather than kept as it was (its old products, stock and prices are stale).
                self._refuse(video_id)
                self._forget(video_id)
        else:
            self._forget(video_id)
        if self._on_size is not None:
            self._on_size(self.bytes)

    def _forget(self, video_id: str) -> None:
        self._mappings.pop(video_id, None)
        self.bytes -= self._sizes.pop(video_id, 0)

    def _refuse(self, video_id: str) -> None:
        if self._on_refused is not None:
            self._on_refused()
        now = time.monotonic()
        if now - self._last_warned >= 10.0:
            self._last_warned = now
            log.error(
                "video mapping replica full (%d of %d bytes, LIKEFLOW_MAPPINGS_MAX_BYTES): mapping of "
                "new video %r refused; likes of such videos are skipped as no_mapping",
                self.bytes,
                self._max_bytes,
                video_id[:64],
            )


# Python's memory beyond the record's bytes: per mapping (object, dict entry, derived tuples)
# and per product (a Product with its strings); measured with tracemalloc.
MAPPING_OVERHEAD_BYTES = 256
PRODUCT_OVERHEAD_BYTES = 256


def footprint(record_bytes: int, products: int) -> int:
    """Estimated memory (bytes) of a mapping decoded from a `record_bytes` record."""
    return record_bytes + MAPPING_OVERHEAD_BYTES + PRODUCT_OVERHEAD_BYTES * products
