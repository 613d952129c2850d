"""The join's lookup: a creator's mapping versions first, the content matcher's proposal to fill in."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from likeflow.domain.mapping_versions import Unknown
from likeflow.replicas.video_mappings import VideoMappings
from streams.events import VideoMapping


class JoinedMappings:
    """What a like joins (`at`), from two replicas every worker follows: `video-products` (the
    creator's mapping, versioned by `ts`) and `video-matches` (the content matcher's latest
    proposal per video, docs/matching.md).

    A creator's mapping always wins: the content proposal is used only when the version valid at
    the like's `ts` has no eligible product (none at all, removed, or nothing certified and in
    stock); its products are then added after the creator's and marked in `matched`, so the
    prompt says `source: "content"`. A video known to neither replica is `UNKNOWN` (its likes
    wait for a mapping: docs/joins.md); a proposal arriving wakes them like a mapping does.
    """

    def __init__(self, creators: VideoMappings, content: VideoMappings) -> None:
        self.creators = creators
        self.content = content
        # Likes wait for either: both replicas tell the same listeners.
        self.on_mapped: list[Callable[[str], None]] = creators.on_mapped
        content.on_mapped = self.on_mapped
        # A content proposal is optional: the join waits for the creators' replica only.
        self.ready: asyncio.Event = creators.ready
        self._merged: dict[str, tuple[VideoMapping | None, VideoMapping, VideoMapping]] = {}

    def __len__(self) -> int:
        return len(self.creators)

    def get(self, video_id: str) -> VideoMapping | None:
        """The creator's newest mapping, or None when it has no products now."""
        return self.creators.get(video_id)

    def at(self, video_id: str, ts: int) -> VideoMapping | None | Unknown:
        """What a like of `video_id` at `ts` (epoch ms) joins (class doc)."""
        mine = self.creators.at(video_id, ts)
        if isinstance(mine, VideoMapping) and mine.eligible:
            return mine
        proposal = self.content.get(video_id)
        if proposal is None:
            return mine
        base = mine if isinstance(mine, VideoMapping) else None
        cached = self._merged.get(video_id)
        if cached is not None and cached[0] is base and cached[1] is proposal:
            return cached[2]
        merged = _merge(base, proposal)
        if len(self._merged) > 100_000:
            self._merged.clear()
        self._merged[video_id] = (base, proposal, merged)
        return merged


def _merge(mine: VideoMapping | None, proposal: VideoMapping) -> VideoMapping:
    """The creator's products (none eligible), then the proposal's products not already mapped."""
    if mine is None:
        products = proposal.products
        return VideoMapping(
            proposal.video_id,
            proposal.creator_id,
            proposal.ts,
            products,
            matched=frozenset(p.product_id for p in products),
        )
    held = {p.product_id for p in mine.products}
    added = tuple(p for p in proposal.products if p.product_id not in held)
    return VideoMapping(
        mine.video_id,
        mine.creator_id,
        mine.ts,
        mine.products + added,
        matched=frozenset(p.product_id for p in added),
    )
