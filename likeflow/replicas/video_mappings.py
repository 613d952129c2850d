"""Every worker's copy of all video → products mappings, read from the compacted `video-products`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from likeflow.domain.mapping_versions import UNKNOWN, Unknown, Version, insert, version_at
from likeflow.replicas.compacted import CompactedFollower
from streams.events import Invalid, VideoMapping
from streams.topics import MAPPING_HISTORY_MS
from streams.validation import InputLimits, decode_mapping

log = logging.getLogger(__name__)


class VideoMappings(CompactedFollower):
    """video_id -> its mapping versions, replicated on every worker: the table side of the like join.

    Likes arrive keyed by user, and the prompt agent needs the user's state and the video's
    mapping in one place. Replicating the (small, slowly changing) mapping set on every worker
    joins each like where it is consumed, instead of re-keying every like by video and back by
    user (two extra Kafka hops per like). The lookup is versioned (`at`): a like joins the
    version valid at its own `ts` (likeflow/domain/mapping_versions.py), kept for
    `history_ms` of event time; `video-products` keeps records that long uncompacted
    (`min.compaction.lag.ms`), so a restart re-reads the same versions. Invalid records are
    skipped here; the partitioned `ingest_mappings` agent dead-letters each of them once.

    Memory is bounded: the replica holds at most `max_bytes` (every version counted), each
    mapping counted as `footprint` (its record's size plus Python's overhead per mapping and
    product: 1.1-1.4x of what tracemalloc reports, from 3-product mappings with short titles to
    50-product ones with 256-character titles, so the cap errs on the safe side). At the cap the
    mapping of a new video is refused (`on_refused`), and a held video whose update would pass
    it is dropped (its old mapping is stale); updates that fit and removals still apply. A flood
    of invented videos or of growing updates cannot crash every worker, and a restart that
    re-reads the compacted topic stops at the same bound (near the cap, which videos fit can
    differ between workers: each admits in the order it read the partitions).

    `on_mapped` listeners hear every video that gets products (the likes waiting for it).
    """

    def __init__(
        self,
        limits: InputLimits,
        max_bytes: int = 256 * 1024 * 1024,
        on_refused: Callable[[], None] | None = None,
        on_size: Callable[[int], None] | None = None,
        history_ms: int = MAPPING_HISTORY_MS,
        max_versions: int = 16,
    ) -> None:
        super().__init__()
        self._limits = limits
        self._max_bytes = max_bytes
        self._on_refused = on_refused
        self._on_size = on_size
        self._history_ms = history_ms
        self._max_versions = max_versions
        self._versions: dict[str, list[Version[VideoMapping]]] = {}
        self._current: dict[str, VideoMapping] = {}  # the newest version, when it has products
        self._sizes: dict[tuple[str, int], int] = {}  # (video, version ts) -> footprint
        self.on_mapped: list[Callable[[str], None]] = []
        self.bytes = 0
        self._last_warned = 0.0

    def get(self, video_id: str) -> VideoMapping | None:
        """The video's newest mapping, or None when it has no products now."""
        return self._current.get(video_id)

    def at(self, video_id: str, ts: int) -> VideoMapping | None | Unknown:
        """The mapping a like at `ts` (epoch ms) joins; None: the video had no products then;
        `UNKNOWN`: nothing is known of the video (its mapping may not have arrived yet)."""
        versions = self._versions.get(video_id)
        if not versions:
            return UNKNOWN
        if len(versions) == 1:
            return versions[0].mapping
        found = version_at(versions, ts)
        return found.mapping if found is not None else UNKNOWN

    def __len__(self) -> int:
        return len(self._current)

    def apply(self, key: bytes | None, value: bytes | None, timestamp_ms: int | None = None) -> None:
        """Apply one `video-products` record: a version at its `ts`; a tombstone forgets the video.

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
        video_id = update.video_id
        if update.ts is None:
            self._forget(video_id)
        else:
            mapping = update if isinstance(update, VideoMapping) else None
            size = footprint(len(value or b""), len(mapping.products)) if mapping else MAPPING_OVERHEAD_BYTES
            held = self._sizes.get((video_id, update.ts), 0)
            whole = sum(self._sizes.get((video_id, v.ts), 0) for v in self._versions.get(video_id, ()))
            fits = self.bytes - held + size <= self._max_bytes
            newest = self._versions[video_id][-1].ts if whole else None
            if not fits and newest is not None and update.ts < newest:
                return  # an older version that does not fit: history is best effort at the cap
            if not fits and whole and self.bytes - whole + size <= self._max_bytes:
                # At the cap, a held video keeps only its newest version (history is best effort).
                self._forget(video_id)
                fits = True
            if fits:
                self._add(video_id, Version(update.ts, mapping), size)
                if mapping is not None:
                    for listener in self.on_mapped:
                        listener(video_id)
            else:
                # Over the cap: a new video is refused; a held one that grows past it is dropped
                # rather than kept as it was (its old products, stock and prices are stale).
                self._refuse(video_id)
                self._forget(video_id)
        if self._on_size is not None:
            self._on_size(self.bytes)

    def _add(self, video_id: str, version: Version[VideoMapping], size: int) -> None:
        versions = self._versions.setdefault(video_id, [])
        self.bytes += size - self._sizes.get((video_id, version.ts), 0)
        self._sizes[(video_id, version.ts)] = size
        for dropped in insert(versions, version, self._history_ms, self._max_versions):
            self.bytes -= self._sizes.pop((video_id, dropped.ts), 0)
        newest = versions[-1].mapping
        if newest is None:
            self._current.pop(video_id, None)
        else:
            self._current[video_id] = newest

    def _forget(self, video_id: str) -> None:
        self._current.pop(video_id, None)
        for version in self._versions.pop(video_id, []):
            self.bytes -= self._sizes.pop((video_id, version.ts), 0)

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
