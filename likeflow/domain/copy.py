"""One-line offer copy shown next to the like button, from templates (Chinese by default)."""

from __future__ import annotations

import functools
from collections.abc import Mapping

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
# A word a template puts before the title, left out when the title already begins with it
# ("同款 同款 外套" reads as a typo).
LEADS: dict[str, str] = {"zh": "同款"}

# The user's interest, named after the offer when the product's category is the one the user
# likes most. Only categories with a label here are named: a category is a catalogue id, not copy.
INTEREST_SUFFIX: dict[str, str] = {"zh": " · 你常看的{label}", "en": " · from the {label} you watch"}
INTEREST_LABELS: dict[str, dict[str, str]] = {
    "zh": {
        "cookware": "厨房好物",
        "dress": "裙装",
        "sneakers": "鞋履",
        "lipstick": "美妆",
        "earbuds": "数码好物",
        "snacks": "零食",
    },
    "en": {
        "cookware": "kitchenware",
        "dress": "dresses",
        "sneakers": "sneakers",
        "lipstick": "make-up",
        "earbuds": "audio gear",
        "snacks": "snacks",
    },
}
# Decayed likes of a category (affinity, half-life 7 days) before the copy calls it an interest:
# two likes within about the last three days, so the third like in a category names it.
INTEREST_MIN_STRENGTH = 1.5


def format_price(price_cents: int) -> str:
    """Yuan with two decimals: 12900 -> '129.00'."""
    return f"{price_cents // 100}.{price_cents % 100:02d}"


def matched_interest(category: str, current: Mapping[str, float]) -> str | None:
    """`category` when it is the user's strongest interest in `current` (the profile's decayed
    scores at the like, before it; empty without personalisation) and worth at least
    INTEREST_MIN_STRENGTH likes; else None. A pure function of the profile, so a replay names
    the same interest."""
    strength = current.get(category, 0.0)
    if strength < INTEREST_MIN_STRENGTH or strength < max(current.values()):
        return None
    return category


@functools.lru_cache(maxsize=65_536)
def offer_text(language: str, offer: Offer, title: str, price_cents: int, interest: str | None = None) -> str:
    """The prompt's `text` for `language` ('zh' or 'en'), naming the user's `interest` (a
    category, from `matched_interest`) when it has a label. The price is the one everyone sees.
    Cached: a catalogue's products are offered again and again at the same few prices."""
    template = TEMPLATES[language][offer]
    lead = LEADS.get(language)
    if lead and template.startswith(lead) and title.lstrip().startswith(lead):
        template = template[len(lead) :].lstrip()
    text = template.format(title=title, price=format_price(price_cents))
    label = INTEREST_LABELS.get(language, {}).get(interest or "")
    if label is not None:
        text += INTEREST_SUFFIX[language].format(label=label)
    return text
