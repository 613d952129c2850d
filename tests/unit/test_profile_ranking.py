"""The consumption level in ranking: it changes which product is offered, never a price."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from likeflow.domain.affinity import Affinity, add_like
from likeflow.domain.decide import Emit, GuardPolicy, decide
from likeflow.domain.pricing import PricePolicy
from likeflow.domain.privacy import apply_consent
from likeflow.domain.profile.level import FIT_FLOOR, Level, add_order, band_of, price_fit
from likeflow.domain.ranking import RankingPolicy, rank, score_product
from likeflow.domain.user_state import UserState
from streams.events import Like, Prompt, UserConsent, VideoMapping
from tests.factories import BASE_TS, PROMPT_IDS, like, mapping, product

POLICY = RankingPolicy()
GUARDS = GuardPolicy()
CHEAP = product("cheap", price_cents=3_900, stock=10)
DEAR = product("dear", price_cents=159_900, stock=10)


def level_at(typical_cents: int) -> Level:
    return Level(band_of(typical_cents), typical_cents, 1.0)


def run(state: UserState, lk: Like, mp: VideoMapping, pricing: PricePolicy | None = None) -> Prompt:
    decision = decide(
        state,
        lk,
        mp,
        creator_weight=1.0,
        now_ms=lk.ts,
        guards=GUARDS,
        ranking=POLICY,
        prompt_ids=PROMPT_IDS,
        pricing=pricing or PricePolicy(),
    )
    assert isinstance(decision, Emit), decision
    return decision.prompt


def with_orders(*amounts: int) -> UserState:
    state = UserState()
    for amount in amounts:
        add_order(state.price_bands, amount, BASE_TS - 86_400_000)
    return state


def test_without_a_level_the_ranking_is_as_before() -> None:
    products = [CHEAP, DEAR, product("mid", price_cents=12_900, stock=3)]
    affinity: Affinity = {}
    add_like(affinity, ["dress"], BASE_TS - 1_000, POLICY.affinity_half_life_ms)
    assert rank(products, affinity, BASE_TS, 0.8, POLICY) == rank(
        products, affinity, BASE_TS, 0.8, POLICY, None, None
    )
    assert score_product(DEAR, affinity, BASE_TS, 0.8, POLICY) == score_product(
        DEAR, affinity, BASE_TS, 0.8, POLICY, None
    )


def test_the_level_multiplies_each_score_by_its_price_fit() -> None:
    level = level_at(4_000)
    plain = {p.product_id: s for s, p in rank([CHEAP, DEAR], {}, BASE_TS, 1.0, POLICY)}
    fitted = {p.product_id: s for s, p in rank([CHEAP, DEAR], {}, BASE_TS, 1.0, POLICY, level=level)}
    assert fitted["cheap"] == plain["cheap"]
    assert fitted["dear"] == round(plain["dear"] * FIT_FLOOR, 6)
    assert score_product(DEAR, {}, BASE_TS, 1.0, POLICY, level) == fitted["dear"]


def test_a_users_own_orders_steer_the_choice_between_equal_products() -> None:
    mp = mapping("v1", CHEAP, DEAR)
    assert run(UserState(), like(), mp).product_id == "cheap", "no level: the tie goes to the lower price"
    assert run(with_orders(150_000, 180_000), like(), mp).product_id == "dear"
    assert run(with_orders(3_000, 4_500), like(), mp).product_id == "cheap"


def test_the_price_is_the_same_whatever_the_level() -> None:
    mp = mapping("v1", DEAR)
    campaign = PricePolicy(discount_pct=10, start_hour=0, end_hour=24)
    prices = {
        run(state, like(), mp, campaign).price_cents
        for state in (UserState(), with_orders(3_000), with_orders(200_000))
    }
    assert len(prices) == 1


def test_the_level_is_not_used_without_personalisation() -> None:
    state = with_orders(150_000, 180_000)
    apply_consent(state, UserConsent("u1", True, False, BASE_TS - 10))
    assert state.price_bands == {}
    assert run(state, like(), mapping("v1", CHEAP, DEAR)).product_id == "cheap"


@settings(max_examples=50)
@given(st.integers(100, 2_000_000), st.integers(1, 10_000_000), st.integers(0, 200))
def test_the_fit_never_takes_a_score_below_its_floor_share(typical: int, price: int, stock: int) -> None:
    item = product("p", price_cents=price, stock=stock)
    plain = score_product(item, {}, BASE_TS, 1.0, POLICY)
    fitted = score_product(item, {}, BASE_TS, 1.0, POLICY, level_at(typical))
    fit = price_fit(level_at(typical), price)
    assert FIT_FLOOR <= fit <= 1.0
    assert fitted == pytest.approx(plain * fit, abs=2e-6)
    assert fitted <= plain
