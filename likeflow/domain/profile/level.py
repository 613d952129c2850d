"""The user's consumption level from their own orders' prices, and the ranking's price fit."""

from __future__ import annotations

import math
from dataclasses import dataclass

from likeflow.domain.affinity import Affinity, add_like, scores_at

DAY_MS = 24 * 3_600_000
# Orders are counted per price bucket with exponential decay: an order from 30 days ago weighs
# half one from today. (A user's state expires 30 days after their last activity anyway.)
ORDER_HALF_LIFE_MS = 30 * DAY_MS
# Lower bounds of the price buckets, in yuan; a bucket runs to the next bound. The bucket key
# in `UserState.price_bands` is its lower bound as text ("50" holds orders from ¥50 to ¥99.99).
BUCKET_YUAN: tuple[int, ...] = (0, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000)
# Where the typical price is interpolated within the first and last buckets (cents): a typical
# price is never below ¥1 nor above ¥20,000 (a user above it is 高端 all the same).
_FIRST_LOW_CENTS = 100
_LAST_HIGH_CENTS = 2_000_000
# Decayed orders needed to name a level: one order within the last half-life (30 days).
MIN_ORDERS = 0.5


@dataclass(frozen=True, slots=True)
class Band:
    """A documented consumption level: its name, a code for machines, and its price range
    [low_cents, high_cents) (high None: no upper bound)."""

    name: str
    code: str
    low_cents: int
    high_cents: int | None


LEVEL_BANDS: tuple[Band, ...] = (
    Band("入门", "entry", 0, 5_000),
    Band("大众", "mass", 5_000, 20_000),
    Band("品质", "quality", 20_000, 100_000),
    Band("高端", "premium", 100_000, None),
)

# Price fit (a ranking multiplier): 1.0 for a product within FIT_TOLERANCE_OCTAVES (a factor
# of 2) of the user's typical price; beyond it, halved every FIT_HALVING_OCTAVES (a factor of
# 4) further, never below FIT_FLOOR (reached at 8x or 1/8 of the typical price).
FIT_TOLERANCE_OCTAVES = 1.0
FIT_HALVING_OCTAVES = 2.0
FIT_FLOOR = 0.5


@dataclass(frozen=True, slots=True)
class Level:
    """The user's consumption level: the band their typical order price (`typical_cents`, a
    decayed median) falls in, and `orders`, the decayed number of orders it rests on.
    Used to rank products (`price_fit`), never to set a price."""

    band: Band
    typical_cents: int
    orders: float

    @property
    def name(self) -> str:
        """The band's name: 入门, 大众, 品质 or 高端."""
        return self.band.name


def bucket_of(amount_cents: int) -> str:
    """The `price_bands` key of an order of `amount_cents`: its bucket's lower bound in yuan."""
    key = BUCKET_YUAN[0]
    for low in BUCKET_YUAN:
        if amount_cents >= low * 100:
            key = low
    return str(key)


def add_order(bands: Affinity, amount_cents: int, ts: int) -> bool:
    """Count the user's order of `amount_cents` at `ts` (epoch ms) into `bands`, in place; a
    free order (0 cents) says nothing about price and is not counted (False). Order-independent,
    as the affinity it shares its arithmetic with."""
    if amount_cents <= 0:
        return False
    add_like(bands, (bucket_of(amount_cents),), ts, ORDER_HALF_LIFE_MS)
    return True


def band_of(price_cents: int) -> Band:
    """The level band holding `price_cents`."""
    for band in LEVEL_BANDS:
        if band.high_cents is None or price_cents < band.high_cents:
            return band
    return LEVEL_BANDS[-1]  # pragma: no cover - the last band has no upper bound


def consumption_level(bands: Affinity, now_ms: int) -> Level | None:
    """The user's level at `now_ms` (epoch ms) from their decayed order counts, or None with
    fewer than MIN_ORDERS decayed orders.

    The typical price is the weighted median of the orders' prices, read from the buckets:
    the bucket where half the decayed weight is reached, interpolated geometrically within it
    (one order of ¥100-199.99 gives ¥141.42). Never used to set a price.
    """
    if not bands:
        return None
    scores = scores_at(bands, now_ms, ORDER_HALF_LIFE_MS)
    weights = [scores.get(str(low), 0.0) for low in BUCKET_YUAN]
    total = sum(weights)
    if total < MIN_ORDERS:
        return None
    half, below = total / 2.0, 0.0
    index = len(weights) - 1
    for i, weight in enumerate(weights):
        if weight > 0.0 and below + weight >= half:
            index = i
            break
        below += weight
    fraction = min(max((half - below) / weights[index], 0.0), 1.0) if weights[index] > 0 else 0.5
    low = max(BUCKET_YUAN[index] * 100, _FIRST_LOW_CENTS)
    high = BUCKET_YUAN[index + 1] * 100 if index + 1 < len(BUCKET_YUAN) else _LAST_HIGH_CENTS
    typical = round(low * (high / low) ** fraction)
    return Level(band_of(typical), typical, total)


def price_fit(level: Level, price_cents: int) -> float:
    """How well a product at `price_cents` fits the user's typical price, in [FIT_FLOOR, 1]:
    1.0 from half to double the typical price, then halved every further factor of 4, never
    below 0.5 (8x or 1/8 of it and beyond). Symmetric: a product far cheaper than usual fits as
    little as one far dearer. A ranking multiplier only: the price is never set from it."""
    octaves = abs(math.log2(max(price_cents, 1) / level.typical_cents))
    if octaves <= FIT_TOLERANCE_OCTAVES:
        return 1.0
    fit: float = 2.0 ** (-(octaves - FIT_TOLERANCE_OCTAVES) / FIT_HALVING_OCTAVES)
    return max(FIT_FLOOR, fit)
