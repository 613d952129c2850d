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


def add_like(affinity: Affinity, categories: Iterable[str], ts: int, half_life_ms: float) -> None:
    """Count one like at `ts` (epoch ms) for each distinct category, in place."""
    for category in set(categories):
        score, ref = affinity.get(category, (0.0, ts))
        if ts >= ref:
            affinity[category] = (decayed(score, ref, ts, half_life_ms) + 1.0, ts)
        else:  # an out-of-order like: decay its contribution to the stored reference time
            affinity[category] = (score + decayed(1.0, ts, ref, half_life_ms), ref)
    _forget(affinity, ts, half_life_ms)


def _forget(affinity: Affinity, now_ts: int, half_life_ms: float) -> None:
    current = {c: decayed(s, r, now_ts, half_life_ms) for c, (s, r) in affinity.items()}
    for category, value in current.items():
        if value < FORGET_BELOW:
            del affinity[category]
    if len(affinity) > MAX_CATEGORIES:
        keep = sorted(affinity, key=lambda c: (-current[c], c))[:MAX_CATEGORIES]
        for category in set(affinity) - set(keep):
            del affinity[category]
