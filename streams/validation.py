"""Decoders for contract v1: raw Kafka bytes in, a valid event or an `Invalid` (errors as data) out."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import orjson

from streams.events import (
    ACTIONS,
    FEEDBACK_KINDS,
    OFFERS,
    PRICED_KINDS,
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

MAX_CATEGORY_CHARS = 64
# Epoch-ms bounds: below 1e11 is 1973, almost surely a seconds timestamp; above is year 9999.
MIN_TS_MS = 100_000_000_000
MAX_TS_MS = 253_402_300_799_999
MAX_INT = 2**53  # integers above this lose precision in JSON consumers written in JavaScript
# The longest watch time accepted (ms) on a like or an engagement: 24 h, more than any short
# video watched on a loop all night. Weights saturate long before it (docs/profile.md); above it a
# client is sending junk.
MAX_WATCH_MS = 86_400_000
# Ids that name Redis keys carry them as Redis Cluster hash tags (`{creator}`): a brace in one
# would move the tag, and with it the key's slot (likeflow/sinks/redis_keys.py).
HASH_TAG_CHARS = frozenset("{}")
# Characters no id or title may hold: controls (Cc), format characters (Cf: bidi overrides such as
# U+202E that reorder the text around them, zero-width spaces and joiners), lone surrogates (Cs)
# and the line and paragraph separators U+2028/U+2029 (Zl, Zp: a line break in a one-line offer).
# The zero-width joiner U+200D alone is allowed in titles, where it joins emoji sequences.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_EMOJI_JOINER = "\u200d"


@dataclass(frozen=True, slots=True)
class InputLimits:
    """What one input record may hold (settings with safe defaults; docs/security.md), and the
    newest event time accepted, `max_ts` (epoch ms): the worker's clock plus the allowed skew,
    fixed once per batch by `at`. A record stamped later is dead-lettered as `future_ts`, so no
    clock derived from records (retention, counter sources, mapping versions) passes it."""

    max_record_bytes: int = 65_536
    max_key_bytes: int = 512
    max_id_chars: int = 128
    max_title_chars: int = 256
    max_products: int = 50
    max_order_cents: int = 10_000_000
    max_skew_ms: int = 300_000
    max_ts: int = 0  # 0 until `at`: every ts is then in the future

    def at(self, now_ms: int) -> InputLimits:
        """These limits as of the wall clock `now_ms` (epoch ms)."""
        return replace(self, max_ts=min(now_ms + self.max_skew_ms, MAX_TS_MS))


class _FieldError(Exception):
    def __init__(self, reason: DeadLetterReason, error: str) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error


def _str(
    obj: dict[str, Any], name: str, max_chars: int, *, where: str = "", text: bool = False, tag: bool = False
) -> str:
    """A required, non-empty string field of at most `max_chars`: an id (printable characters
    only; with `tag`, no braces either), or with `text` a title or category (no control, format
    or surrogate characters)."""
    if name not in obj or obj[name] is None:
        raise _FieldError(R.MISSING_FIELD, f"{where}{name} is required")
    value = obj[name]
    if type(value) is not str:
        raise _FieldError(R.WRONG_TYPE, f"{where}{name} must be a string, got {_kind(value)}")
    if not value.strip():
        raise _FieldError(R.INVALID_VALUE, f"{where}{name} must not be empty")
    if len(value) > max_chars:
        raise _FieldError(R.INVALID_VALUE, f"{where}{name} is longer than {max_chars} characters")
    problem = text_problem(value) if text else id_problem(value, tag=tag)
    if problem:
        raise _FieldError(R.INVALID_VALUE, f"{where}{name} {problem}")
    return value


def id_problem(value: str, *, tag: bool = False) -> str | None:
    """Why `value` cannot be an id (None if it can): every character printable (no controls,
    format characters, surrogates, unassigned code points or separators other than the ASCII
    space); with `tag` (ids used as Redis hash tags) no brace either."""
    if value.isprintable():
        if tag and not HASH_TAG_CHARS.isdisjoint(value):
            return "must not contain '{' or '}' (it is a Redis Cluster hash tag)"
        return None
    for index, char in enumerate(value):
        if not char.isprintable():
            return f"has the unprintable character {_describe(char)} at {index}"
    return None  # pragma: no cover - isprintable() was False for some character


def text_problem(value: str) -> str | None:
    """Why `value` cannot be shown as a title (None if it can): a control, format (bidi override,
    zero-width), surrogate or line/paragraph separator character. Other scripts, emoji and the
    emoji joiner are text."""
    if value.isprintable():
        return None
    for index, char in enumerate(value):
        if char != _EMOJI_JOINER and unicodedata.category(char) in _REFUSED_CATEGORIES:
            return f"has the control, format or separator character {_describe(char)} at {index}"
    return None


def _describe(char: str) -> str:
    return f"U+{ord(char):04X} ({unicodedata.category(char)})"


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


def _ts(obj: dict[str, Any], limits: InputLimits, *, where: str = "") -> int:
    ts = _int(obj, "ts", 0, where=where)
    if ts < MIN_TS_MS:
        raise _FieldError(R.INVALID_VALUE, f"{where}ts={ts} is not epoch milliseconds (seconds?)")
    if ts > limits.max_ts:
        raise _FieldError(R.FUTURE_TS, future_error(ts, limits))
    return ts


def future_error(ts: int, limits: InputLimits) -> str:
    """The dead-letter error of a record stamped `ts`, beyond `limits.max_ts`."""
    now = limits.max_ts - limits.max_skew_ms
    return (
        f"ts={ts} is {(ts - now) / 1000:.0f} s ahead of the worker's clock; at most "
        f"{limits.max_skew_ms / 1000:.0f} s (LIKEFLOW_MAX_CLOCK_SKEW_S) are accepted"
    )


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


def watch_ms_problem(value: object) -> Invalid | None:
    """Why `value` cannot be a `watch_ms` (None if it can): it must be absent (null) or an
    integer (not a bool, not a float) in [0, MAX_WATCH_MS]."""
    if value is None:
        return None
    if type(value) is not int:
        return Invalid(R.WRONG_TYPE, f"watch_ms must be an integer, got {_kind(value)}")
    if not 0 <= value <= MAX_WATCH_MS:
        return Invalid(R.INVALID_VALUE, f"watch_ms={value} must be in [0, {MAX_WATCH_MS}] (24 h)")
    return None


def valid_watch_ms(value: object) -> int | None | Invalid:
    """The optional `watch_ms` of a like or an engagement, as decoded from JSON: None when
    absent or null, the integer (ms, 0 to MAX_WATCH_MS) when valid, else `Invalid` with the
    reason (`wrong_type`, `invalid_value`) and an error naming the field.

    `decode_like`'s fast path applies the same rule inline:
    `w is None or (type(w) is int and 0 <= w <= MAX_WATCH_MS)`."""
    problem = watch_ms_problem(value)
    if problem is not None:
        return problem
    return value if type(value) is int else None


def _watch_ms(obj: dict[str, Any]) -> int | None:
    watch_ms = valid_watch_ms(obj.get("watch_ms"))
    if isinstance(watch_ms, Invalid):
        raise _FieldError(watch_ms.reason, watch_ms.error)
    return watch_ms


def _load_object(value: bytes, limits: InputLimits) -> dict[str, Any]:
    if len(value) > limits.max_record_bytes:
        raise _FieldError(R.OVERSIZED, f"record is {len(value)} bytes, limit {limits.max_record_bytes}")
    try:
        obj = orjson.loads(value)
    except (orjson.JSONDecodeError, RecursionError) as exc:
        # Covers invalid UTF-8, NaN/Infinity literals and numbers that overflow a double.
        raise _FieldError(R.MALFORMED_JSON, f"not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(obj, dict):
        raise _FieldError(R.NOT_AN_OBJECT, f"expected a JSON object, got {_kind(obj)}")
    return obj


def _key_text(key: bytes | None, limits: InputLimits) -> str | None:
    if key is None:
        return None
    if len(key) > limits.max_key_bytes:
        raise _FieldError(R.OVERSIZED, f"record key is {len(key)} bytes, limit {limits.max_key_bytes}")
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        raise _FieldError(R.KEY_MISMATCH, "record key is not valid UTF-8") from None


def _decode(build: Callable[[], T]) -> T | Invalid:
    try:
        return build()
    except _FieldError as exc:
        return Invalid(exc.reason, exc.error)


def decode_like(key: bytes | None, value: bytes | None, limits: InputLimits) -> Like | Invalid:
    """Validate a `likes` record (key: user_id); never raises on bad input.

    The common well-formed like is accepted by a single pass of inline checks (the hot path of
    every worker); anything that fails one goes through `decode_like_checked`, which finds the
    reason. Both accept exactly the same records (tests/unit/test_validation.py).
    """
    if value is not None and key is not None and len(value) <= limits.max_record_bytes:
        try:
            obj = orjson.loads(value)
        except (orjson.JSONDecodeError, RecursionError):
            obj = None
        if type(obj) is dict:
            event_id, user_id, video_id = obj.get("event_id"), obj.get("user_id"), obj.get("video_id")
            ts, action, watch_ms = obj.get("ts"), obj.get("action"), obj.get("watch_ms")
            max_chars = limits.max_id_chars
            if (
                type(event_id) is str
                and type(user_id) is str
                and type(video_id) is str
                and type(ts) is int
                and MIN_TS_MS <= ts <= limits.max_ts
                and (action is None or (type(action) is str and action in ACTIONS))
                and (watch_ms is None or (type(watch_ms) is int and 0 <= watch_ms <= MAX_WATCH_MS))
                and 0 < len(event_id) <= max_chars
                and 0 < len(user_id) <= max_chars
                and 0 < len(video_id) <= max_chars
                and event_id.strip()
                and user_id.strip()
                and video_id.strip()
                and event_id.isprintable()
                and user_id.isprintable()
                and video_id.isprintable()
                and len(key) <= limits.max_key_bytes
                and _key_equals(key, user_id)
            ):
                return Like(event_id, user_id, video_id, ts, action or "like", watch_ms)
    return decode_like_checked(key, value, limits)


def _key_equals(key: bytes, text: str) -> bool:
    try:
        return key.decode("utf-8") == text
    except UnicodeDecodeError:
        return False


def decode_like_checked(key: bytes | None, value: bytes | None, limits: InputLimits) -> Like | Invalid:
    """`decode_like` field by field: the first rule a record breaks is its dead-letter reason."""

    def build() -> Like:
        key_text = _key_text(key, limits)
        if value is None:
            raise _FieldError(R.MISSING_FIELD, "record value is null; a like must be a JSON object")
        obj = _load_object(value, limits)
        ids = limits.max_id_chars
        like = Like(
            event_id=_str(obj, "event_id", ids),
            user_id=_str(obj, "user_id", ids),
            video_id=_str(obj, "video_id", ids),
            ts=_ts(obj, limits),
            action=_enum(obj, "action", ACTIONS, "like"),
            watch_ms=_watch_ms(obj),
        )
        _check_key(key_text, like.user_id, "likes", "user_id")
        return like

    return _decode(build)


def decode_mapping(
    key: bytes | None, value: bytes | None, limits: InputLimits
) -> VideoMapping | MappingRemoval | Invalid:
    """Validate a `video-products` record (key: video_id); null value or no products removes."""

    def build() -> VideoMapping | MappingRemoval:
        key_text = _key_text(key, limits)
        if value is None:
            if not key_text:
                raise _FieldError(R.KEY_MISMATCH, "tombstone without a key: cannot tell which video")
            return MappingRemoval(video_id=key_text, ts=None)
        obj = _load_object(value, limits)
        video_id = _str(obj, "video_id", limits.max_id_chars)
        creator_id = _str(obj, "creator_id", limits.max_id_chars, tag=True)
        ts = _ts(obj, limits)
        products = _products(obj, limits)
        _check_key(key_text, video_id, "video-products", "video_id")
        if not products:
            return MappingRemoval(video_id=video_id, ts=ts)
        return VideoMapping(video_id, creator_id, ts, products)

    return _decode(build)


def _products(obj: dict[str, Any], limits: InputLimits) -> tuple[Product, ...]:
    raw = obj.get("products")
    if raw is None:
        raise _FieldError(R.MISSING_FIELD, "products is required (use [] to remove the mapping)")
    if type(raw) is not list:
        raise _FieldError(R.WRONG_TYPE, f"products must be a list, got {_kind(raw)}")
    if len(raw) > limits.max_products:
        raise _FieldError(R.INVALID_VALUE, f"products has {len(raw)} entries, limit {limits.max_products}")
    products: list[Product] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        where = f"products[{index}]."
        if type(item) is not dict:
            raise _FieldError(R.WRONG_TYPE, f"products[{index}] must be an object")
        product = Product(
            product_id=_str(item, "product_id", limits.max_id_chars, where=where),
            title=_str(item, "title", limits.max_title_chars, where=where, text=True),
            category=_str(item, "category", MAX_CATEGORY_CHARS, where=where, text=True),
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


def decode_feedback(key: bytes | None, value: bytes | None, limits: InputLimits) -> CreatorEvent | Invalid:
    """Validate a `prompt-feedback` record (key: creator_id); never raises on bad input.

    Only the record's shape: whether likeflow issued its prompt is checked where the prompt key
    is (`likeflow.domain.prompt_ids`, in the feedback handler)."""

    def build() -> CreatorEvent:
        key_text = _key_text(key, limits)
        if value is None:
            raise _FieldError(R.MISSING_FIELD, "record value is null; feedback must be a JSON object")
        obj = _load_object(value, limits)
        kind = _enum(obj, "kind", FEEDBACK_KINDS, None)
        if kind is None:
            raise _FieldError(R.MISSING_FIELD, "kind is required")
        amount = 0
        if kind in PRICED_KINDS:
            # An order's amount (required); a booking's booked value (absent: 0, e.g. a free
            # consultation, or a booking paid on the day).
            amount = (
                0 if kind == "booking" and obj.get("amount_cents") is None else _int(obj, "amount_cents", 0)
            )
            if amount > limits.max_order_cents:
                raise _FieldError(
                    R.INVALID_VALUE,
                    f"amount_cents={amount} is above {limits.max_order_cents} (LIKEFLOW_MAX_ORDER_CENTS)",
                )
        elif obj.get("amount_cents") not in (None, 0):
            raise _FieldError(R.INVALID_VALUE, f"amount_cents is only for orders and bookings, not {kind}")
        ids = limits.max_id_chars
        event = CreatorEvent(
            event_id=_str(obj, "event_id", ids),
            prompt_id=_str(obj, "prompt_id", ids),
            creator_id=_str(obj, "creator_id", ids, tag=True),
            product_id=_str(obj, "product_id", ids),
            user_id=_str(obj, "user_id", ids),
            kind=kind,
            ts=_ts(obj, limits),
            amount_cents=amount,
        )
        _check_key(key_text, event.creator_id, "prompt-feedback", "creator_id")
        return event

    return _decode(build)


def decode_consent(key: bytes | None, value: bytes | None, limits: InputLimits) -> UserConsent | Invalid:
    """Validate a `user-consent` record (key: user_id); never raises on bad input."""

    def build() -> UserConsent:
        key_text = _key_text(key, limits)
        if value is None:
            raise _FieldError(R.MISSING_FIELD, "record value is null; consent must be a JSON object")
        obj = _load_object(value, limits)
        consent = UserConsent(
            user_id=_str(obj, "user_id", limits.max_id_chars),
            prompts=_bool(obj, "prompts"),
            personalized=_bool(obj, "personalized"),
            ts=_ts(obj, limits),
        )
        _check_key(key_text, consent.user_id, "user-consent", "user_id")
        return consent

    return _decode(build)


def decode_erasure(key: bytes | None, value: bytes | None, limits: InputLimits) -> UserErasure | Invalid:
    """Validate a `user-erasure` record (key: user_id); never raises on bad input."""

    def build() -> UserErasure:
        key_text = _key_text(key, limits)
        if value is None:
            raise _FieldError(R.MISSING_FIELD, "record value is null; an erasure must be a JSON object")
        obj = _load_object(value, limits)
        erasure = UserErasure(user_id=_str(obj, "user_id", limits.max_id_chars), ts=_ts(obj, limits))
        _check_key(key_text, erasure.user_id, "user-erasure", "user_id")
        return erasure

    return _decode(build)
