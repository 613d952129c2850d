"""Named interest tags from the decayed affinity: table, thresholds, order, stability under decay."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import assume, given
from hypothesis import strategies as st

from likeflow.domain.affinity import Affinity, add_like
from likeflow.domain.copy import INTEREST_LABELS
from likeflow.domain.profile.tags import (
    CATEGORY_TAGS,
    DEFAULT_HALF_LIFE_MS,
    TAG_MIN_SHARE,
    interest_tags,
)
from likeflow.ops.demo import CATEGORIES
from tests.factories import BASE_TS

ROOT = Path(__file__).resolve().parents[2]
DAY_MS = 86_400_000


def liked(*events: tuple[str, float]) -> Affinity:
    affinity: Affinity = {}
    for category, weight in events:
        add_like(affinity, (category,), BASE_TS, DEFAULT_HALF_LIFE_MS, weight=weight)
    return affinity


def test_the_named_tags() -> None:
    assert CATEGORY_TAGS["beauty"] == CATEGORY_TAGS["lipstick"] == "美妆爱好者"
    assert CATEGORY_TAGS["outdoor"] == "户外运动达人"
    assert CATEGORY_TAGS["clothing"] == CATEGORY_TAGS["dress"] == "时尚穿搭控"
    assert CATEGORY_TAGS["cookware"] == "厨房达人"
    assert CATEGORY_TAGS["electronics"] == CATEGORY_TAGS["earbuds"] == "数码控"
    assert CATEGORY_TAGS["pets"] == "萌宠家长"
    assert CATEGORY_TAGS["food"] == CATEGORY_TAGS["snacks"] == "吃货"


def test_every_category_of_the_demo_bench_and_copy_has_a_tag() -> None:
    bench = re.search(r"CATEGORIES = \(([^)]*)\)", (ROOT / "bench" / "generate.py").read_text())
    assert bench is not None
    bench_categories = set(re.findall(r'"([^"]+)"', bench.group(1)))
    wanted = set(CATEGORIES) | bench_categories | set(INTEREST_LABELS["zh"]) | {"bag", "fitness"}
    assert wanted - set(CATEGORY_TAGS) == set()


def test_a_tag_needs_strength_and_share() -> None:
    assert interest_tags({}, BASE_TS) == []
    assert interest_tags(liked(("lipstick", 1.0)), BASE_TS) == [], "one like is not yet an interest"
    assert interest_tags(liked(("lipstick", 1.0), ("beauty", 1.0)), BASE_TS) == ["美妆爱好者"], (
        "categories add up"
    )
    assert interest_tags(liked(("share-of-lipstick", 0.0 + 1.0), ("lipstick", 2.0)), BASE_TS) == [
        "美妆爱好者"
    ]
    # 2 of 12 decayed likes is 1/6, below the 20% share.
    assert interest_tags(liked(("dress", 10.0), ("pets", 2.0)), BASE_TS) == ["时尚穿搭控"]
    assert interest_tags(liked(("dress", 10.0), ("pets", 3.0)), BASE_TS) == ["时尚穿搭控", "萌宠家长"]


def test_uncatalogued_categories_count_in_the_total_but_name_nothing() -> None:
    assert interest_tags(liked(("c", 20.0), ("snacks", 2.0)), BASE_TS) == []
    assert interest_tags(liked(("c", 2.0), ("snacks", 2.0)), BASE_TS) == ["吃货"]


def test_tags_are_ordered_by_strength_then_name() -> None:
    tags = interest_tags(liked(("pets", 2.0), ("snacks", 3.0), ("outdoor", 2.0)), BASE_TS)
    assert tags == ["吃货", *sorted(["萌宠家长", "户外运动达人"])]


def test_tags_fade_with_the_profile() -> None:
    affinity = liked(("cookware", 3.0))
    assert interest_tags(affinity, BASE_TS + 7 * DAY_MS) == ["厨房达人"]
    assert interest_tags(affinity, BASE_TS + 14 * DAY_MS) == [], "3 likes two half-lives ago are 0.75"


@given(
    st.dictionaries(
        st.sampled_from(sorted(CATEGORY_TAGS) + ["c", "x"]), st.integers(1, 40), min_size=1, max_size=8
    ),
    st.integers(0, 60),
)
def test_tags_only_drop_off_the_end_as_the_profile_decays(scores: dict[str, int], days: int) -> None:
    affinity: Affinity = {c: (float(s), BASE_TS - (i * 3_600_000)) for i, (c, s) in enumerate(scores.items())}
    now = interest_tags(affinity, BASE_TS)
    later = interest_tags(affinity, BASE_TS + days * DAY_MS)
    strengths: dict[str, float] = {}
    for category, score in scores.items():
        if category in CATEGORY_TAGS:
            strengths[CATEGORY_TAGS[category]] = strengths.get(CATEGORY_TAGS[category], 0.0) + score
    # Near-ties may reorder by float rounding; the property is about clear orders.
    values = sorted(strengths.values())
    assume(all(b - a > 1e-6 * b for a, b in zip(values, values[1:], strict=False)))
    assert later == now[: len(later)]
    assert len(now) <= int(1 / TAG_MIN_SHARE)
