"""The creator quality document served by `GET /creators/{id}/quality` and `likeflow creator ID`."""

from __future__ import annotations

from typing import Any

from likeflow.domain.quality.windows import COUNT_FIELDS, Counts, business, rates, total
from likeflow.sinks.redis_keys import platform_key, standing_key
from likeflow.sinks.redis_quality import RedisQualityStore


def build_view(
    creator_id: str,
    windows: list[dict[str, int]],
    standing_doc: dict[str, Any] | None,
    platform_doc: dict[str, Any] | None,
) -> dict[str, Any]:
    """Assemble the response from the Redis documents (pure; rates computed here)."""
    windows = sorted(windows, key=lambda w: w["start_ms"])
    totals = total(Counts.from_dict(w) for w in windows)
    standing = standing_doc or {}
    platform_rates = (platform_doc or {}).get("rates") or {k: None for k in rates(Counts())}
    return {
        "creator_id": creator_id,
        "windows": [
            # A window counted before likes were counted has no `likes`: 0.
            {"start_ms": w["start_ms"], "end_ms": w["end_ms"], **{f: w.get(f, 0) for f in COUNT_FIELDS}}
            for w in windows
        ],
        "totals": totals.to_dict(),
        **rates(totals),
        "business": business(totals),
        "platform": platform_rates,
        "platform_business": (platform_doc or {}).get("business") or business(Counts()),
        "score": standing.get("score", 1.0),
        "weight": standing.get("weight", 1.0),
        # A verdict an earlier version served has no recommendation_weight: it equals `weight`.
        "recommendation_weight": standing.get("recommendation_weight", standing.get("weight", 1.0)),
        "demoted": standing.get("demoted", False),
        "demotion_reasons": standing.get("demotion_reasons", []),
    }


async def creator_quality(store: RedisQualityStore, creator_id: str) -> dict[str, Any] | None:
    """The served document, or None for a creator with no retained window."""
    windows = await store.read_windows(creator_id)
    if windows is None:
        return None
    standing = await store.read(standing_key(store.prefix, creator_id))
    platform = await store.read(platform_key(store.prefix))
    return build_view(creator_id, windows, standing, platform)
