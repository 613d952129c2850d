"""What is held about a user, as `likeflow profile <user_id>` shows it (the right of access)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from likeflow.domain.affinity import scores_at
from likeflow.domain.copy import format_price
from likeflow.domain.profile.level import Band, Level, consumption_level
from likeflow.domain.profile.tags import DEFAULT_HALF_LIFE_MS, interest_tags
from likeflow.domain.user_state import UserState

TOP_CATEGORIES = 5
USED_FOR = "ranking which product a like's prompt offers; never the price, which is the same for everyone"
FORGOTTEN_ON_REFUSAL: tuple[str, ...] = (
    "interest profile (decayed category affinity from likes, comments, shares and long watches)",
    "interest tags (derived from the interest profile)",
    "consumption level (decayed counts of your orders by price band)",
)


@dataclass(frozen=True, slots=True)
class ProfileView:
    """Everything personal the job holds that shapes ranking, read at `as_of_ms` (epoch ms)."""

    as_of_ms: int
    prompts: bool
    personalized: bool
    consent_ts: int | None
    tags: tuple[str, ...]
    top_categories: tuple[tuple[str, float, float], ...]  # (category, decayed likes, share)
    level: Level | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, what `likeflow profile` prints."""
        return {
            "as_of_ms": self.as_of_ms,
            "consent": {
                "prompts": self.prompts,
                "personalized": self.personalized,
                "stated_ts": self.consent_ts,
            },
            "interest_tags": list(self.tags),
            "top_categories": [
                {"category": c, "strength": round(s, 3), "share": round(share, 3)}
                for c, s, share in self.top_categories
            ],
            "consumption_level": None if self.level is None else _level_dict(self.level),
            "used_for": USED_FOR,
            "forgotten_on_refusal": list(FORGOTTEN_ON_REFUSAL),
        }


def _band_text(band: Band) -> str:
    low = f"¥{format_price(band.low_cents)}"
    return f"{low} and above" if band.high_cents is None else f"{low} to ¥{format_price(band.high_cents - 1)}"


def _level_dict(level: Level) -> dict[str, Any]:
    return {
        "level": level.name,
        "code": level.band.code,
        "band": _band_text(level.band),
        "typical_price": f"¥{format_price(level.typical_cents)}",
        "typical_price_cents": level.typical_cents,
        "orders": round(level.orders, 3),
    }


def profile_view(state: UserState, now_ms: int, half_life_ms: float = DEFAULT_HALF_LIFE_MS) -> ProfileView:
    """What `state` holds at `now_ms` (epoch ms; the affinity decayed with `half_life_ms`):
    consent, tags, the strongest categories and the consumption level. A user who refused
    personalisation holds none of these (they were forgotten) and none is shown."""
    consent = state.consent
    personalized = consent is None or consent.personalized
    scores = scores_at(state.affinity, now_ms, half_life_ms) if personalized else {}
    total = sum(scores.values())
    top = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:TOP_CATEGORIES]
    return ProfileView(
        as_of_ms=now_ms,
        prompts=consent is None or consent.prompts,
        personalized=personalized,
        consent_ts=None if consent is None else consent.ts,
        tags=tuple(interest_tags(state.affinity, now_ms, half_life_ms)) if personalized else (),
        top_categories=tuple((c, s, s / total if total > 0 else 0.0) for c, s in top),
        level=consumption_level(state.price_bands, now_ms) if personalized else None,
    )


def profile_document(
    state: UserState, now_ms: int, half_life_ms: float = DEFAULT_HALF_LIFE_MS
) -> dict[str, Any]:
    """`profile_view(...).to_dict()`: the JSON `likeflow profile <user_id>` prints."""
    return profile_view(state, now_ms, half_life_ms).to_dict()
