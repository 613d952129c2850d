"""examples/consumer.py's feedback: each offer's kinds are the contract's, and every record decodes."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from streams.events import FEEDBACK_KINDS, OFFERS, CreatorEvent
from streams.validation import decode_feedback
from tests.factories import BASE_TS, LIMITS

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "consumer.py"


def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("likeflow_consumer_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prompt(offer: str) -> dict[str, Any]:
    return {
        "prompt_id": "9a84" * 8,
        "creator_id": "c7",
        "product_id": "p1",
        "offer": offer,
        "price_cents": 12900,
    }


def test_every_offer_has_its_kinds_and_they_are_the_contract_s() -> None:
    kinds = example().FEEDBACK_KINDS
    assert set(kinds) == set(OFFERS)
    assert {k for per_offer in kinds.values() for k in per_offer.values()} | {"click", "complaint"} == set(
        FEEDBACK_KINDS
    )


@pytest.mark.parametrize("offer", OFFERS)
@pytest.mark.parametrize("outcome", ["click", "taken", "undone", "missed", "complaint"])
def test_the_example_s_feedback_decodes_as_the_kind_its_offer_calls_for(offer: str, outcome: str) -> None:
    module = example()
    if offer == "order" and outcome == "missed":
        with pytest.raises(ValueError, match="no 'missed' feedback"):
            module.feedback_for(prompt(offer), "u42", outcome, ts=BASE_TS, event_id="f1")
        return
    record = module.feedback_for(prompt(offer), "u42", outcome, ts=BASE_TS, event_id="f1")
    decoded = decode_feedback(b"c7", module.json.dumps(record).encode(), LIMITS)
    assert isinstance(decoded, CreatorEvent), decoded
    expected = outcome if outcome in ("click", "complaint") else module.FEEDBACK_KINDS[offer][outcome]
    assert decoded.kind == expected
    # An order's or booking's amount defaults to the prompt's price; a trial is free.
    assert decoded.amount_cents == (12900 if expected in ("order", "booking") else 0)


def test_the_button_marks_a_content_matched_product_and_reads_older_prompts_as_the_creators() -> None:
    text = {**prompt("order"), "text": "同款 连衣裙 ¥129.00，一键下单"}
    button = example().button_text
    assert button({**text, "source": "content"}).endswith("(similar item)")
    assert "(similar item)" not in button(text) + button({**text, "source": "creator"})
