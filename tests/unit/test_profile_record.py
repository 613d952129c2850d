"""Engagement and orders recorded into a user's state: consent, erasure, dedupe, the user's clock."""

from __future__ import annotations

import orjson
import pytest

from likeflow.domain.decide import GuardPolicy
from likeflow.domain.privacy import apply_consent
from likeflow.domain.profile.level import consumption_level
from likeflow.domain.profile.record import Recorded, record_engagement, record_order
from likeflow.domain.ranking import RankingPolicy
from likeflow.domain.user_state import ConsentState, UserState
from streams.events import UserConsent
from tests.factories import BASE_TS

GUARDS = GuardPolicy()
HALF_LIFE = RankingPolicy().affinity_half_life_ms


def engage(
    state: UserState,
    event_id: str = "g1",
    kind: str = "comment",
    ts: int = BASE_TS,
    categories: tuple[str, ...] = ("dress", "bag"),
    watch_ms: int | None = None,
) -> Recorded:
    return record_engagement(state, event_id, kind, ts, categories, HALF_LIFE, GUARDS, watch_ms)


def test_an_engagement_adds_its_weight_to_each_category_once() -> None:
    state = UserState()
    assert engage(state, categories=("dress", "bag", "dress")) == Recorded.RECORDED
    assert state.affinity == {"dress": (1.5, BASE_TS), "bag": (1.5, BASE_TS)}
    assert engage(state, "g2", "share", BASE_TS, categories=("dress",)) == Recorded.RECORDED
    assert state.affinity["dress"] == (3.5, BASE_TS)
    assert (
        engage(state, "g3", "long_watch", BASE_TS, categories=("bag",), watch_ms=180_000) == Recorded.RECORDED
    )
    assert state.affinity["bag"] == (2.5, BASE_TS)
    assert state.high_ts == BASE_TS


def test_a_redelivered_engagement_changes_nothing() -> None:
    state = UserState()
    engage(state)
    before = orjson.dumps(state.to_dict())
    assert engage(state) == Recorded.DUPLICATE
    assert orjson.dumps(state.to_dict()) == before
    assert engage(state, "g1", "share") == Recorded.DUPLICATE, "the id decides, not the content"


def test_engagement_ids_do_not_collide_with_likes_or_orders() -> None:
    state = UserState()
    state.remember("x1", BASE_TS)
    assert engage(state, "x1") == Recorded.RECORDED
    assert record_order(state, "x1", 12_900, BASE_TS, GUARDS) == Recorded.RECORDED


@pytest.mark.parametrize(("prompts", "personalized"), [(True, False), (False, True), (False, False)])
def test_nothing_is_recorded_without_consent(prompts: bool, personalized: bool) -> None:
    state = UserState(consent=ConsentState(prompts, personalized, BASE_TS - 10))
    assert engage(state) == Recorded.NOT_PERSONALIZED
    assert record_order(state, "o1", 12_900, BASE_TS, GUARDS) == Recorded.NOT_PERSONALIZED
    assert state.affinity == {} and state.price_bands == {} and state.seen == {}


def test_events_from_before_an_erasure_are_ignored() -> None:
    state = UserState(erased_ts=BASE_TS)
    assert engage(state, ts=BASE_TS) == Recorded.ERASED
    assert record_order(state, "o1", 12_900, BASE_TS - 1, GUARDS) == Recorded.ERASED
    assert engage(state, ts=BASE_TS + 1) == Recorded.RECORDED


def test_too_late_and_rate_limited() -> None:
    state = UserState(high_ts=BASE_TS)
    assert engage(state, ts=BASE_TS - GUARDS.dedupe_horizon_ms - 1) == Recorded.TOO_LATE
    full = UserState(seen={f"e{i}": BASE_TS for i in range(3)})
    small = GuardPolicy(max_likes_per_user=3)
    assert (
        record_engagement(full, "g1", "share", BASE_TS, ("dress",), HALF_LIFE, small) == Recorded.RATE_LIMITED
    )
    assert full.affinity == {}


def test_nothing_to_count() -> None:
    state = UserState()
    assert engage(state, categories=()) == Recorded.NOTHING_TO_COUNT
    assert record_order(state, "o1", 0, BASE_TS, GUARDS) == Recorded.NOTHING_TO_COUNT
    assert state.seen == {} and state.price_bands == {}


def test_orders_build_the_level_once_each() -> None:
    state = UserState()
    assert record_order(state, "o1", 12_900, BASE_TS, GUARDS) == Recorded.RECORDED
    assert record_order(state, "o1", 12_900, BASE_TS, GUARDS) == Recorded.DUPLICATE
    level = consumption_level(state.price_bands, BASE_TS)
    assert level is not None and level.name == "大众" and level.orders == 1.0


def test_refusal_after_recording_forgets_all_of_it() -> None:
    state = UserState()
    engage(state)
    record_order(state, "o1", 12_900, BASE_TS, GUARDS)
    apply_consent(state, UserConsent("u1", True, False, BASE_TS + 1))
    assert state.affinity == {} and state.price_bands == {}
    assert engage(state, "g2", ts=BASE_TS + 2) == Recorded.NOT_PERSONALIZED
