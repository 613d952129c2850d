"""`user-engagement` records and a like's optional `watch_ms`: valid ones decode, bad ones get a reason."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.engagement import (
    ENGAGEMENT_KINDS,
    MAX_WATCH_MS,
    EngagementKind,
    UserEngagement,
    decode_user_engagement,
    valid_watch_ms,
)
from streams.events import DeadLetterReason as R
from streams.events import Invalid
from streams.validation import InputLimits
from tests.factories import BASE_TS, LIMITS


def engagement_json(**fields: Any) -> bytes:
    """A raw `user-engagement` record value (None drops a field)."""
    data: dict[str, Any] = {
        "event_id": "g1",
        "user_id": "u1",
        "video_id": "v1",
        "kind": "comment",
        "ts": BASE_TS,
    }
    data.update(fields)
    return orjson.dumps({k: v for k, v in data.items() if v is not None})


@pytest.mark.parametrize("kind", ENGAGEMENT_KINDS)
def test_every_kind_decodes(kind: EngagementKind) -> None:
    expected = UserEngagement("g1", "u1", "v1", kind, BASE_TS)
    assert decode_user_engagement(b"u1", engagement_json(kind=kind), LIMITS) == expected


def test_watch_ms_is_kept_and_unknown_fields_are_ignored() -> None:
    result = decode_user_engagement(b"u1", engagement_json(kind="long_watch", watch_ms=95_000, x=[1]), LIMITS)
    assert result == UserEngagement("g1", "u1", "v1", "long_watch", BASE_TS, 95_000)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"u1", None, R.MISSING_FIELD),
        (b"u1", b"{not json", R.MALFORMED_JSON),
        (b"u1", b"\xff\xfe", R.MALFORMED_JSON),
        (b"u1", b"[1]", R.NOT_AN_OBJECT),
        (b"u1", b" " * (LIMITS.max_record_bytes + 1), R.OVERSIZED),
        (b"k" * (LIMITS.max_key_bytes + 1), engagement_json(), R.OVERSIZED),
        (b"u1", engagement_json(event_id=None), R.MISSING_FIELD),
        (b"u1", engagement_json(user_id=None), R.MISSING_FIELD),
        (b"u1", engagement_json(video_id=None), R.MISSING_FIELD),
        (b"u1", engagement_json(kind=None), R.MISSING_FIELD),
        (b"u1", engagement_json(ts=None), R.MISSING_FIELD),
        (b"u1", engagement_json(kind="like"), R.UNKNOWN_ENUM),
        (b"u1", engagement_json(kind="purchase"), R.UNKNOWN_ENUM),
        (b"u1", engagement_json(kind=3), R.WRONG_TYPE),
        (b"u1", engagement_json(video_id=7), R.WRONG_TYPE),
        (b"u1", engagement_json(event_id=""), R.INVALID_VALUE),
        (b"u1", engagement_json(video_id="v" * 129), R.INVALID_VALUE),
        (b"u1", engagement_json(video_id="v\u202e1"), R.INVALID_VALUE),
        (b"u1", engagement_json(ts="1795000000000"), R.WRONG_TYPE),
        (b"u1", engagement_json(ts=True), R.WRONG_TYPE),
        (b"u1", engagement_json(ts=1.795e12), R.WRONG_TYPE),
        (b"u1", engagement_json(ts=1_795_000_000), R.INVALID_VALUE),
        (b"u1", engagement_json(ts=LIMITS.max_ts + 1), R.FUTURE_TS),
        (b"u1", engagement_json(watch_ms=-1), R.INVALID_VALUE),
        (b"u1", engagement_json(watch_ms=MAX_WATCH_MS + 1), R.INVALID_VALUE),
        (b"u1", engagement_json(watch_ms=1.5), R.WRONG_TYPE),
        (b"u1", engagement_json(watch_ms="900"), R.WRONG_TYPE),
        (b"u1", engagement_json(watch_ms=True), R.WRONG_TYPE),
        (b"u2", engagement_json(), R.KEY_MISMATCH),
        (None, engagement_json(), R.KEY_MISMATCH),
        (b"\xff", engagement_json(), R.KEY_MISMATCH),
    ],
)
def test_bad_engagements_get_a_reason(key: bytes | None, value: bytes | None, reason: R) -> None:
    result = decode_user_engagement(key, value, LIMITS)
    assert isinstance(result, Invalid), result
    assert result.reason == reason, result.error
    assert result.error


def test_errors_name_the_field() -> None:
    result = decode_user_engagement(b"u1", engagement_json(watch_ms=-5), LIMITS)
    assert isinstance(result, Invalid) and "watch_ms" in result.error
    result = decode_user_engagement(b"u1", engagement_json(kind="like"), LIMITS)
    assert isinstance(result, Invalid) and "kind" in result.error


def test_a_future_ts_is_refused_before_the_limits_are_set() -> None:
    result = decode_user_engagement(b"u1", engagement_json(), InputLimits())
    assert isinstance(result, Invalid) and result.reason == R.FUTURE_TS


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), (0, 0), (1_000, 1_000), (MAX_WATCH_MS, MAX_WATCH_MS)]
)
def test_valid_watch_ms(value: object, expected: int | None) -> None:
    assert valid_watch_ms(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [(-1, R.INVALID_VALUE), (MAX_WATCH_MS + 1, R.INVALID_VALUE), (2**70, R.INVALID_VALUE)]
    + [(bad, R.WRONG_TYPE) for bad in (True, False, 1.0, "1", [1], {"ms": 1})],
)
def test_invalid_watch_ms(value: object, reason: R) -> None:
    result = valid_watch_ms(value)
    assert isinstance(result, Invalid) and result.reason == reason and "watch_ms" in result.error


@given(st.one_of(st.none(), st.integers(), st.floats(), st.booleans(), st.text(max_size=5)))
def test_valid_watch_ms_matches_the_inline_rule(value: object) -> None:
    inline = value is None or (type(value) is int and 0 <= value <= MAX_WATCH_MS)
    assert (not isinstance(valid_watch_ms(value), Invalid)) == inline


@given(st.binary(max_size=200), st.one_of(st.none(), st.binary(max_size=20)))
def test_any_bytes_decode_or_get_a_reason_never_raise(value: bytes, key: bytes | None) -> None:
    assert isinstance(decode_user_engagement(key, value, LIMITS), UserEngagement | Invalid)
