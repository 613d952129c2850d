"""The judge's creator rows: repaired when they hold times beyond the ceiling, forgotten when old."""

from __future__ import annotations

from typing import Any

from likeflow.domain.quality.creator_rows import (
    SWEEP_EVERY_MS,
    expired_creators,
    newest_end,
    repair_row,
    sweep_due,
)
from likeflow.domain.quality.horizon import PlatformHorizon

H = 3_600_000
DAY = 24 * H
NOW = 1_795_000_000_000 - 1_795_000_000_000 % H
CEILING = NOW + 300_000
YEAR_9999 = 253_402_297_200_000  # an hour boundary in year 9999


def window(start: int, prompts: int = 1, revision: int = 1) -> dict[str, int]:
    return {"prompts": prompts, "end_ms": start + H, "revision": revision}


def row(*starts: int, last_window: int = -1, served_end: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "windows": {str(s): window(s) for s in starts},
        "standing": {"demoted": False, "bad_streak": 0, "good_streak": 1, "score": 1.0, "weight": 1.0,
                     "last_window": last_window, "reasons": []},
        "last_offset": 7,
    }  # fmt: skip
    if served_end is not None:
        out["served"] = {"version": 7, "doc": {"creator_id": "c", "horizon_end": served_end, "weight": 0.2}}
    return out


def test_a_row_with_nothing_beyond_the_ceiling_is_left_alone() -> None:
    assert repair_row(row(NOW - 2 * H, NOW - H, last_window=NOW, served_end=NOW), CEILING) is None
    assert repair_row({}, CEILING) is None


def test_windows_beyond_the_ceiling_are_dropped_and_the_standing_can_be_judged_again() -> None:
    """A row an earlier version wrote after it judged a window of a like stamped in year 9999:
    the window, the horizon end judged there and the verdict served for it are all junk."""
    old = row(NOW - 2 * H, YEAR_9999, last_window=YEAR_9999 + H, served_end=YEAR_9999 + H)
    repaired = repair_row(old, CEILING)
    assert repaired is not None
    assert list(repaired["windows"]) == [str(NOW - 2 * H)]
    assert repaired["standing"]["last_window"] == NOW - H, "the newest window kept was judged last"
    assert "served" not in repaired, "the verdict over a junk horizon is not served again"
    assert repaired["last_offset"] == 7 and repaired["standing"]["good_streak"] == 1
    assert old["windows"].keys() == {str(NOW - 2 * H), str(YEAR_9999)}, "the input is not changed"
    assert repair_row(repaired, CEILING) is None and repair_row(repaired, CEILING + DAY) is None, "idempotent"
    platform = PlatformHorizon.rebuild(7 * DAY, [repaired], CEILING)
    assert platform.clock == NOW - H


def test_a_row_whose_only_windows_were_junk_is_left_empty_and_expires() -> None:
    repaired = repair_row(row(YEAR_9999, last_window=YEAR_9999 + H), CEILING)
    assert repaired is not None and repaired["windows"] == {}
    assert repaired["standing"]["last_window"] == -1
    assert expired_creators([("c", repaired)], NOW, 30 * DAY) == ["c"]


def test_a_creator_expires_once_its_newest_window_is_older_than_the_retention() -> None:
    rows = {
        "gone": row(NOW - 40 * DAY, NOW - 31 * DAY),
        "edge": row(NOW - 30 * DAY - H),  # ended exactly 30 days before the clock: kept
        "recent": row(NOW - 45 * DAY, NOW - H),  # an old window, but a recent one too
    }
    assert newest_end(rows["gone"]) == NOW - 31 * DAY + H
    assert expired_creators(rows.items(), NOW, 30 * DAY) == ["gone"]
    assert expired_creators(rows.items(), NOW + 1, 30 * DAY) == ["edge", "gone"]
    assert expired_creators(rows.items(), NOW, 60 * DAY) == []


def test_the_judge_looks_for_creators_to_forget_once_per_hour_of_its_clock() -> None:
    assert not sweep_due(0, None), "no window applied yet: no clock"
    assert sweep_due(NOW, None), "the first batch after a start or a rebalance looks"
    assert not sweep_due(NOW + H - 1, NOW)
    assert sweep_due(NOW + H, NOW + H - 1), "a new hour of the clock"
    assert not sweep_due(NOW - 5 * H, NOW), "a clock that went back (rebuilt after a rebalance)"
    assert SWEEP_EVERY_MS == H
