"""Consumption level from the user's own orders, the price fit, and where the bands are kept."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from likeflow.domain.affinity import Affinity
from likeflow.domain.privacy import apply_consent, apply_erasure
from likeflow.domain.profile.level import (
    FIT_FLOOR,
    LEVEL_BANDS,
    ORDER_HALF_LIFE_MS,
    Level,
    add_order,
    band_of,
    bucket_of,
    consumption_level,
    price_fit,
)
from likeflow.domain.user_state import UserState
from streams.events import UserConsent, UserErasure
from tests.factories import BASE_TS


def bands_of(*amounts: int, ts: int = BASE_TS) -> Affinity:
    bands: Affinity = {}
    for amount in amounts:
        add_order(bands, amount, ts)
    return bands


def level_at(typical_cents: int) -> Level:
    return Level(band_of(typical_cents), typical_cents, 1.0)


def test_buckets_and_bands() -> None:
    assert [bucket_of(c) for c in (1, 1_999, 2_000, 12_900, 99_999, 100_000, 10_000_000)] == [
        "0",
        "0",
        "20",
        "100",
        "500",
        "1000",
        "5000",
    ]
    assert [band_of(c).name for c in (0, 4_999, 5_000, 19_999, 20_000, 99_999, 100_000, 10**9)] == [
        "入门",
        "入门",
        "大众",
        "大众",
        "品质",
        "品质",
        "高端",
        "高端",
    ]
    assert [b.code for b in LEVEL_BANDS] == ["entry", "mass", "quality", "premium"]


def test_no_orders_no_level_and_a_free_order_is_not_counted() -> None:
    assert consumption_level({}, BASE_TS) is None
    bands: Affinity = {}
    assert not add_order(bands, 0, BASE_TS)
    assert bands == {}


def test_one_order_gives_the_geometric_middle_of_its_bucket() -> None:
    level = consumption_level(bands_of(12_900), BASE_TS)
    assert level is not None
    assert level.typical_cents == round(math.sqrt(10_000 * 20_000)) == 14_142
    assert level.name == "大众" and level.orders == 1.0


def test_the_typical_price_is_the_median_not_the_mean() -> None:
    level = consumption_level(bands_of(3_000, 3_500, 4_000, 900_000), BASE_TS)
    assert level is not None and level.name == "入门", "one big purchase does not make a user 高端"
    assert 2_000 <= level.typical_cents < 5_000


def test_old_orders_fade_and_a_level_needs_recent_ones() -> None:
    bands = bands_of(150_000)
    assert consumption_level(bands, BASE_TS + ORDER_HALF_LIFE_MS) is not None
    assert consumption_level(bands, BASE_TS + 2 * ORDER_HALF_LIFE_MS) is None
    add_order(bands, 8_000, BASE_TS + 60 * 86_400_000)
    level = consumption_level(bands, BASE_TS + 60 * 86_400_000)
    assert level is not None and level.name == "大众", "recent orders outweigh old ones"


@given(
    st.lists(st.tuples(st.integers(1, 10_000_000), st.integers(0, 10 * 86_400_000)), min_size=1, max_size=8)
)
def test_the_level_is_the_same_whatever_the_order_of_orders(orders: list[tuple[int, int]]) -> None:
    forward: Affinity = {}
    backward: Affinity = {}
    for amount, offset in orders:
        add_order(forward, amount, BASE_TS + offset)
    for amount, offset in reversed(orders):
        add_order(backward, amount, BASE_TS + offset)
    now = BASE_TS + 11 * 86_400_000
    a, b = consumption_level(forward, now), consumption_level(backward, now)
    assert (a is None) == (b is None)
    if a is not None and b is not None:
        assert a.typical_cents == pytest.approx(b.typical_cents, rel=1e-6, abs=1)
        assert 100 <= a.typical_cents <= 2_000_000


def test_price_fit_is_one_near_the_typical_price_and_floored_far_from_it() -> None:
    level = level_at(10_000)
    assert price_fit(level, 10_000) == price_fit(level, 5_000) == price_fit(level, 20_000) == 1.0
    assert price_fit(level, 40_000) == pytest.approx(2**-0.5)
    assert price_fit(level, 2_500) == pytest.approx(2**-0.5), "symmetric: far cheaper fits as little"
    assert price_fit(level, 80_000) == price_fit(level, 1_250) == FIT_FLOOR == 0.5
    assert price_fit(level, 10**9) == price_fit(level, 1) == FIT_FLOOR


@given(st.integers(100, 2_000_000), st.integers(1, 10**10), st.integers(1, 10**10))
def test_price_fit_is_in_floor_to_one_and_falls_with_distance(typical: int, a: int, b: int) -> None:
    level = level_at(typical)
    fit_a, fit_b = price_fit(level, a), price_fit(level, b)
    assert 0 < FIT_FLOOR <= fit_a <= 1.0
    if abs(math.log2(a / typical)) <= abs(math.log2(b / typical)):
        assert fit_a >= fit_b


# --- where the bands are kept ---


def test_price_bands_round_trip_and_old_states_still_decode() -> None:
    state = UserState(price_bands=bands_of(12_900, 45_000))
    restored = UserState.from_dict(orjson.loads(state.to_json()))
    assert restored.price_bands == state.price_bands
    old = UserState().to_dict()
    assert "price_bands" not in old, "a state without orders keeps its bytes"
    assert UserState.from_dict(old).price_bands == {}
    # A changelog value written before the field existed.
    legacy = {"seen": {"e1": BASE_TS}, "sent": [], "affinity": {"dress": [1.0, BASE_TS]}, "high_ts": BASE_TS,
              "consent": None}  # fmt: skip
    assert UserState.from_dict(legacy).price_bands == {}


def test_refusing_personalisation_forgets_the_price_bands_and_erasure_too() -> None:
    state = UserState(price_bands=bands_of(12_900), affinity={"dress": (1.0, BASE_TS)})
    apply_consent(state, UserConsent("u1", True, True, BASE_TS))
    assert state.price_bands, "consenting keeps them"
    apply_consent(state, UserConsent("u1", True, False, BASE_TS + 1))
    assert state.price_bands == {} and state.affinity == {}
    assert "price_bands" not in state.to_dict()
    erased = apply_erasure(UserState(price_bands=bands_of(12_900)), UserErasure("u1", BASE_TS))
    assert erased.price_bands == {}
