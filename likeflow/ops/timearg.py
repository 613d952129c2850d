"""Parses the time bounds operators type: ISO-8601 (naive means UTC) or epoch milliseconds."""

from __future__ import annotations

import datetime as dt

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def parse_time_ms(text: str) -> int:
    """'2026-11-26T18:00:00+08:00', '2026-11-26 18:00' (UTC) or '1795000000000' -> epoch ms."""
    raw = text.strip()
    if raw.isdigit():
        value = int(raw)
        if value < 100_000_000_000:
            raise ValueError(f"{text!r} looks like epoch seconds; give epoch milliseconds or ISO-8601")
        return value
    try:
        moment = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither ISO-8601 (e.g. 2026-11-26T18:00:00+08:00) nor epoch milliseconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    # Integer arithmetic: a float timestamp * 1000 can truncate to 1 ms early.
    return (moment - EPOCH) // dt.timedelta(milliseconds=1)
