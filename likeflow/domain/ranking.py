"""The documented product score (docs/ranking.md): affinity, creator weight, stock, time of day, price fit."""

from __future__ import annotations

from dataclasses import dataclass

from likeflow.domain.affinity import Affinity, score_at, scores_at, total_at
from likeflow.domain.profile.level import Level, price_fit
from streams.events import Product

HOUR_MS = 3_600_000
STOCK_SATURATION = 10


@dataclass(frozen=True, slots=True)
class RankingPolicy:
    """Knobs of the score; hours are local to the audience (`tz_offset_minutes` east of UTC)."""

    affinity_half_life_ms: float = 168 * HOUR_MS
    evening_peak_start_hour: int = 19
    evening_peak_end_hour: int = 23
    evening_peak_boost: float = 1.25
    tz_offset_minutes: int = 480
    # Multiply `price_fit` for the user's consumption level (docs/profile.md). It depends on when
    # the user's orders (another topic) reach their state relative to their likes.
    use_consumption_level: bool = True


def local_hour(ts: int, tz_offset_minutes: int) -> int:
    """Hour of day (0-23) of epoch-ms `ts` at the given UTC offset (minutes)."""
    return ((ts + tz_offset_minutes * 60_000) // HOUR_MS) % 24


def within_hours(hour: int, start: int, end: int) -> bool:
    """Whether local `hour` (0-23) lies in [start, end); a span may wrap past midnight
    (22 -> 2 is 22, 23, 0, 1), and start == end is empty."""
    if start <= end:
        return start <= hour < end
    return hour >= start or hour < end


def time_of_day_factor(ts: int, policy: RankingPolicy) -> float:
    """`evening_peak_boost` inside the evening impulse peak [start, end) local hours, else 1.0."""
    hour = local_hour(ts, policy.tz_offset_minutes)
    if within_hours(hour, policy.evening_peak_start_hour, policy.evening_peak_end_hour):
        return policy.evening_peak_boost
    return 1.0


def stock_factor(stock: int) -> float:
    """0.5 for the last unit up to 1.0 at STOCK_SATURATION units: a prompt should not sell out."""
    return 0.5 + 0.5 * min(stock, STOCK_SATURATION) / STOCK_SATURATION


def score_product(
    product: Product,
    affinity: Affinity,
    ts: int,
    creator_weight: float,
    policy: RankingPolicy,
    level: Level | None = None,
) -> float:
    """Score of offering `product` to a user with `affinity` for a like at `ts` (epoch ms).

    score = creator_weight x (1 + 2 x share) x stock_factor x time_of_day_factor, where share is
    the user's decayed interest in the product's category over (1 + all interest), in [0, 1);
    times `price_fit(level, price_cents)` in [0.5, 1] when the user's consumption `level` is
    known (docs/profile.md: it changes which product is offered, never its price).
    Rounded to 6 decimals so the value written to Kafka is stable across replays.
    """
    half_life = policy.affinity_half_life_ms
    share = score_at(affinity, product.category, ts, half_life) / (1.0 + total_at(affinity, ts, half_life))
    raw = creator_weight * (1.0 + 2.0 * share) * stock_factor(product.stock) * time_of_day_factor(ts, policy)
    if level is not None:
        raw *= price_fit(level, product.price_cents)
    return round(raw, 6)


def rank(
    products: list[Product],
    affinity: Affinity,
    ts: int,
    creator_weight: float,
    policy: RankingPolicy,
    current: dict[str, float] | None = None,
    level: Level | None = None,
) -> list[tuple[float, Product]]:
    """Products best first; ties go to the lower price, then the smaller product_id.

    The same scores as `score_product` for each (`level`: the user's consumption level, None
    when unknown or not to be used): the profile's scores at `ts` (`current`, from
    `affinity.scores_at`, if the caller has them), their total and the time-of-day factor depend
    only on the like, so they are computed once.
    """
    if current is None:
        current = scores_at(affinity, ts, policy.affinity_half_life_ms)
    denominator = 1.0 + sum(current.values())
    time_factor = time_of_day_factor(ts, policy)
    scored = []
    for p in products:
        share = current.get(p.category, 0.0) / denominator
        raw = creator_weight * (1.0 + 2.0 * share) * stock_factor(p.stock) * time_factor
        if level is not None:
            raw *= price_fit(level, p.price_cents)
        scored.append((round(raw, 6), p))
    if len(scored) > 1:
        scored.sort(key=_rank_key)
    return scored


def _rank_key(scored: tuple[float, Product]) -> tuple[float, int, str]:
    return (-scored[0], scored[1].price_cents, scored[1].product_id)
