"""`user-engagement` events (comment, share, long watch) and the optional `watch_ms` of a like."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from streams.events import DeadLetterReason, Invalid
from streams.validation import (
    InputLimits,
    _check_key,
    _decode,
    _enum,
    _FieldError,
    _key_text,
    _kind,
    _load_object,
    _str,
    _ts,
)

R = DeadLetterReason
EngagementKind = Literal["comment", "share", "long_watch"]
ENGAGEMENT_KINDS: tuple[EngagementKind, ...] = ("comment", "share", "long_watch")
# The longest watch time accepted (ms): 24 h, more than any short video watched on a loop all
# night. Weights saturate long before it (docs/profile.md); above it a client is sending junk.
MAX_WATCH_MS = 86_400_000


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

    For `decode_like`'s fast path the same rule inline is
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
