"""`user-engagement` events (comment, share, long watch), the users' own orders routed to
`user-orders`, and the optional `watch_ms` of a like (its rule is in `streams.validation`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import orjson

from streams.events import DeadLetterReason, Invalid
from streams.validation import MAX_WATCH_MS as MAX_WATCH_MS
from streams.validation import (
    InputLimits,
    _check_key,
    _decode,
    _enum,
    _FieldError,
    _int,
    _key_text,
    _load_object,
    _str,
    _ts,
    _watch_ms,
)
from streams.validation import valid_watch_ms as valid_watch_ms
from streams.validation import watch_ms_problem as watch_ms_problem

R = DeadLetterReason
EngagementKind = Literal["comment", "share", "long_watch"]
ENGAGEMENT_KINDS: tuple[EngagementKind, ...] = ("comment", "share", "long_watch")


@dataclass(frozen=True, slots=True)
class UserEngagement:
    """A user engaged with a video at `ts` (epoch ms): a comment, a share or a long watch;
    `watch_ms` is how long they watched it, when the client knows."""

    event_id: str
    user_id: str
    video_id: str
    kind: EngagementKind
    ts: int
    watch_ms: int | None = None


def decode_user_engagement(
    key: bytes | None, value: bytes | None, limits: InputLimits
) -> UserEngagement | Invalid:
    """Validate a `user-engagement` record (key: user_id); never raises on bad input.

    The rules of `likes` (sizes, ids, `ts` bounds, the key equal to `user_id`), plus a
    required `kind` among ENGAGEMENT_KINDS and an optional `watch_ms` (`valid_watch_ms`)."""

    def build() -> UserEngagement:
        key_text = _key_text(key, limits)
        if value is None:
            raise _FieldError(R.MISSING_FIELD, "record value is null; an engagement must be a JSON object")
        obj = _load_object(value, limits)
        ids = limits.max_id_chars
        event_id = _str(obj, "event_id", ids)
        user_id = _str(obj, "user_id", ids)
        video_id = _str(obj, "video_id", ids)
        kind = _enum(obj, "kind", ENGAGEMENT_KINDS, None)
        if kind is None:
            raise _FieldError(R.MISSING_FIELD, "kind is required")
        engagement = UserEngagement(event_id, user_id, video_id, kind, _ts(obj, limits), _watch_ms(obj))
        _check_key(key_text, engagement.user_id, "user-engagement", "user_id")
        return engagement

    return _decode(build)


@dataclass(frozen=True, slots=True)
class UserOrder:
    """A user's own order of `amount_cents` at `ts` (epoch ms), routed by the feedback handler
    from an `order` on `prompt-feedback` (its `event_id`) to the internal `user-orders` topic, on
    the partition of the user's state. `user_id` is the user's pseudonym: no raw id is written."""

    event_id: str
    user_id: str
    amount_cents: int
    ts: int

    def to_json(self) -> bytes:
        """The `user-orders` record value."""
        return orjson.dumps(self)


def decode_user_order(key: bytes | None, value: bytes | None, limits: InputLimits) -> UserOrder | Invalid:
    """Validate a `user-orders` record (key: the user's pseudonym); never raises on bad input.
    Written by the job itself, so anything else there is a bug or a stranger: dead-lettered."""

    def build() -> UserOrder:
        key_text = _key_text(key, limits)
        if value is None:
            raise _FieldError(R.MISSING_FIELD, "record value is null; an order must be a JSON object")
        obj = _load_object(value, limits)
        ids = limits.max_id_chars
        order = UserOrder(
            _str(obj, "event_id", ids),
            _str(obj, "user_id", ids),
            _int(obj, "amount_cents", 0),
            _ts(obj, limits),
        )
        _check_key(key_text, order.user_id, "user-orders", "user_id")
        return order

    return _decode(build)
