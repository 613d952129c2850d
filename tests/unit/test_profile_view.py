"""What `likeflow profile <user_id>` shows: tags, level, top categories and consent (right of access)."""

from __future__ import annotations

import orjson

from likeflow.domain.affinity import add_like
from likeflow.domain.privacy import apply_consent
from likeflow.domain.profile.level import add_order
from likeflow.domain.profile.tags import DEFAULT_HALF_LIFE_MS
from likeflow.domain.profile.view import FORGOTTEN_ON_REFUSAL, TOP_CATEGORIES, profile_document
from likeflow.domain.user_state import ConsentState, UserState
from streams.events import UserConsent
from tests.factories import BASE_TS


def active_user() -> UserState:
    state = UserState()
    for i in range(3):
        add_like(state.affinity, ("lipstick", "dress"), BASE_TS - i, DEFAULT_HALF_LIFE_MS)
    add_like(state.affinity, ("snacks",), BASE_TS, DEFAULT_HALF_LIFE_MS)
    add_order(state.price_bands, 12_900, BASE_TS)
    add_order(state.price_bands, 15_900, BASE_TS)
    return state


def test_a_new_user_holds_nothing() -> None:
    doc = profile_document(UserState(), BASE_TS)
    assert doc["consent"] == {"prompts": True, "personalized": True, "stated_ts": None}
    assert doc["interest_tags"] == [] and doc["top_categories"] == [] and doc["consumption_level"] is None
    assert doc["forgotten_on_refusal"] == list(FORGOTTEN_ON_REFUSAL)
    assert "never the price" in doc["used_for"]


def test_an_active_user_sees_tags_level_and_categories() -> None:
    doc = profile_document(active_user(), BASE_TS)
    assert doc["interest_tags"] == ["时尚穿搭控", "美妆爱好者"]
    assert [c["category"] for c in doc["top_categories"]] == ["dress", "lipstick", "snacks"]
    assert doc["top_categories"][2] == {"category": "snacks", "strength": 1.0, "share": round(1 / 7, 3)}
    assert doc["consumption_level"] == {
        "level": "大众",
        "code": "mass",
        "band": "¥50.00 to ¥199.99",
        "typical_price": "¥141.42",
        "typical_price_cents": 14_142,
        "orders": 2.0,
    }
    orjson.dumps(doc)  # JSON-ready


def test_at_most_five_categories_are_listed() -> None:
    state = UserState()
    for i in range(8):
        add_like(state.affinity, (f"c{i}",), BASE_TS, DEFAULT_HALF_LIFE_MS)
    assert len(profile_document(state, BASE_TS)["top_categories"]) == TOP_CATEGORIES == 5


def test_after_refusal_nothing_personal_is_shown_or_held() -> None:
    state = active_user()
    apply_consent(state, UserConsent("u1", True, False, BASE_TS + 5))
    doc = profile_document(state, BASE_TS + 10)
    assert doc["consent"] == {"prompts": True, "personalized": False, "stated_ts": BASE_TS + 5}
    assert doc["interest_tags"] == [] and doc["top_categories"] == [] and doc["consumption_level"] is None


def test_a_state_holding_a_profile_without_consent_does_not_show_it() -> None:
    state = active_user()
    state.consent = ConsentState(True, False, BASE_TS)  # not through apply_consent: held, not shown
    doc = profile_document(state, BASE_TS)
    assert doc["interest_tags"] == [] and doc["consumption_level"] is None
