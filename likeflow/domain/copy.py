"""One-line offer copy shown next to the like button, from templates (Chinese by default)."""

from __future__ import annotations

import functools

from streams.events import Offer

TEMPLATES: dict[str, dict[Offer, str]] = {
    "zh": {
        "order": "同款 {title} ¥{price}，一键下单",
        "booking": "{title} ¥{price}，一键预约",
        "trial": "{title} ¥{price}，一键申领试用",
    },
    "en": {
        "order": "Get {title} for ¥{price}, one tap to order",
        "booking": "Book {title} for ¥{price} in one tap",
        "trial": "Try {title} for ¥{price} in one tap",
    },
}


def format_price(price_cents: int) -> str:
    """Yuan with two decimals: 12900 -> '129.00'."""
    return f"{price_cents // 100}.{price_cents % 100:02d}"


@functools.lru_cache(maxsize=65_536)
def offer_text(language: str, offer: Offer, title: str, price_cents: int) -> str:
    """The prompt's `text` for `language` ('zh' or 'en'). Cached: a catalogue's products are
    offered again and again at the same few prices."""
    return TEMPLATES[language][offer].format(title=title, price=format_price(price_cents))
