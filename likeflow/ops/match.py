"""`likeflow match <video_id>`: what the content matcher proposes for a video, and why (terms, scores)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from config import Settings
from likeflow.domain.matching import CatalogueIndex, explain, load_segmenter
from likeflow.domain.matching.proposal import propose
from likeflow.ops.rebuild import Changelog, read_changelog
from likeflow.policies import input_limits_from
from streams.content import CatalogueProduct, VideoContent, decode_catalogue_product, decode_video_content
from streams.events import Invalid, VideoMapping
from streams.topics import PRODUCT_CATALOGUE, VIDEO_CONTENT, VIDEO_PRODUCTS
from streams.validation import decode_mapping


@dataclass
class RawLatest(Changelog):
    """The latest raw value of every key of a compacted input topic (decoded by the caller)."""

    raw: dict[str, bytes] = field(default_factory=dict)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        self.records += 1
        if key is None:
            return
        name = key.decode("utf-8", "replace")
        if value is None:
            self.raw.pop(name, None)
        else:
            self.raw[name] = value


async def explain_video(settings: Settings, video_id: str) -> dict[str, Any]:
    """The content matcher's view of `video_id` from the topics themselves: its `video-content`
    record, the catalogue, the creator's mapping; the proposal and each match's terms."""
    limits = input_limits_from(settings)
    now = limits.at(int(time.time() * 1000))
    contents = await _latest(settings, VIDEO_CONTENT)
    raw = contents.raw.get(video_id)
    if raw is None:
        raise LookupError(
            f"no video-content record for video {video_id!r} on {settings.topic(VIDEO_CONTENT)}"
        )
    content = decode_video_content(video_id.encode(), raw, now)
    if isinstance(content, Invalid):
        raise LookupError(f"the video-content record of {video_id!r} is invalid: {content.error}")
    index = CatalogueIndex(load_segmenter())
    catalogue = await _latest(settings, PRODUCT_CATALOGUE)
    for product_id, value in catalogue.raw.items():
        product = decode_catalogue_product(product_id.encode(), value, now)
        if isinstance(product, CatalogueProduct):
            index.upsert(product)
    mappings = await _latest(settings, VIDEO_PRODUCTS)
    mine = (
        decode_mapping(video_id.encode(), mappings.raw[video_id], now) if video_id in mappings.raw else None
    )
    creator_eligible = len(mine.eligible) if isinstance(mine, VideoMapping) else 0
    record, found = propose(
        video_id, content.creator_id or "", content.ts, content, index, settings.match_min_confidence
    )
    return {
        "video_id": video_id,
        "content": content_summary(content),
        "catalogue_products": len(index),
        "creator_mapping_eligible_products": creator_eligible,
        "used_for_likes": creator_eligible == 0 and record is not None and content.creator_id is not None,
        "threshold": settings.match_min_confidence,
        "proposed": [p["product_id"] for p in (record or {}).get("products", [])],
        "matches": [
            {"product_id": m.product_id, "score": m.score, "confidence": m.confidence, "explain": explain(m)}
            for m in found
        ],
    }


async def _latest(settings: Settings, name: str) -> RawLatest:
    """Every key's latest raw value on topic `name` (unprefixed), read to its end."""
    latest = RawLatest(name)
    await read_changelog(settings, settings.topic(name), into=latest)
    return latest


def content_summary(content: VideoContent) -> dict[str, Any]:
    """The content fields the matcher reads."""
    return {
        "caption": content.caption,
        "hashtags": list(content.hashtags),
        "labels": [[label, conf] for label, conf in content.labels],
        "creator_id": content.creator_id,
    }


def render(doc: dict[str, Any]) -> str:
    """The explanation as text: the proposal, then each match's terms and contributions."""
    lines = [
        f"video {doc['video_id']}: {doc['content']['caption']!r} #{' #'.join(doc['content']['hashtags'])}",
        f"  labels {doc['content']['labels']}",
        f"  catalogue: {doc['catalogue_products']} products; the creator's mapping has "
        f"{doc['creator_mapping_eligible_products']} eligible (a creator's mapping always wins)",
        f"  proposed (confidence >= {doc['threshold']}): {', '.join(doc['proposed']) or 'nothing'}"
        + ("" if doc["used_for_likes"] else "  [not used for likes]"),
    ]
    for m in doc["matches"]:
        lines.extend("  " + line for line in m["explain"])
    return "\n".join(lines)
