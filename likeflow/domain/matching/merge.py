"""A creator's own mapping wins; content matches fill a video without enough eligible products."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from likeflow.domain.matching.index import CatalogueIndex
from likeflow.domain.matching.matcher import Match
from streams.events import Product, VideoMapping

Source = Literal["creator", "content"]

#: A video whose creator mapped fewer eligible (certified, in-stock) products than this gets
#: content matches until it has this many. 1: content only fills a video that could otherwise
#: prompt nothing; a creator's eligible product is never joined by one the creator did not pick.
MIN_ELIGIBLE_PRODUCTS = 1


@dataclass(frozen=True, slots=True)
class SourcedProduct:
    """A product the prompt path may offer for a video, with where it came from: the creator's
    mapping, or a content match (with its confidence)."""

    product: Product
    source: Source
    confidence: float | None = None


def merge_with_mapping(
    mapping: VideoMapping | None,
    matches: Sequence[Match],
    index: CatalogueIndex,
    min_eligible: int = MIN_ELIGIBLE_PRODUCTS,
) -> tuple[SourcedProduct, ...]:
    """The creator's products (all of them, in the mapping's order, `source="creator"`), then,
    only if fewer than `min_eligible` of them are eligible, content matches (`source="content"`,
    best first, not already mapped, eligible now) until `min_eligible` are eligible."""
    products = [SourcedProduct(p, "creator") for p in mapping.products] if mapping is not None else []
    eligible = len(mapping.eligible) if mapping is not None else 0
    mapped = {s.product.product_id for s in products}
    for found in matches:
        if eligible >= min_eligible:
            break
        entry = index.get(found.product_id)
        if found.product_id in mapped or entry is None or not entry.eligible:
            continue
        p = entry.product
        product = Product(p.product_id, p.title, p.category, p.price_cents, p.certified, p.stock)
        products.append(SourcedProduct(product, "content", found.confidence))
        mapped.add(found.product_id)
        eligible += 1
    return tuple(products)


def as_mapping(
    video_id: str, creator_id: str, ts: int, products: Sequence[SourcedProduct]
) -> VideoMapping | None:
    """The merged products as a `VideoMapping` the prompt path decides on unchanged (None if
    there are none); the sources stay with the caller."""
    if not products:
        return None
    return VideoMapping(video_id, creator_id, ts, tuple(s.product for s in products))
