"""Score components: time of day, stock, affinity decay and tie-breaks."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from likeflow.domain.affinity import Affinity, add_like, score_at
from likeflow.domain.copy import format_price, offer_text
from likeflow.domain.ranking import (
    HOUR_MS,
    RankingPolicy,
    local_hour,
    rank,
    score_product,
    stock_factor,
    time_of_day_factor,
    within_hours,
)
from tests.factories import BASE_TS, product

POLICY = RankingPolicy()
HALF_LIFE = POLICY.affinity_half_life_ms


def test_local_hour_uses_the_audience_offset() -> None:
    assert local_hour(BASE_TS, 0) == 11
    assert local_hour(BASE_TS, 480) == 19


@pytest.mark.parametrize(("hour_utc8", "factor"), [(18, 1.0), (19, 1.25), (22, 1.25), (23, 1.0), (3, 1.0)])
def test_evening_peak_boost(hour_utc8: int, factor: float) -> None:
    day_start_utc8 = BASE_TS - (BASE_TS + 480 * 60_000) % (24 * HOUR_MS)
    assert time_of_day_factor(day_start_utc8 + hour_utc8 * HOUR_MS, POLICY) == factor


@pytest.mark.parametrize(
    ("hour_utc8", "factor"), [(21, 1.0), (22, 1.25), (23, 1.25), (0, 1.25), (1, 1.25), (2, 1.0)]
)
def test_a_peak_may_wrap_past_midnight(hour_utc8: int, factor: float) -> None:
    policy = RankingPolicy(evening_peak_start_hour=22, evening_peak_end_hour=2)
    day_start_utc8 = BASE_TS - (BASE_TS + 480 * 60_000) % (24 * HOUR_MS)
    assert time_of_day_factor(day_start_utc8 + hour_utc8 * HOUR_MS, policy) == factor


def test_within_hours() -> None:
    assert [h for h in range(24) if within_hours(h, 19, 23)] == [19, 20, 21, 22]
    assert [h for h in range(24) if within_hours(h, 22, 2)] == [0, 1, 22, 23]
    assert not any(within_hours(h, 5, 5) for h in range(24))
    assert all(within_hours(h, 0, 24) for h in range(24))


def test_stock_factor_prefers_products_that_will_not_sell_out() -> None:
    assert stock_factor(1) < stock_factor(5) < stock_factor(10) == stock_factor(500) == 1.0


def test_affinity_halves_after_one_half_life() -> None:
    aff: Affinity = {}
    add_like(aff, ["dress"], BASE_TS, HALF_LIFE)
    assert score_at(aff, "dress", BASE_TS + int(HALF_LIFE), HALF_LIFE) == pytest.approx(0.5)


def test_affinity_is_independent_of_arrival_order() -> None:
    likes = [
        ("dress", BASE_TS),
        ("bag", BASE_TS + 5 * HOUR_MS),
        ("dress", BASE_TS + 50 * HOUR_MS),
        ("dress", BASE_TS - 3 * HOUR_MS),
    ]
    results = []
    for order in itertools.permutations(likes):
        aff: Affinity = {}
        for category, ts in order:
            add_like(aff, [category], ts, HALF_LIFE)
        at = BASE_TS + 100 * HOUR_MS
        results.append((score_at(aff, "dress", at, HALF_LIFE), score_at(aff, "bag", at, HALF_LIFE)))
    for dress, bag in results:
        assert dress == pytest.approx(results[0][0]) and bag == pytest.approx(results[0][1])


def test_one_like_counts_each_category_once() -> None:
    aff: Affinity = {}
    add_like(aff, ["dress", "dress", "bag"], BASE_TS, HALF_LIFE)
    assert score_at(aff, "dress", BASE_TS, HALF_LIFE) == 1.0


def test_ties_go_to_the_lower_price_then_product_id() -> None:
    ranked = rank(
        [
            product("b", price_cents=500),
            product("a", price_cents=500),
            product("c", price_cents=100),
        ],
        {},
        BASE_TS,
        1.0,
        POLICY,
    )
    assert [p.product_id for _, p in ranked] == ["c", "a", "b"]


def test_creator_weight_scales_the_score() -> None:
    [(full, _)] = rank([product("a")], {}, BASE_TS, 1.0, POLICY)
    [(half, _)] = rank([product("a")], {}, BASE_TS, 0.5, POLICY)
    assert half == pytest.approx(full / 2)


def test_prices_are_formatted_in_yuan() -> None:
    assert format_price(12900) == "129.00"
    assert format_price(5) == "0.05"
    assert offer_text("en", "booking", "Spa", 19990) == "Book Spa for ¥199.90 in one tap"


@settings(max_examples=200, deadline=None)
@given(
    profile=st.dictionaries(
        st.sampled_from(["dress", "bag", "shoe", "hat", "toy"]),
        st.tuples(st.floats(0.01, 50), st.integers(BASE_TS - 30 * 24 * 3_600_000, BASE_TS + 3_600_000)),
        max_size=5,
    ),
    stocks=st.lists(st.integers(0, 30), min_size=1, max_size=5),
    weight=st.floats(0.2, 1.0),
)
def test_rank_scores_are_exactly_score_product(
    profile: dict[str, tuple[float, int]], stocks: list[int], weight: float
) -> None:
    """rank decays the profile once per like; the scores must be those of the documented formula."""
    products = [
        product(f"p{i}", category=["dress", "bag", "shoe"][i % 3], stock=s) for i, s in enumerate(stocks)
    ]
    policy = RankingPolicy()
    ranked = rank(products, profile, BASE_TS, weight, policy)
    assert sorted(s for s, _ in ranked) == sorted(
        score_product(p, profile, BASE_TS, weight, policy) for p in products
    )
    for score, p in ranked:
        assert score == score_product(p, profile, BASE_TS, weight, policy)
