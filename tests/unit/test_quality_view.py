"""The served creator quality document: windows in order, totals and rates over them, the judge's verdict."""

from __future__ import annotations

from typing import Any

import pytest

from likeflow.domain.quality.judging import platform_document
from likeflow.domain.quality.windows import COUNT_FIELDS, Counts
from likeflow.sinks.quality_view import build_view, creator_quality
from likeflow.sinks.redis_keys import platform_key, standing_key
from tests.factories import BASE_TS

H = 3_600_000
RATES = ("ctr", "conversion", "return_rate", "complaint_rate")


def window(start_ms: int, **counts: int) -> dict[str, int]:
    """A window as `RedisQualityStore.read_windows` returns it (it may carry a revision)."""
    return {"start_ms": start_ms, "end_ms": start_ms + H, **Counts(**counts).to_dict()}


class FakeQualityStore:
    """The reads `creator_quality` makes of RedisQualityStore, over dicts keyed like Redis."""

    def __init__(self, prefix: str = "t") -> None:
        self.prefix = prefix
        self.docs: dict[str, dict[str, Any]] = {}
        self.windows: dict[str, list[dict[str, int]]] = {}

    async def read(self, key: str) -> dict[str, Any] | None:
        return self.docs.get(key)

    async def read_windows(self, creator_id: str, namespace: str = "") -> list[dict[str, int]] | None:
        return self.windows.get(creator_id)


def test_windows_are_served_oldest_first_with_totals_and_rates_over_all_of_them() -> None:
    later = window(BASE_TS + H, likes=300, prompts=100, clicks=10, orders=4, returns=1, gmv_cents=4000)
    earlier = window(BASE_TS, likes=200, prompts=100, clicks=30, orders=6, complaints=2, gmv_cents=6000)
    view = build_view("c7", [later, earlier], None, None)
    assert [w["start_ms"] for w in view["windows"]] == [BASE_TS, BASE_TS + H]
    assert view["totals"] == {
        "likes": 500,
        "prompts": 200,
        "clicks": 40,
        "orders": 10,
        "bookings": 0,
        "trials": 0,
        "returns": 1,
        "cancellations": 0,
        "no_shows": 0,
        "complaints": 2,
        "gmv_cents": 10000,
    }
    assert (view["ctr"], view["conversion"]) == (pytest.approx(0.2), pytest.approx(0.25))
    assert (view["return_rate"], view["complaint_rate"]) == (pytest.approx(0.1), pytest.approx(0.2))
    # 100 yuan of GMV over 500 likes, 200 of them effective (prompted).
    assert view["business"] == {
        "likes": 500,
        "effective_likes": 200,
        "effective_like_share": pytest.approx(0.4),
        "gmv_yuan": pytest.approx(100.0),
        "gmv_yuan_per_10k_likes": pytest.approx(2000.0),
        "gmv_yuan_per_10k_effective_likes": pytest.approx(5000.0),
    }


def test_a_window_counted_before_likes_were_counted_serves_zero_likes() -> None:
    old = {"start_ms": BASE_TS, "end_ms": BASE_TS + H, "prompts": 3, "clicks": 1, "orders": 0,
           "returns": 0, "complaints": 0, "gmv_cents": 0}  # fmt: skip
    view = build_view("c1", [old], None, None)
    assert view["windows"][0]["likes"] == 0 and view["business"]["gmv_yuan_per_10k_likes"] is None


def test_a_window_counted_before_bookings_and_trials_were_counted_serves_them_as_zero() -> None:
    old = {"start_ms": BASE_TS, "end_ms": BASE_TS + H, "likes": 4, "prompts": 3, "clicks": 2, "orders": 1,
           "returns": 1, "complaints": 0, "gmv_cents": 900}  # fmt: skip
    view = build_view("c1", [old], None, None)
    assert view["windows"][0] == {**old, "bookings": 0, "trials": 0, "cancellations": 0, "no_shows": 0}
    assert (view["conversion"], view["return_rate"]) == (0.5, 1.0), "the order rates they always were"


def test_bookings_and_trials_convert_and_their_cancellations_and_no_shows_undo() -> None:
    served = window(BASE_TS, prompts=40, clicks=10, orders=1, bookings=2, trials=1, returns=1,
                    cancellations=1, no_shows=1, complaints=2, gmv_cents=1500 + 2 * 8000)  # fmt: skip
    view = build_view("c1", [served], None, None)
    assert (view["totals"]["orders"], view["totals"]["bookings"], view["totals"]["trials"]) == (1, 2, 1)
    # 4 conversions of 10 clicks; 3 of them undone; 2 complaints per 4 conversions.
    assert (view["conversion"], view["return_rate"], view["complaint_rate"]) == (0.4, 0.75, 0.5)
    assert view["business"]["gmv_yuan"] == pytest.approx(175.0)


def test_a_rate_with_nothing_to_divide_by_is_null_not_zero() -> None:
    view = build_view("c1", [window(BASE_TS, prompts=5)], None, None)
    assert view["ctr"] == 0.0
    assert view["conversion"] is None and view["return_rate"] is None and view["complaint_rate"] is None


def test_served_windows_carry_start_end_and_counts_only() -> None:
    stored = {**window(BASE_TS, clicks=1), "revision": 3}
    [served] = build_view("c1", [stored], None, None)["windows"]
    assert served == {"start_ms": BASE_TS, "end_ms": BASE_TS + H, **Counts(clicks=1).to_dict()}
    assert list(served)[2:] == list(COUNT_FIELDS)


def test_a_creator_not_judged_yet_is_served_undemoted_at_full_weight_and_null_platform_rates() -> None:
    view = build_view("c1", [window(BASE_TS, prompts=1)], None, None)
    assert (view["score"], view["weight"], view["demoted"]) == (1.0, 1.0, False)
    assert view["platform"] == dict.fromkeys(RATES)


def test_the_verdict_and_platform_rates_are_the_judge_s() -> None:
    standing = {"demoted": True, "score": 0.31, "weight": 0.31, "bad_streak": 2, "reasons": ["returns"]}
    platform, _ = platform_document(Counts(prompts=1000, clicks=100, orders=20, returns=1, complaints=2))
    view = build_view("c1", [window(BASE_TS, prompts=1)], standing, platform)
    assert (view["score"], view["weight"], view["demoted"]) == (0.31, 0.31, True)
    assert view["platform"] == {"ctr": 0.1, "conversion": 0.2, "return_rate": 0.05, "complaint_rate": 0.1}
    assert set(view) == {
        "creator_id",
        "windows",
        "business",
        "platform_business",
        "totals",
        *RATES,
        "platform",
        "score",
        "weight",
        "recommendation_weight",
        "demoted",
        "demotion_reasons",
    }


async def test_creator_quality_reads_the_creator_s_standing_and_the_platform_under_the_prefix() -> None:
    store = FakeQualityStore(prefix="it-x")
    store.windows["c1"] = [window(BASE_TS, prompts=10, clicks=1)]
    store.windows["c2"] = [window(BASE_TS, prompts=10)]
    store.docs[standing_key("it-x", "c1")] = {"demoted": True, "score": 0.4, "weight": 0.4}
    store.docs[platform_key("it-x")], _ = platform_document(Counts(prompts=10, clicks=5))
    view = await creator_quality(store, "c1")  # type: ignore[arg-type]  # only the reads are faked
    assert view is not None
    assert (view["creator_id"], view["weight"], view["demoted"]) == ("c1", 0.4, True)
    assert view["platform"]["ctr"] == 0.5 and view["ctr"] == 0.1
    other = await creator_quality(store, "c2")  # type: ignore[arg-type]
    assert other is not None and (other["weight"], other["demoted"]) == (1.0, False), "c1's standing"


async def test_a_creator_without_retained_windows_has_no_document() -> None:
    store = FakeQualityStore()
    store.docs[standing_key("t", "gone")] = {"demoted": True, "score": 0.2, "weight": 0.2}
    assert await creator_quality(store, "gone") is None  # type: ignore[arg-type]


def test_the_recommendation_weight_and_what_keeps_a_creator_demoted_are_served() -> None:
    standing = {
        "demoted": True,
        "score": 0.4,
        "weight": 0.4,
        "recommendation_weight": 0.4,
        "demotion_reasons": ["low_ctr"],
    }
    view = build_view("c1", [window(BASE_TS, prompts=1)], standing, None)
    assert (view["recommendation_weight"], view["demotion_reasons"]) == (0.4, ["low_ctr"])
    # A verdict served by an earlier version has neither: the weight stands for both.
    earlier = build_view("c1", [window(BASE_TS, prompts=1)], {"demoted": True, "weight": 0.3}, None)
    assert (earlier["recommendation_weight"], earlier["demotion_reasons"]) == (0.3, [])
    fresh = build_view("c1", [window(BASE_TS, prompts=1)], None, None)
    assert (fresh["recommendation_weight"], fresh["demotion_reasons"]) == (1.0, [])
