"""Factories for events used across unit and integration tests."""

from __future__ import annotations

from typing import Any

import orjson

from likeflow.domain.decide import Decision, GuardPolicy, decide
from likeflow.domain.prompt_ids import PromptIds
from likeflow.domain.ranking import RankingPolicy
from likeflow.domain.user_state import UserState
from streams.events import Like, Product, VideoMapping
from streams.validation import InputLimits

BASE_TS = 1_795_000_000_000  # 2026-11-18T11:06:40Z = 19:06:40 in UTC+8 (evening peak)
# The default input limits as of a year after BASE_TS: every ts the unit tests use is accepted.
LIMITS = InputLimits().at(BASE_TS + 365 * 24 * 3_600_000)
# Prompt ids of the unit tests (the workers key theirs with a key derived from the user key).
PROMPT_IDS = PromptIds(b"prompt-id key for unit tests")


def product(product_id: str = "p1", **overrides: Any) -> Product:
    """A certified, well-stocked product."""
    fields: dict[str, Any] = {
        "product_id": product_id,
        "title": f"title {product_id}",
        "category": "dress",
        "price_cents": 12900,
        "certified": True,
        "stock": 50,
        "offer": "order",
    }
    fields.update(overrides)
    return Product(**fields)


def mapping(
    video_id: str = "v1", *products: Product, creator_id: str = "c1", ts: int = BASE_TS
) -> VideoMapping:
    """A mapping with the given products (one default product when none are given)."""
    return VideoMapping(video_id, creator_id, ts, products or (product(),))


def like(
    event_id: str = "e1",
    user_id: str = "u1",
    video_id: str = "v1",
    ts: int = BASE_TS,
    action: str = "like",
) -> Like:
    """A like event."""
    return Like(event_id, user_id, video_id, ts, action)  # type: ignore[arg-type]


def like_json(**fields: Any) -> bytes:
    """A raw `likes` record value."""
    data = {"event_id": "e1", "user_id": "u1", "video_id": "v1", "ts": BASE_TS}
    data.update(fields)
    return orjson.dumps(data)


def mapping_json(video_id: str = "v1", products: list[dict[str, Any]] | None = None, **fields: Any) -> bytes:
    """A raw `video-products` record value."""
    data: dict[str, Any] = {
        "video_id": video_id,
        "creator_id": "c1",
        "ts": BASE_TS,
        "products": products
        if products is not None
        else [
            {
                "product_id": "p1",
                "title": "碎花连衣裙",
                "category": "dress",
                "price_cents": 12900,
                "certified": True,
                "stock": 5,
            }
        ],
    }
    data.update(fields)
    return orjson.dumps(data)


def decided(state: UserState, lk: Like, mp: VideoMapping, creator_weight: float = 1.0) -> Decision:
    """`decide` with the default guards and ranking, emitted at the like's ts."""
    return decide(
        state,
        lk,
        mp,
        creator_weight=creator_weight,
        now_ms=lk.ts,
        guards=GuardPolicy(),
        ranking=RankingPolicy(),
        prompt_ids=PROMPT_IDS,
    )
