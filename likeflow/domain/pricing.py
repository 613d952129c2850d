"""Fair pricing: the price of an offer depends on the product and the moment, never on the user."""

from __future__ import annotations

from dataclasses import dataclass

from likeflow.domain.ranking import local_hour, within_hours
from streams.events import Product


@dataclass(frozen=True, slots=True)
class PricePolicy:
    """A time-of-day campaign open to everyone alike: `discount_pct` off in [start, end) local
    hours (may wrap past midnight)."""

    discount_pct: int = 0
    start_hour: int = 0
    end_hour: int = 0
    tz_offset_minutes: int = 480


def campaign_active(at_ms: int, policy: PricePolicy) -> bool:
    """True when the campaign runs at epoch-ms `at_ms` (local hours of the audience)."""
    if policy.discount_pct <= 0:
        return False
    hour = local_hour(at_ms, policy.tz_offset_minutes)
    return within_hours(hour, policy.start_hour, policy.end_hour)


def offer_price(product: Product, at_ms: int, policy: PricePolicy) -> int:
    """The price in cents everyone sees for `product` at epoch-ms `at_ms`.

    The merchant's `price_cents`, or during a campaign that price less `discount_pct` (rounded
    down to the cent), never below the merchant's floor `min_price_cents`. The signature has no
    user in it on purpose: personal data can change which product is offered, never its price.
    """
    if not campaign_active(at_ms, policy):
        return product.price_cents
    discounted = product.price_cents * (100 - policy.discount_pct) // 100
    return max(discounted, product.floor_price_cents)
