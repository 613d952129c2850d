"""Weighted affinity: likes by watch time, comments, shares and long watches (docs/profile.md)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from likeflow.domain.affinity import Affinity, add_like, scores_at
from likeflow.domain.profile.weights import (
    ENGAGEMENT_KINDS,
    LIKE_WEIGHT,
    engagement_weight,
    like_weight,
)
from likeflow.domain.ranking import RankingPolicy
from streams.engagement import ENGAGEMENT_KINDS as DECODED_KINDS
from streams.engagement import MAX_WATCH_MS
from tests.factories import BASE_TS

HALF_LIFE = RankingPolicy().affinity_half_life_ms


def test_a_weight_of_one_is_a_plain_like_bit_for_bit() -> None:
    plain: Affinity = {}
    weighted: Affinity = {}
    for i, cats in enumerate([("dress", "bag"), ("dress",), ("bag", "snacks")]):
        add_like(plain, cats, BASE_TS + i * 3_600_000, HALF_LIFE)
        add_like(weighted, cats, BASE_TS + i * 3_600_000, HALF_LIFE, weight=1.0)
    add_like(plain, ("dress",), BASE_TS - 5_000, HALF_LIFE)  # out of order
    add_like(weighted, ("dress",), BASE_TS - 5_000, HALF_LIFE, weight=LIKE_WEIGHT)
    assert plain == weighted


def test_a_weight_adds_that_much_before_decay() -> None:
    affinity: Affinity = {}
    add_like(affinity, ("dress",), BASE_TS, HALF_LIFE, weight=2.0)
    add_like(affinity, ("dress",), BASE_TS, HALF_LIFE, weight=0.5)
    assert affinity == {"dress": (2.5, BASE_TS)}
    later = scores_at(affinity, BASE_TS + int(HALF_LIFE), HALF_LIFE)
    assert later["dress"] == pytest.approx(1.25)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 30 * 86_400_000),
            st.sampled_from(["dress", "bag", "snacks"]),
            st.sampled_from([0.5, 1.0, 1.5, 2.0, 0.75]),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_weighted_events_in_any_order_give_the_same_profile(events: list[tuple[int, str, float]]) -> None:
    end = BASE_TS + 31 * 86_400_000
    results = []
    for order in itertools.islice(itertools.permutations(events), 6):
        affinity: Affinity = {}
        for offset, category, weight in order:
            add_like(affinity, (category,), BASE_TS + offset, HALF_LIFE, weight=weight)
        results.append(scores_at(affinity, end, HALF_LIFE))
    for other in results[1:]:
        assert other.keys() == results[0].keys()
        for category, value in results[0].items():
            assert other[category] == pytest.approx(value, rel=1e-9)


def test_like_weight_grows_with_watch_time() -> None:
    assert like_weight(None) == 1.0, "a like without watch time counts as every like always has"
    assert like_weight(0) == 0.5
    assert like_weight(1_000) < like_weight(30_000) == 1.0 < like_weight(60_000) == 1.5
    assert like_weight(MAX_WATCH_MS) == 1.5


@given(st.integers(0, MAX_WATCH_MS), st.integers(0, MAX_WATCH_MS))
def test_like_weight_is_monotone_and_bounded(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert 0.5 <= like_weight(low) <= like_weight(high) <= 1.5


def test_engagement_weights() -> None:
    assert engagement_weight("comment") == engagement_weight("comment", 5_000) == 1.5
    assert engagement_weight("share") == 2.0
    assert engagement_weight("long_watch") == 0.5
    assert engagement_weight("long_watch", 90_000) == 0.75
    assert engagement_weight("long_watch", MAX_WATCH_MS) == 1.0, "never more than a plain like"
    assert engagement_weight("share") > engagement_weight("comment") > like_weight(None)


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown engagement kind"):
        engagement_weight("like")


def test_every_kind_decoded_is_weighed() -> None:
    assert DECODED_KINDS == ENGAGEMENT_KINDS
    for kind in DECODED_KINDS:
        assert engagement_weight(kind) > 0
