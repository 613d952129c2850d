"""The time bounds operators type (`--since`, `--until`): ISO-8601 or epoch ms, else a clear error."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from likeflow.ops.timearg import parse_time_ms
from tests.factories import BASE_TS

# 2026-11-26T10:00:00Z
T = 1_795_687_200_000


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-26T18:00:00+08:00",
        "2026-11-26T10:00:00+00:00",
        "2026-11-26T10:00:00Z",
        "2026-11-26T05:00:00-05:00",
        "2026-11-26T10:00:00",  # naive: UTC, not the machine's zone
        "2026-11-26 10:00",
        "2026-11-26T10:00:00.000",
    ],
)
def test_iso_8601_in_any_zone_names_the_same_instant(text: str) -> None:
    assert parse_time_ms(text) == T


def test_a_date_alone_is_midnight_utc() -> None:
    assert parse_time_ms("2026-11-26") == T - 10 * 3_600_000


def test_milliseconds_of_an_iso_time_are_kept_and_microseconds_truncated() -> None:
    assert parse_time_ms("2026-11-26T10:00:00.123Z") == T + 123
    assert parse_time_ms("2026-11-26T10:00:00.123999Z") == T + 123


def test_the_naive_form_does_not_depend_on_the_local_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    try:
        assert parse_time_ms("2026-11-26 10:00") == T
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("text", [str(BASE_TS), f"  {BASE_TS}\n", "100000000000"])
def test_epoch_milliseconds_are_taken_as_they_are(text: str) -> None:
    assert parse_time_ms(text) == int(text)


@pytest.mark.parametrize("text", [str(BASE_TS // 1000), "0", "99999999999"])
def test_epoch_seconds_are_refused_rather_than_read_as_1970(text: str) -> None:
    with pytest.raises(ValueError, match="looks like epoch seconds"):
        parse_time_ms(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "yesterday",
        "-2h",  # relative forms are not supported
        "now",
        "1795000000000ms",
        "-1795000000000",
        "1795000000.5",
        "2026-13-01",
        "2026-11-26T25:00",
        "26/11/2026",
    ],
)
def test_anything_else_is_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="neither ISO-8601 .* nor epoch milliseconds") as info:
        parse_time_ms(text)
    assert repr(text) in str(info.value), "the message quotes what the operator typed"


# From 2004-11-03 (2**40 ms) to 2038-01-19 (2**31 s), int(timestamp() * 1000) is exact; see below.
@given(st.integers(min_value=2**40, max_value=2**31 * 1000 - 1))
def test_an_iso_time_and_its_epoch_milliseconds_agree(ms: int) -> None:
    iso = (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)).isoformat(
        timespec="milliseconds"
    )
    assert parse_time_ms(iso) == parse_time_ms(str(ms)) == ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [("2038-12-27T09:14:45.101Z", 2_177_054_085_101), ("2004-10-31T18:26:51.021Z", 1_099_247_211_021)],
)
def test_milliseconds_are_exact_outside_2004_to_2038(text: str, ms: int) -> None:
    assert parse_time_ms(text) == ms
