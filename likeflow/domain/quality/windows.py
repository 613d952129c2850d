"""Tumbling event-time windows of per-creator counts, and the rates derived from them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from streams.events import PRICED_KINDS, CreatorEventKind

# New fields go where they read best: the JSON is an object, and a window or row written before
# a field existed reads it as 0 (`Counts.from_dict`, and `.get(f, 0)` wherever rows are read).
COUNT_FIELDS = (
    "likes",
    "prompts",
    "clicks",
    "orders",
    "bookings",
    "trials",
    "returns",
    "cancellations",
    "no_shows",
    "complaints",
    "gmv_cents",
)
#: The count field each creator event kind adds to.
FIELD_OF_KIND: dict[str, str] = {
    "like": "likes",
    "prompt": "prompts",
    "click": "clicks",
    "order": "orders",
    "booking": "bookings",
    "trial": "trials",
    "return": "returns",
    "cancellation": "cancellations",
    "no_show": "no_shows",
    "complaint": "complaints",
}


def window_start(ts: int, size_ms: int) -> int:
    """Start (epoch ms) of the tumbling window [start, start + size) that holds `ts`."""
    return ts - ts % size_ms


@dataclass(slots=True)
class Counts:
    """Counts of one creator (or the platform) over one window or a span of windows.

    `likes` are the likes on the creator's videos that the job decided (prompted or not; not
    counted: likes of users who turned prompts off or were erased, likes beyond the dedupe
    horizon, rate-limited likes); `prompts` are the effective likes, those that got a prompt.
    Feedback: `orders`, `bookings` and `trials` are the offers taken (`conversions`), `returns`,
    `cancellations` and `no_shows` those undone (`undone`); `gmv_cents` sums the amounts of
    orders and bookings (gross: an undoing subtracts nothing).
    """

    likes: int = 0
    prompts: int = 0
    clicks: int = 0
    orders: int = 0
    bookings: int = 0
    trials: int = 0
    returns: int = 0
    cancellations: int = 0
    no_shows: int = 0
    complaints: int = 0
    gmv_cents: int = 0

    @property
    def conversions(self) -> int:
        """Offers taken: orders, bookings made and trials claimed."""
        return self.orders + self.bookings + self.trials

    @property
    def undone(self) -> int:
        """Offers taken and then undone: returns, cancellations and no-shows."""
        return self.returns + self.cancellations + self.no_shows

    def add_event(self, kind: CreatorEventKind, amount_cents: int) -> None:
        """Count one event; orders and bookings also add their amount to `gmv_cents`."""
        field = FIELD_OF_KIND[kind]
        setattr(self, field, getattr(self, field) + 1)
        if kind in PRICED_KINDS:
            self.gmv_cents += amount_cents

    def add(self, other: Counts) -> None:
        """Add another window's counts, in place."""
        for field in COUNT_FIELDS:
            setattr(self, field, getattr(self, field) + getattr(other, field))

    def to_dict(self) -> dict[str, int]:
        """JSON-ready counts, in COUNT_FIELDS order."""
        return {
            "likes": self.likes,
            "prompts": self.prompts,
            "clicks": self.clicks,
            "orders": self.orders,
            "bookings": self.bookings,
            "trials": self.trials,
            "returns": self.returns,
            "cancellations": self.cancellations,
            "no_shows": self.no_shows,
            "complaints": self.complaints,
            "gmv_cents": self.gmv_cents,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Counts:
        """Rebuild from `to_dict()` output (extra keys are ignored)."""
        return cls(**{f: int(data.get(f, 0)) for f in COUNT_FIELDS})


def total(counts: Iterable[Counts]) -> Counts:
    """Sum of several windows."""
    out = Counts()
    for c in counts:
        out.add(c)
    return out


def ratio(numerator: int, denominator: int) -> float | None:
    """numerator / denominator, or None (JSON null) when the denominator is 0."""
    return numerator / denominator if denominator else None


def business(c: Counts) -> dict[str, float | int | None]:
    """The figures the seed judges the model by: likes, effective likes (those that got a
    prompt) and their share, GMV (yuan) per 10,000 likes and per 10,000 effective likes."""
    gmv_yuan = c.gmv_cents / 100
    return {
        "likes": c.likes,
        "effective_likes": c.prompts,
        "effective_like_share": ratio(c.prompts, c.likes),
        "gmv_yuan": gmv_yuan,
        "gmv_yuan_per_10k_likes": None if not c.likes else gmv_yuan * 10_000 / c.likes,
        "gmv_yuan_per_10k_effective_likes": None if not c.prompts else gmv_yuan * 10_000 / c.prompts,
    }


def rates(c: Counts) -> dict[str, float | None]:
    """ctr = clicks/prompts; conversion = conversions (orders, bookings, trials) per click;
    return_rate = undone (returns, cancellations, no-shows) per conversion; complaint_rate =
    complaints per conversion. With orders alone these are the order rates they always were."""
    conversions = c.conversions
    return {
        "ctr": ratio(c.clicks, c.prompts),
        "conversion": ratio(conversions, c.clicks),
        "return_rate": ratio(c.undone, conversions),
        "complaint_rate": ratio(c.complaints, conversions),
    }
