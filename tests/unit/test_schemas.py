"""schemas/ is what the event classes generate, and agrees with the decoders record by record."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from streams.events import FEEDBACK_KINDS, DeadLetterReason, Invalid
from streams.schemas import RULES_BEYOND_SCHEMA, schemas
from streams.validation import decode_consent, decode_erasure, decode_feedback, decode_like, decode_mapping
from tests.factories import LIMITS

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_795_000_000_000
DECODERS: dict[str, tuple[Any, str]] = {
    "likes": (decode_like, "user_id"),
    "video-products": (decode_mapping, "video_id"),
    "user-consent": (decode_consent, "user_id"),
    "user-erasure": (decode_erasure, "user_id"),
    "prompt-feedback": (decode_feedback, "creator_id"),
}


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(schemas()[name])


def test_the_shipped_schemas_are_the_generated_ones() -> None:
    shipped = {p.stem: orjson.loads(p.read_bytes()) for p in (ROOT / "schemas").glob("*.json")}
    assert shipped == schemas(), "schemas/ is stale: run `make docs`"
    for schema in shipped.values():
        Draft202012Validator.check_schema(schema)


def doc_examples() -> list[tuple[str, dict[str, Any]]]:
    """The ```json examples of docs/events.md, with the topic of the section they are in."""
    text = (ROOT / "docs/events.md").read_text()
    out: list[tuple[str, dict[str, Any]]] = []
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        topic = re.match(r"`([a-z-]+)`", section)
        if topic and topic[1] in schemas():
            blocks = re.findall(r"```json\n(.*?)```", section, flags=re.S)
            out.extend((topic[1], orjson.loads(block)) for block in blocks if "..." not in block)
    return out


@pytest.mark.parametrize(("topic", "example"), doc_examples())
def test_every_example_in_the_docs_is_valid(topic: str, example: dict[str, Any]) -> None:
    validator(topic).validate(example)


def test_the_docs_have_an_example_for_most_topics() -> None:
    assert {t for t, _ in doc_examples()} >= {"likes", "video-products", "user-consent", "user-erasure"}


def like(**changes: Any) -> dict[str, Any]:
    return {"event_id": "e1", "user_id": "u1", "video_id": "v1", "ts": NOW, **changes}


# One record per reason the schema covers, for each decoder's rules; the reason is the decoder's.
def feedback(**changes: Any) -> dict[str, Any]:
    base = {"event_id": "f", "prompt_id": "p", "creator_id": "c1", "product_id": "x", "user_id": "u"}
    return {**base, "ts": NOW, **changes}


def mapping(**product: Any) -> dict[str, Any]:
    item = {"product_id": "p", "title": "t", "category": "c", "price_cents": 5, "certified": True, "stock": 1}
    return {"video_id": "v1", "creator_id": "c", "ts": NOW, "products": [{**item, **product}]}


BREAKING: list[tuple[str, dict[str, Any] | list[Any], DeadLetterReason]] = [
    ("likes", ["not", "an", "object"], DeadLetterReason.NOT_AN_OBJECT),
    ("likes", {k: v for k, v in like().items() if k != "video_id"}, DeadLetterReason.MISSING_FIELD),
    ("likes", like(ts="soon"), DeadLetterReason.WRONG_TYPE),
    ("likes", like(ts=NOW // 1000), DeadLetterReason.INVALID_VALUE),
    ("likes", like(event_id="x" * 129), DeadLetterReason.INVALID_VALUE),
    ("likes", like(event_id="   "), DeadLetterReason.INVALID_VALUE),
    ("likes", like(action="superlike"), DeadLetterReason.UNKNOWN_ENUM),
    (
        "user-consent",
        {"user_id": "u1", "prompts": "yes", "personalized": True, "ts": NOW},
        DeadLetterReason.WRONG_TYPE,
    ),
    ("user-erasure", {"user_id": "u1"}, DeadLetterReason.MISSING_FIELD),
    ("prompt-feedback", feedback(kind="return", amount_cents=5), DeadLetterReason.INVALID_VALUE),
    ("prompt-feedback", feedback(kind="order"), DeadLetterReason.MISSING_FIELD),
    ("video-products", mapping(price_cents=0), DeadLetterReason.INVALID_VALUE),
    ("video-products", mapping(offer="free"), DeadLetterReason.UNKNOWN_ENUM),
]


def key_of(topic: str, value: Any) -> bytes:
    field = DECODERS[topic][1]
    return str(value.get(field, "k")).encode() if isinstance(value, dict) else b"k"


@pytest.mark.parametrize(("topic", "value", "reason"), BREAKING)
def test_a_record_the_decoder_refuses_for_a_schema_rule_breaks_the_schema(
    topic: str, value: Any, reason: DeadLetterReason
) -> None:
    decoded = DECODERS[topic][0](key_of(topic, value), orjson.dumps(value), LIMITS)
    assert isinstance(decoded, Invalid) and decoded.reason == reason, decoded
    assert not validator(topic).is_valid(value)


def test_every_dead_letter_reason_is_a_schema_rule_or_documented_beyond_it() -> None:
    covered = {reason for _, _, reason in BREAKING} | set(RULES_BEYOND_SCHEMA)
    assert covered == set(DeadLetterReason)


# Printable ids and times up to the clock's ceiling: the decoders' rules beyond the schemas
# (RULES_BEYOND_SCHEMA: unprintable characters, future_ts) are tested in test_validation.py.
ids = st.text(min_size=0, max_size=130).filter(str.isprintable)
values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**60), 2**60), st.text(max_size=5).filter(str.isprintable)
)


@settings(max_examples=300, deadline=None)
@given(
    event_id=st.one_of(ids, values),
    user_id=st.one_of(ids, values),
    ts=st.one_of(st.integers(0, LIMITS.max_ts), values),
    action=st.one_of(st.sampled_from(["like", "unlike", "boost"]), st.none()),
    drop=st.sets(st.sampled_from(["event_id", "user_id", "video_id", "ts", "action"])),
)
def test_the_like_decoder_and_schema_agree(
    event_id: Any, user_id: Any, ts: Any, action: Any, drop: set[str]
) -> None:
    record = {"event_id": event_id, "user_id": user_id, "video_id": "v1", "ts": ts, "action": action}
    record = {k: v for k, v in record.items() if k not in drop}
    key = user_id.encode("utf-8", "surrogatepass") if isinstance(user_id, str) else b"k"
    if isinstance(user_id, str) and user_id.strip() != user_id.strip(" \t\n\r\x0b\x0c"):
        return  # Unicode-only whitespace: Python's strip and the schema's \S differ on it
    try:
        encoded = orjson.dumps(record)
    except TypeError:
        return
    result = decode_like(key, encoded, LIMITS)
    if isinstance(result, Invalid) and result.reason is DeadLetterReason.FUTURE_TS:
        assert record["ts"] > LIMITS.max_ts  # beyond the schema: the worker's clock
        return
    assert (not isinstance(result, Invalid)) == validator("likes").is_valid(record), record


_NO_AMOUNT = object()


@pytest.mark.parametrize("kind", FEEDBACK_KINDS)
@pytest.mark.parametrize("amount", [_NO_AMOUNT, None, 0, 8800, -1, LIMITS.max_order_cents + 1, 1.5])
def test_the_feedback_decoder_and_schema_agree_on_every_kind_s_amount(kind: str, amount: Any) -> None:
    """Orders must carry an amount, bookings may, the other kinds carry none (or 0)."""
    record = feedback(kind=kind) if amount is _NO_AMOUNT else feedback(kind=kind, amount_cents=amount)
    result = decode_feedback(b"c1", orjson.dumps(record), LIMITS)
    assert (not isinstance(result, Invalid)) == validator("prompt-feedback").is_valid(record), (
        record,
        result,
    )
