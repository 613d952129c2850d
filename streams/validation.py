"""Decoders for contract v1: raw Kafka bytes in, a valid event or an `Invalid` (errors as data) out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from streams.events import (
    ACTIONS,
    FEEDBACK_KINDS,
    OFFERS,
    CreatorEvent,
    DeadLetterReason,
    Invalid,
    Like,
    MappingRemoval,
    Product,
    UserConsent,
    UserErasure,
    VideoMapping,
)

R = DeadLetterReason
T = TypeVar("T")

MAX_ID_CHARS = 128
MAX_TITLE_CHARS = 256
MAX_CATEGORY_CHARS = 64
MAX_PRODUCTS = 50
# Epoch-ms bounds: below 1e11 is 1973, almost surely a seconds timestamp; above is year 9999.
MIN_TS_MS = 100_000_000_000
MAX_TS_MS = 253_402_300_799_999
MAX_INT = 2**53  # integers above this lose precision in JSON consumers written in JavaScript


class _FieldError(Exception):
    def __init__(self, reason: DeadLetterReason, error: str) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error


def _str(obj: dict[str, Any], name: str, max_chars: int, *, where: str = "") -> str:
    if name not in obj or obj[name] is None:
        raise _FieldError(R.MISSING_FIELD, f"{where}{name} is required")
    value = obj[name]
    if type(value) is not str:
        raise _FieldError(R.WRONG_TYPE, f"{where}{name} must be a string, got {_kind(value)}")
    if not value.strip():
        raise _FieldError(R.INVALID_VALUE, f"{where}{name} must not be empty")
    if len(value) > max_chars:
        raise _FieldError(R.INVALID_VALUE, f"{where}{name} is longer than {max_chars} characters")
    return value


def _int(obj: dict[str, Any], name: str, minimum: int, *, where: str = "") -> int:
    if name not in obj or obj[name] is None:
        raise _FieldError(R.MISSING_FIELD, f"{where}{name} is required")
    value = obj[name]
    # bool is an int subclass in Python; JSON true is not a number. A float (also what orjson
    # makes of an integer too large for 64 bits) is rejected too.
    if type(value) is not int:
        raise _FieldError(R.WRONG_TYPE, f"{where}{name} must be an integer, got {_kind(value)}")
    if value < minimum or value > MAX_INT:
        raise _FieldError(R.INVALID_VALUE, f"{where}{name} must be in [{minimum}, 2^53]")
    return value


def _ts(obj: dict[str, Any], *, where: str = "") -> int:
    ts = _int(obj, "ts", 0, where=where)
    if ts < MIN_TS_MS:
        raise _FieldError(R.INVALID_VALUE, f"{where}ts={ts} is not epoch milliseconds (seconds?)")
    if ts > MAX_TS_MS:
        raise _FieldError(R.INVALID_VALUE, f"{where}ts={ts} is after year 9999")
    return ts


def _bool(obj: dict[str, Any], name: str, *, where: str = "") -> bool:
    if name not in obj or obj[name] is None:
        raise _FieldError(R.MISSING_FIELD, f"{where}{name} is required")
    value = obj[name]
    if type(value) is not bool:
        raise _FieldError(R.WRONG_TYPE, f"{where}{name} must be true or false, got {_kind(value)}")
    return value


def _enum(obj: dict[str, Any], name: str, allowed: tuple[T, ...], default: T, where: str = "") -> T:
    value = obj.get(name)
    if value is None:
        return default
    if type(value) is not str:
        raise _FieldError(R.WRONG_TYPE, f"{where}{name} must be a string, got {_kind(value)}")
    for option in allowed:
        if value == option:
            return option
    shown = value[:32]
    raise _FieldError(R.UNKNOWN_ENUM, f"{where}{name}={shown!r} is not one of {list(allowed)}")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _load_object(value: bytes, max_bytes: int) -> dict[str, Any]:
    if len(value) > max_bytes:
        raise _FieldError(R.OVERSIZED, f"record is {len(value)} bytes, limit {max_bytes}")
    try:
        obj = orjson.loads(value)
    except (orjson.JSONDecodeError, RecursionError) as exc:
        # Covers invalid UTF-8, NaN/Infinity literals and numbers that overflow a double.
        raise _FieldError(R.MALFORMED_JSON, f"not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(obj, dict):
        raise _FieldError(R.NOT_AN_OBJECT, f"expected a JSON object, got {_kind(obj)}")
    return obj


def _key_text(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        raise _FieldError(R.KEY_MISMATCH, "record key is not valid UTF-8") from None


def _decode(build: Callable[[], T]) -> T | Invalid:
    try:
        return build()
    except _FieldError as exc:
        return Invalid(exc.reason, exc.error)


def decode_like(key: bytes | None, value: bytes | None, max_bytes: int) -> Like | Invalid:
    """Validate a `likes` record (key: user_id); never raises on bad input.

    The common well-formed like is accepted by a single pass of inline checks (the hot path of
    every worker); anything that fails one goes through `decode_like_checked`, which finds the
    reason. Both accept exactly the same records (tests/unit/test_validation.py).
    """
    if value is not None and key is not None and len(value) <= max_bytes:
        try:
            obj = orjson.loads(value)
        except (orjson.JSONDecodeError, RecursionError):
            obj = None
        if type(obj) is dict:
            event_id, user_id, video_id = obj.get("event_id"), obj.get("user_id"), obj.get("video_id")
            ts, action = obj.get("ts"), obj.get("action")
            if (
                type(event_id) is str
                and type(user_id) is str
                and type(video_id) is str
                and type(ts) is int
                and MIN_TS_MS <= ts <= MAX_TS_MS
                and (action is None or (type(action) is str and action in ACTIONS))
                and 0 < len(event_id) <= MAX_ID_CHARS
                and 0 < len(user_id) <= MAX_ID_CHARS
                and 0 < len(video_id) <= MAX_ID_CHARS
                and event_id.strip()
                and user_id.strip()
                and video_id.strip()
                and _key_equals(key, user_id)
            ):
                return Like(event_id, user_id, video_id, ts, action or "like")
    return decode_like_checked(key, value, max_bytes)


def _key_equals(key: bytes, text: str) -> bool:
    try:
        return key.decode("utf-8") == text
    except UnicodeDecodeError:
        return False


def decode_like_checked(key: bytes | None, value: bytes | None, max_bytes: int) -> Like | Invalid:
    """`decode_like` field by field: the first rule a record breaks is its dead-letter reason."""

    def build() -> Like:
        if value is None:
            raise _FieldError(R.MISSING_FIELD, "record value is null; a like must be a JSON object")
        obj = _load_object(value, max_bytes)
        like = Like(
            event_id=_str(obj, "event_id", MAX_ID_CHARS),
            user_id=_str(obj, "user_id", MAX_ID_CHARS),
            video_id=_str(obj, "video_id", MAX_ID_CHARS),
            ts=_ts(obj),
            action=_enum(obj, "action", ACTIONS, "like"),
        )
        _check_key(_key_text(key), like.user_id, "likes", "user_id")
        return like

    return _decode(build)


def decode_mapping(
    key: bytes | None, value: bytes | None, max_bytes: int
) -> VideoMapping | MappingRemoval | Invalid:
    """Validate a `video-products` record (key: video_id); null value or no products removes."""

    def build() -> VideoMapping | MappingRemoval:
        key_text = _key_text(key)
        if value is None:
            if not key_text:
                raise _FieldError(R.KEY_MISMATCH, "tombstone without a key: cannot tell which video")
            return MappingRemoval(video_id=key_text, ts=None)
        obj = _load_object(value, max_bytes)
        video_id = _str(obj, "video_id", MAX_ID_CHARS)
        creator_id = _str(obj, "creator_id", MAX_ID_CHARS)
        ts = _ts(obj)
        products = _products(obj)
        _check_key(key_text, video_id, "video-products", "video_id")
        if not products:
            return MappingRemoval(video_id=video_id, ts=ts)
        return VideoMapping(video_id, creator_id, ts, products)

    return _decode(build)


def _products(obj: dict[str, Any]) -> tuple[Product, ...]:
    raw = obj.get("products")
    if raw is None:
        raise _FieldError(R.MISSING_FIELD, "products is required (use [] to remove the mapping)")
    if type(raw) is not list:
        raise _FieldError(R.WRONG_TYPE, f"products must be a list, got {_kind(raw)}")
    if len(raw) > MAX_PRODUCTS:
        raise _FieldError(R.INVALID_VALUE, f"products has {len(raw)} entries, limit {MAX_PRODUCTS}")
    products: list[Product] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        where = f"products[{index}]."
        if type(item) is not dict:
            raise _FieldError(R.WRONG_TYPE, f"products[{index}] must be an object")
        product = Product(
            product_id=_str(item, "product_id", MAX_ID_CHARS, where=where),
            title=_str(item, "title", MAX_TITLE_CHARS, where=where),
            category=_str(item, "category", MAX_CATEGORY_CHARS, where=where),
            price_cents=_int(item, "price_cents", 1, where=where),
            certified=_bool(item, "certified", where=where),
            stock=_int(item, "stock", 0, where=where),
            offer=_enum(item, "offer", OFFERS, "order", where=where),
            min_price_cents=_optional_floor(item, where),
        )
        if product.product_id in seen:
            raise _FieldError(R.INVALID_VALUE, f"{where}product_id appears twice")
        seen.add(product.product_id)
        products.append(product)
    return tuple(products)


def _optional_floor(item: dict[str, Any], where: str) -> int | None:
    if item.get("min_price_cents") is None:
        return None
    floor = _int(item, "min_price_cents", 1, where=where)
    if floor > item["price_cents"]:
        raise _FieldError(R.INVALID_VALUE, f"{where}min_price_cents must not exceed price_cents")
    return floor


def _check_key(key_text: str | None, expected: str, topic: str, field: str) -> None:
    # Keys decide the partition, and the partition decides which worker holds the user's or
    # video's state: a record keyed differently from its payload would be joined or guarded
    # against the wrong state, so it is rejected rather than silently mis-processed.
    if key_text is None:
        raise _FieldError(R.KEY_MISMATCH, f"record key is missing; {topic} is keyed by {field}")
    if key_text != expected:
        raise _FieldError(R.KEY_MISMATCH, f"record key differs from {field}; {topic} is keyed by it")


def decode_feedback(key: bytes | None, value: bytes | None, max_bytes: int) -> CreatorEvent | Invalid:
    """Validate a `prompt-feedback` record (key: creator_id); never raises on bad input."""

    def build() -> CreatorEvent:
        if value is None:
            raise _FieldError(R.MISSING_FIELD, "record value is null; feedback must be a JSON object")
        obj = _load_object(value, max_bytes)
        kind = _enum(obj, "kind", FEEDBACK_KINDS, None)
        if kind is None:
            raise _FieldError(R.MISSING_FIELD, "kind is required")
        amount = 0
        if kind == "order":
            amount = _int(obj, "amount_cents", 0)
        elif obj.get("amount_cents") not in (None, 0):
            raise _FieldError(R.INVALID_VALUE, f"amount_cents is only for orders, not {kind}")
        event = CreatorEvent(
            event_id=_str(obj, "event_id", MAX_ID_CHARS),
            prompt_id=_str(obj, "prompt_id", MAX_ID_CHARS),
            creator_id=_str(obj, "creator_id", MAX_ID_CHARS),
            product_id=_str(obj, "product_id", MAX_ID_CHARS),
            user_id=_str(obj, "user_id", MAX_ID_CHARS),
            kind=kind,
            ts=_ts(obj),
            amount_cents=amount,
        )
        _check_key(_key_text(key), event.creator_id, "prompt-feedback", "creator_id")
        return event

    return _decode(build)


def decode_consent(key: bytes | None, value: bytes | None, max_bytes: int) -> UserConsent | Invalid:
    """Validate a `user-consent` record (key: user_id); never raises on bad input."""

    def build() -> UserConsent:
        if value is None:
            raise _FieldError(R.MISSING_FIELD, "record value is null; consent must be a JSON object")
        obj = _load_object(value, max_bytes)
        consent = UserConsent(
            user_id=_str(obj, "user_id", MAX_ID_CHARS),
            prompts=_bool(obj, "prompts"),
            personalized=_bool(obj, "personalized"),
            ts=_ts(obj),
        )
        _check_key(_key_text(key), consent.user_id, "user-consent", "user_id")
        return consent

    return _decode(build)


def decode_erasure(key: bytes | None, value: bytes | None, max_bytes: int) -> UserErasure | Invalid:
    """Validate a `user-erasure` record (key: user_id); never raises on bad input."""

    def build() -> UserErasure:
        if value is None:
            raise _FieldError(R.MISSING_FIELD, "record value is null; an erasure must be a JSON object")
        obj = _load_object(value, max_bytes)
        erasure = UserErasure(user_id=_str(obj, "user_id", MAX_ID_CHARS), ts=_ts(obj))
        _check_key(_key_text(key), erasure.user_id, "user-erasure", "user_id")
        return erasure

    return _decode(build)
