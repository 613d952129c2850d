"""The offer copy: templates as the contract fixes them, no doubled 同款, the user's interest named."""

from __future__ import annotations

import pytest

from likeflow.domain.copy import INTEREST_MIN_STRENGTH, matched_interest, offer_text
from likeflow.domain.decide import Emit
from likeflow.domain.user_state import ConsentState, UserState
from streams.events import Offer
from tests.factories import BASE_TS, decided, like, mapping, product

# The copy every existing prompt has: byte for byte what earlier versions wrote.
GOLDEN = [
    ("zh", "order", "碎花连衣裙", 12900, "同款 碎花连衣裙 ¥129.00，一键下单"),
    ("zh", "booking", "SPA 护理", 19990, "SPA 护理 ¥199.90，一键预约"),
    ("zh", "trial", "面霜小样", 0, "面霜小样 ¥0.00，一键申领试用"),
    ("en", "order", "Same dress", 12900, "Get Same dress for ¥129.00, one tap to order"),
    ("en", "booking", "Spa", 19990, "Book Spa for ¥199.90 in one tap"),
    ("en", "trial", "Cream", 5, "Try Cream for ¥0.05 in one tap"),
]


@pytest.mark.parametrize(("language", "offer", "title", "price", "text"), GOLDEN)
def test_the_templates_are_unchanged(language: str, offer: Offer, title: str, price: int, text: str) -> None:
    assert offer_text(language, offer, title, price) == text
    assert offer_text(language, offer, title, price, None) == text
    assert offer_text(language, offer, title, price, "no-label-category") == text


@pytest.mark.parametrize(
    ("title", "text"),
    [
        ("同款 外套", "同款 外套 ¥99.00，一键下单"),
        ("同款外套", "同款外套 ¥99.00，一键下单"),
        ("同款", "同款 ¥99.00，一键下单"),
        ("外套 同款", "同款 外套 同款 ¥99.00，一键下单"),  # only a title that begins with it
    ],
)
def test_a_title_that_begins_with_tongkuan_is_not_doubled(title: str, text: str) -> None:
    assert offer_text("zh", "order", title, 9900) == text
    assert "同款 同款" not in offer_text("zh", "order", title, 9900)


def test_templates_without_the_lead_word_keep_the_title_as_it_is() -> None:
    assert offer_text("zh", "booking", "同款 发型", 9900) == "同款 发型 ¥99.00，一键预约"
    assert offer_text("en", "order", "同款 coat", 9900) == "Get 同款 coat for ¥99.00, one tap to order"


def test_the_interest_is_named_after_the_offer_when_it_has_a_label() -> None:
    assert (
        offer_text("zh", "order", "不粘炒锅", 12900, "cookware")
        == "同款 不粘炒锅 ¥129.00，一键下单 · 你常看的厨房好物"
    )
    assert offer_text("en", "order", "Wok", 12900, "cookware") == (
        "Get Wok for ¥129.00, one tap to order · from the kitchenware you watch"
    )


def test_an_interest_is_the_strongest_category_worth_two_likes() -> None:
    strong = INTEREST_MIN_STRENGTH
    assert matched_interest("cookware", {}) is None
    assert matched_interest("cookware", {"cookware": strong - 0.01}) is None
    assert matched_interest("cookware", {"cookware": strong}) == "cookware"
    assert matched_interest("cookware", {"cookware": strong, "dress": strong + 1}) is None
    assert matched_interest("cookware", {"cookware": 3.0, "dress": 3.0}) == "cookware", "a tie names either"
    assert matched_interest("snacks", {"cookware": 5.0}) is None


def likes_of(state: UserState, n: int, category: str = "cookware") -> Emit:
    """`n` likes of the user on videos of `category`, a minute apart; the last decision."""
    decision = None
    for i in range(n):
        mp = mapping(f"v{i}", product(f"p{i}", title=f"锅 {i}", category=category))
        decision = decided(state, like(f"e{i}", video_id=f"v{i}", ts=BASE_TS + i * 60_000), mp)
    assert isinstance(decision, Emit)
    return decision


def test_the_third_like_in_a_category_names_it_same_price_for_everyone() -> None:
    assert likes_of(UserState(), 2).prompt.text == "同款 锅 1 ¥129.00，一键下单"
    named = likes_of(UserState(), 3).prompt
    assert named.text == "同款 锅 2 ¥129.00，一键下单 · 你常看的厨房好物"
    # A user who refused personalisation gets the plain copy, and the same price.
    private = UserState(consent=ConsentState(prompts=True, personalized=False, ts=BASE_TS - 1))
    plain = likes_of(private, 3).prompt
    assert plain.text == "同款 锅 2 ¥129.00，一键下单"
    assert plain.price_cents == named.price_cents
    # Deterministic: the same likes give the same copy.
    assert likes_of(UserState(), 3).prompt.text == named.text
