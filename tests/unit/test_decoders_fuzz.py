"""Fuzzing every decoder: any bytes, any JSON -> a valid event or a dead-letter reason, never a crash."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from likeflow.ops.backfill import events_from_line
from streams.events import (
    CreatorEvent,
    DeadLetterReason,
    Invalid,
    Like,
    MappingRemoval,
    UserConsent,
    UserErasure,
    VideoMapping,
)
from streams.validation import (
    InputLimits,
    decode_consent,
    decode_erasure,
    decode_feedback,
    decode_like,
    decode_like_checked,
    decode_mapping,
)
from tests.factories import LIMITS

DECODERS: list[tuple[str, Callable[[bytes | None, bytes | None, InputLimits], Any], tuple[type, ...]]] = [
    ("like", decode_like, (Like,)),
    ("mapping", decode_mapping, (VideoMapping, MappingRemoval)),
    ("feedback", decode_feedback, (CreatorEvent,)),
    ("consent", decode_consent, (UserConsent,)),
    ("erasure", decode_erasure, (UserErasure,)),
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=30,
)
FIELDS = [
    "event_id",
    "user_id",
    "video_id",
    "creator_id",
    "prompt_id",
    "product_id",
    "ts",
    "action",
    "kind",
    "amount_cents",
    "products",
    "title",
    "category",
    "price_cents",
    "min_price_cents",
    "prompts",
    "personalized",
    "certified",
    "stock",
    "offer",
]
near_valid_objects = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=len(FIELDS))


def check(
    decode: Callable[[bytes | None, bytes | None, InputLimits], Any],
    ok: tuple[type, ...],
    key: bytes | None,
    value: bytes | None,
) -> None:
    result = decode(key, value, LIMITS)
    assert isinstance(result, ok + (Invalid,))
    if isinstance(result, Invalid):
        assert isinstance(result.reason, DeadLetterReason) and result.error


@pytest.mark.parametrize(("name", "decode", "ok"), DECODERS, ids=[d[0] for d in DECODERS])
@settings(max_examples=300, deadline=None)
@given(key=st.none() | st.binary(max_size=20), value=st.none() | st.binary(max_size=200))
def test_arbitrary_bytes(
    name: str, decode: Any, ok: tuple[type, ...], key: bytes | None, value: bytes | None
) -> None:
    check(decode, ok, key, value)


@pytest.mark.parametrize(("name", "decode", "ok"), DECODERS, ids=[d[0] for d in DECODERS])
@settings(max_examples=300, deadline=None)
@given(obj=json_values | near_valid_objects, key=st.none() | st.text(max_size=10).map(str.encode))
def test_arbitrary_json(name: str, decode: Any, ok: tuple[type, ...], obj: Any, key: bytes | None) -> None:
    check(decode, ok, key, orjson.dumps(obj))


@settings(max_examples=200, deadline=None)
@given(obj=json_values | near_valid_objects)
def test_backfill_lines(obj: Any) -> None:
    result = events_from_line(orjson.dumps(obj), LIMITS)
    assert isinstance(result, CreatorEvent | Invalid)
    if isinstance(result, CreatorEvent):
        assert all(
            type(getattr(result, f)) is str and getattr(result, f)
            for f in ("creator_id", "prompt_id", "user_id")
        )
        assert type(result.ts) is int


@pytest.mark.parametrize(
    "value",
    [
        b"9" * 5000,
        b"[" * 10_000 + b"]" * 10_000,
        b'{"a":' * 2000 + b"1" + b"}" * 2000,
        b'{"ts": 1e999}',
        b'"\\ud800"',
        b"\xff" * 100,
        b" " * (LIMITS.max_record_bytes + 1),
    ],
)
def test_hostile_inputs(value: bytes) -> None:
    for _, decode, ok in DECODERS:
        check(decode, ok, b"k", value)


likes_near_valid = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.text(max_size=130) | json_values,
        "user_id": st.sampled_from(["u1", " ", "", "u" * 129, "u1" + " " * 600, "u1\u200b"]) | json_values,
        "video_id": st.text(max_size=5) | json_values,
        "ts": st.integers(10**10, 3 * 10**14) | st.booleans() | json_values,
        "action": st.sampled_from(["like", "unlike", "LIKE", None]) | json_values,
    },
)


@settings(max_examples=500, deadline=None)
@given(obj=likes_near_valid, key=st.sampled_from([b"u1", b"", b"\xff", None, b" ", b"u1" + b" " * 600]))
def test_the_like_fast_path_accepts_exactly_what_the_checked_path_accepts(
    obj: Any, key: bytes | None
) -> None:
    value = orjson.dumps(obj)
    assert decode_like(key, value, LIMITS) == decode_like_checked(key, value, LIMITS)
