"""Named interest tags (美妆爱好者, 户外运动达人, ...) read from the decayed category affinity."""

from __future__ import annotations

from likeflow.domain.affinity import Affinity, scores_at
from likeflow.domain.ranking import RankingPolicy

# Catalogue category -> the tag it counts towards. Several categories may feed one tag (their
# scores add up); a category without a row feeds no tag but still counts in the total.
CATEGORY_TAGS: dict[str, str] = {
    "beauty": "美妆爱好者",
    "makeup": "美妆爱好者",
    "lipstick": "美妆爱好者",
    "skincare": "美妆爱好者",
    "outdoor": "户外运动达人",
    "camping": "户外运动达人",
    "hiking": "户外运动达人",
    "fitness": "健身达人",
    "sports": "健身达人",
    "sneakers": "球鞋控",
    "clothing": "时尚穿搭控",
    "fashion": "时尚穿搭控",
    "dress": "时尚穿搭控",
    "bag": "时尚穿搭控",
    "bags": "时尚穿搭控",
    "shoes": "时尚穿搭控",
    "accessories": "时尚穿搭控",
    "cookware": "厨房达人",
    "kitchen": "厨房达人",
    "electronics": "数码控",
    "earbuds": "数码控",
    "phones": "数码控",
    "pets": "萌宠家长",
    "food": "吃货",
    "snacks": "吃货",
    "toys": "潮玩控",
    "home": "居家生活家",
    "books": "书虫",
}
# A tag is held when its categories hold at least TAG_MIN_SHARE of all the user's affinity (so
# at most 5 tags) and at least TAG_MIN_STRENGTH decayed likes: the bar the copy sets for naming
# an interest (copy.INTEREST_MIN_STRENGTH), e.g. two likes within about three days.
TAG_MIN_SHARE = 0.2
TAG_MIN_STRENGTH = 1.5
DEFAULT_HALF_LIFE_MS = RankingPolicy().affinity_half_life_ms


def tag_strengths(scores: dict[str, float]) -> dict[str, float]:
    """Each tag's strength from the categories' decayed `scores` (`affinity.scores_at`): the
    scores of its categories, summed."""
    strengths: dict[str, float] = {}
    for category, score in scores.items():
        tag = CATEGORY_TAGS.get(category)
        if tag is not None:
            strengths[tag] = strengths.get(tag, 0.0) + score
    return strengths


def interest_tags(affinity: Affinity, now_ms: int, half_life_ms: float = DEFAULT_HALF_LIFE_MS) -> list[str]:
    """The tags the user holds at `now_ms` (epoch ms), strongest first (ties by name).

    Every category decays alike, so shares do not change with time: as the profile ages, tags
    only drop off the end of the list (below TAG_MIN_STRENGTH), never swap places.
    """
    scores = scores_at(affinity, now_ms, half_life_ms)
    total = sum(scores.values())
    held = [
        (strength, tag)
        for tag, strength in tag_strengths(scores).items()
        if strength >= TAG_MIN_STRENGTH and strength >= TAG_MIN_SHARE * total
    ]
    return [tag for _, tag in sorted(held, key=lambda held_tag: (-held_tag[0], held_tag[1]))]
