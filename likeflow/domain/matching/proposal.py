"""The matcher's proposal for one video: the `video-matches` record the join reads (or none)."""

from __future__ import annotations

from typing import Any

from likeflow.domain.matching.index import CatalogueIndex
from likeflow.domain.matching.matcher import DEFAULT_MIN_CONFIDENCE, Match, match
from likeflow.domain.matching.model import ContentLike

#: Products a content match proposes for a video: the best one only. Precision@1 is what the
#: evaluation set measures (docs/matching.md); the ranking does not see match confidence, so a
#: runner-up proposed next to it would be offered as often as the best match.
MAX_PROPOSED = 1


def propose(
    video_id: str,
    creator_id: str,
    ts: int,
    content: ContentLike,
    index: CatalogueIndex,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
) -> tuple[dict[str, Any] | None, list[Match]]:
    """(the `video-matches` value for the video, the matches behind it): the eligible products
    matched at `min_confidence` or more, best first, shaped like a `video-products` record (so
    the join validates it the same way) plus each product's `confidence`; None when nothing
    matched (the video's earlier proposal is then withdrawn)."""
    found = match(content, index, k=3, min_confidence=min_confidence)
    products: list[dict[str, Any]] = []
    for m in found:
        if len(products) == MAX_PROPOSED:
            break
        entry = index.get(m.product_id)
        if entry is None or not entry.eligible:
            continue
        p = entry.product
        products.append(
            {
                "product_id": p.product_id,
                "title": p.title,
                "category": p.category,
                "price_cents": p.price_cents,
                "certified": p.certified,
                "stock": p.stock,
            }
        )
    if not products:
        return None, found
    record = {
        "video_id": video_id,
        "creator_id": creator_id,
        "ts": ts,
        "products": products,
        "source": "content",
        "confidence": {m.product_id: m.confidence for m in found},
    }
    return record, found
