"""Every matcher's copy of the product catalogue, read from the compacted `product-catalogue`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from likeflow.domain.matching import CatalogueIndex, load_segmenter
from likeflow.replicas.compacted import CompactedFollower
from streams.content import CatalogueRemoval, decode_catalogue_product
from streams.events import Invalid
from streams.validation import InputLimits

log = logging.getLogger(__name__)


class CatalogueReplica(CompactedFollower):
    """product_id -> its catalogue entry, indexed for the content matcher (BM25, likeflow/domain/
    matching). The segmenter's dictionary loads once per process when following starts (about
    0.6 s and 60 MiB: docs/matching.md), off the event loop; `index` is None until then. Newest
    `ts` wins per product; a tombstone removes it; invalid records are skipped (the catalogue is
    an input of the contract: `replay file` checks it with the same decoder)."""

    def __init__(self, limits: InputLimits) -> None:
        super().__init__()
        self._limits = limits
        self.index: CatalogueIndex | None = None
        self._ts: dict[str, int] = {}

    async def follow(self, kafka: Mapping[str, Any], topic: str) -> None:
        """Load the segmenter, then follow `topic` (CompactedFollower.follow)."""
        if self.index is None:
            started = time.perf_counter()
            segmenter = await asyncio.to_thread(load_segmenter)
            self.index = CatalogueIndex(segmenter)
            log.info("content matcher: segmenter loaded in %.2f s", time.perf_counter() - started)
        await super().follow(kafka, topic)

    def __len__(self) -> int:
        return len(self.index) if self.index is not None else 0

    def apply(self, key: bytes | None, value: bytes | None, timestamp_ms: int | None = None) -> None:
        """Apply one `product-catalogue` record."""
        if self.index is None:
            return
        now = int(time.time() * 1000)
        if timestamp_ms is not None and 0 < timestamp_ms < now:
            now = timestamp_ms
        update = decode_catalogue_product(key, value, self._limits.at(now))
        if isinstance(update, Invalid):
            return
        if isinstance(update, CatalogueRemoval):
            self.index.remove(update.product_id)
            self._ts.pop(update.product_id, None)
            return
        if update.ts < self._ts.get(update.product_id, -1):
            return  # an older record of the product: newest ts wins
        self._ts[update.product_id] = update.ts
        self.index.upsert(update)
