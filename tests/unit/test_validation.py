"""Decoders turn any bytes into a valid event or a dead-letter reason, never an exception."""

from __future__ import annotations

import orjson
import pytest

from streams.events import CreatorEvent, Invalid, Like, MappingRemoval, VideoMapping
from streams.events import DeadLetterReason as R
from streams.validation import decode_feedback, decode_like, decode_mapping
from tests.factories import BASE_TS, LIMITS, like_json, mapping_json


def test_valid_like_defaults_action_to_like() -> None:
    assert decode_like(b"u1", like_json(), LIMITS) == Like("e1", "u1", "v1", BASE_TS, "like")


def test_unlike_is_valid() -> None:
    result = decode_like(b"u1", like_json(action="unlike"), LIMITS)
    assert isinstance(result, Like) and result.action == "unlike"


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    assert isinstance(decode_like(b"u1", like_json(extra={"a": 1}), LIMITS), Like)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"u1", b"{not json", R.MALFORMED_JSON),
        (b"u1", b"\xff\xfe\x00", R.MALFORMED_JSON),
        (b"u1", b'{"event_id":"e","user_id":"u1","video_id":"v","ts":NaN}', R.MALFORMED_JSON),
        (b"u1", b'{"event_id":"e","user_id":"u1","video_id":"v","ts":Infinity}', R.MALFORMED_JSON),
        (b"u1", b"[1, 2]", R.NOT_AN_OBJECT),
        (b"u1", b"null", R.NOT_AN_OBJECT),
        (b"u1", None, R.MISSING_FIELD),
        (b"u1", like_json(ts=None), R.MISSING_FIELD),
        (b"u1", orjson.dumps({"event_id": "e", "user_id": "u1", "ts": BASE_TS}), R.MISSING_FIELD),
        (b"u1", like_json(ts="1795000000000"), R.WRONG_TYPE),
        (b"u1", like_json(ts=True), R.WRONG_TYPE),
        (b"u1", like_json(ts=1.5e12), R.WRONG_TYPE),
        (
            b"u1",
            b'{"event_id":"e","user_id":"u1","video_id":"v","ts":' + b"9" * 5000 + b"}",
            R.MALFORMED_JSON,
        ),
        (
            b"u1",
            b'{"event_id":"e","user_id":"u1","video_id":"v","ts":99999999999999999999}',
            R.WRONG_TYPE,
        ),
        (b"u1", like_json(video_id=7), R.WRONG_TYPE),
        (b"u1", like_json(ts=1_795_000_000), R.INVALID_VALUE),
        (b"u1", like_json(ts=-5), R.INVALID_VALUE),
        (b"u1", like_json(video_id=""), R.INVALID_VALUE),
        (b"u1", like_json(video_id="v" * 129), R.INVALID_VALUE),
        (b"u1", like_json(action="love"), R.UNKNOWN_ENUM),
        (b"u1", like_json(action=1), R.WRONG_TYPE),
        (b"u2", like_json(), R.KEY_MISMATCH),
        (None, like_json(), R.KEY_MISMATCH),
        (b"\xff", like_json(), R.KEY_MISMATCH),
        (b"u1", b" " * (LIMITS.max_record_bytes + 1), R.OVERSIZED),
        (b"u1", b"[" * 10_000 + b"]" * 10_000, R.MALFORMED_JSON),
    ],
)
def test_bad_likes_get_a_reason(key: bytes | None, value: bytes | None, reason: R) -> None:
    result = decode_like(key, value, LIMITS)
    assert isinstance(result, Invalid), result
    assert result.reason == reason, result.error
    assert result.error


def test_deep_nesting_inside_an_object_is_rejected_not_crashed() -> None:
    value = b'{"event_id":"e","user_id":"u1","video_id":' + b"[" * 10_000 + b"]" * 10_000 + b',"ts":1}'
    result = decode_like(b"u1", value, LIMITS)
    assert isinstance(result, Invalid)


def test_valid_mapping() -> None:
    result = decode_mapping(b"v1", mapping_json(), LIMITS)
    assert isinstance(result, VideoMapping)
    assert result.products[0].offer == "order"
    assert result.products[0].eligible


def test_tombstone_removes_the_mapping() -> None:
    assert decode_mapping(b"v1", None, LIMITS) == MappingRemoval("v1", None)


def test_empty_product_list_removes_the_mapping_as_of_its_ts() -> None:
    assert decode_mapping(b"v1", mapping_json(products=[]), LIMITS) == MappingRemoval("v1", BASE_TS)


def _product(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "product_id": "p1",
        "title": "t",
        "category": "dress",
        "price_cents": 100,
        "certified": True,
        "stock": 1,
    }
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    ("key", "products", "reason"),
    [
        (b"v1", [_product(price_cents=0)], R.INVALID_VALUE),
        (b"v1", [_product(price_cents=-100)], R.INVALID_VALUE),
        (b"v1", [_product(stock=-1)], R.INVALID_VALUE),
        (b"v1", [_product(certified="yes")], R.WRONG_TYPE),
        (b"v1", [_product(offer="gift")], R.UNKNOWN_ENUM),
        (b"v1", [_product(), _product()], R.INVALID_VALUE),
        (b"v1", [_product(title="x" * 300)], R.INVALID_VALUE),
        (b"v1", ["p1"], R.WRONG_TYPE),
        (b"v1", [_product()] * 51, R.INVALID_VALUE),
        (b"v2", [_product()], R.KEY_MISMATCH),
        (None, None, R.KEY_MISMATCH),
    ],
)
def test_bad_mappings_get_a_reason(key: bytes | None, products: list[object] | None, reason: R) -> None:
    value = mapping_json(products=products) if products is not None else None  # type: ignore[arg-type]
    result = decode_mapping(key, value, LIMITS)
    assert isinstance(result, Invalid), result
    assert result.reason == reason, result.error


def test_mapping_without_products_field_is_missing_field() -> None:
    value = orjson.dumps({"video_id": "v1", "creator_id": "c1", "ts": BASE_TS})
    result = decode_mapping(b"v1", value, LIMITS)
    assert isinstance(result, Invalid) and result.reason == R.MISSING_FIELD


def test_error_message_names_the_field_and_position() -> None:
    result = decode_mapping(
        b"v1", mapping_json(products=[_product(), _product(stock="3", product_id="p2")]), LIMITS
    )
    assert isinstance(result, Invalid)
    assert "products[1].stock" in result.error


def feedback_json(**fields: object) -> bytes:
    body: dict[str, object] = {
        "event_id": "f1",
        "prompt_id": "p1",
        "creator_id": "c1",
        "product_id": "pr1",
        "user_id": "u1",
        "kind": "click",
        "ts": BASE_TS,
    }
    body.update(fields)
    return orjson.dumps(body)


def test_valid_feedback() -> None:
    result = decode_feedback(b"c1", feedback_json(kind="order", amount_cents=1999), LIMITS)
    assert isinstance(result, CreatorEvent) and result.amount_cents == 1999 and result.kind == "order"


@pytest.mark.parametrize(
    ("kind", "amount", "expected"),
    [
        ("booking", 8800, 8800),  # the booked value, counted into GMV
        ("booking", None, 0),  # a booking without a price (a free consultation)
        ("trial", None, 0),
        ("trial", 0, 0),
        ("cancellation", None, 0),
        ("no_show", 0, 0),
    ],
)
def test_booking_and_trial_feedback_and_their_undoing(kind: str, amount: int | None, expected: int) -> None:
    fields: dict[str, object] = {"kind": kind} if amount is None else {"kind": kind, "amount_cents": amount}
    result = decode_feedback(b"c1", feedback_json(**fields), LIMITS)
    assert isinstance(result, CreatorEvent) and (result.kind, result.amount_cents) == (kind, expected)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"c1", feedback_json(kind="like"), R.UNKNOWN_ENUM),
        (b"c1", feedback_json(kind="no-show"), R.UNKNOWN_ENUM),
        (b"c1", feedback_json(kind="trial", amount_cents=990), R.INVALID_VALUE),
        (b"c1", feedback_json(kind="cancellation", amount_cents=8800), R.INVALID_VALUE),
        (b"c1", feedback_json(kind="no_show", amount_cents=1), R.INVALID_VALUE),
        (b"c1", feedback_json(kind="booking", amount_cents=-1), R.INVALID_VALUE),
        (b"c1", feedback_json(kind="booking", amount_cents=LIMITS.max_order_cents + 1), R.INVALID_VALUE),
        (b"c1", feedback_json(kind="prompt"), R.UNKNOWN_ENUM),
        (b"c1", feedback_json(kind=None), R.MISSING_FIELD),
        (b"c1", feedback_json(kind="order"), R.MISSING_FIELD),
        (b"c1", feedback_json(kind="order", amount_cents=-1), R.INVALID_VALUE),
        (b"c1", feedback_json(amount_cents=5), R.INVALID_VALUE),
        (b"c2", feedback_json(), R.KEY_MISMATCH),
        (b"c1", feedback_json(prompt_id=""), R.INVALID_VALUE),
    ],
)
def test_bad_feedback_gets_a_reason(key: bytes, value: bytes, reason: R) -> None:
    result = decode_feedback(key, value, LIMITS)
    assert isinstance(result, Invalid) and result.reason == reason, result
