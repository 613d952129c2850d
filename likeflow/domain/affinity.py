"""A user's category interest profile, exponentially decayed in event time."""

from __future__ import annotations

from collections.abc import Iterable

# category -> (score as of ref_ts, ref_ts in epoch ms). Decay is exp2(-age / half_life), so the
# score at time T is the sum over likes i of 2^(-(T - ts_i) / half_life): adding likes in any
# order gives the same profile (up to float rounding), which keeps replays deterministic.
Affinity = dict[str, tuple[float, int]]

MAX_CATEGORIES = 32
FORGET_BELOW = 0.01


def decayed(score: float, from_ts: int, to_ts: int, half_life_ms: float) -> float:
    """`score` observed at `from_ts`, seen from `to_ts` (both epoch ms); never grows."""
    age = to_ts - from_ts
    if age <= 0:
        return score
    factor: float = 2.0 ** (-age / half_life_ms)
    return score * factor


def score_at(affinity: Affinity, category: str, ts: int, half_life_ms: float) -> float:
    """Interest in `category` at `ts` (epoch ms): 0.0 when never liked."""
    entry = affinity.get(category)
    if entry is None:
        return 0.0
    return decayed(entry[0], entry[1], ts, half_life_ms)


def total_at(affinity: Affinity, ts: int, half_life_ms: float) -> float:
    """Sum of all category scores at `ts` (epoch ms)."""
    return sum(decayed(score, ref, ts, half_life_ms) for score, ref in affinity.values())


def scores_at(affinity: Affinity, ts: int, half_life_ms: float) -> dict[str, float]:
    """Every category's score at `ts` (epoch ms), in the profile's order: what `score_at`,
    `total_at` (summed in this order) and `add_like` compute, decayed once per like."""
    out = {}
    for category, (score, ref) in affinity.items():
        age = ts - ref
        out[category] = score if age <= 0 else score * 2.0 ** (-age / half_life_ms)
    return out


def add_like(
    affinity: Affinity,
    categories: Iterable[str],
    ts: int,
    half_life_ms: float,
    current: dict[str, float] | None = None,
    weight: float = 1.0,
) -> None:
    """Count one like at `ts` (epoch ms) for each distinct category, in place.

    `weight` (> 0) is what the like adds to each category before decay: 1.0 for a plain like;
    other engagement weighs more or less (docs/profile.md). Any order of weighted likes gives
    the same profile, as with plain ones.

    `categories` are taken in their order, once each (a video lists its products' categories
    in a fixed order, so the profile's order, and every float summed over it, is the same on
    every worker and every replay). `current` is `scores_at(affinity, ts, half_life_ms)` if
    the caller has it.
    """
    if current is None:
        current = scores_at(affinity, ts, half_life_ms)
    else:
        current = dict(current)
    for category in dict.fromkeys(categories):
        held = affinity.get(category)
        if held is None:
            affinity[category] = (weight, ts)
            current[category] = weight
        elif ts >= held[1]:
            affinity[category] = entry = (current[category] + weight, ts)
            current[category] = entry[0]
        else:  # an out-of-order like: decay its contribution to the stored reference time
            affinity[category] = entry = (held[0] + decayed(weight, ts, held[1], half_life_ms), held[1])
            current[category] = decayed(entry[0], entry[1], ts, half_life_ms)
    _forget(affinity, current)


def _forget(affinity: Affinity, current: dict[str, float]) -> None:
    for category, value in current.items():
        if value < FORGET_BELOW:
            del affinity[category]
    if len(affinity) > MAX_CATEGORIES:
        keep = sorted(affinity, key=lambda c: (-current[c], c))[:MAX_CATEGORIES]
        for category in set(affinity) - set(keep):
            del affinity[category]
