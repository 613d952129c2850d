"""The judge's creator rows over time: repaired when they hold times beyond the ceiling, forgotten when old.

A creator row (the `creator_standing` table) is `{"windows": {str(start_ms): {counts...,
"end_ms", "revision"}}, "standing": CreatorStanding.to_dict(), "last_offset", "served"}`
(agents/judge.py). Two rules keep the table bounded and its clock honest:

- **Repair.** An earlier version let records stamped in year 9999 through; a window that
  starts beyond the time ceiling (the worker's clock plus LIKEFLOW_MAX_CLOCK_SKEW_S) can only
  have come from them. The judge drops such windows from every row it loads, before it derives
  the platform's sums, so neither the platform nor the judge's clock ever uses them.
- **Expiry.** Every new creator id leaves a row (and Redis documents); a creator whose newest
  window ended more than the retention (LIKEFLOW_CREATOR_RETENTION_DAYS) before the judge's
  clock is forgotten. The judge's clock is the highest window end it has applied (event time,
  never beyond the ceiling), and it looks for such creators about once per hour of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# How often (ms of the judge's event-time clock) it looks for creators to forget.
SWEEP_EVERY_MS = 3_600_000


def newest_end(row: Mapping[str, Any]) -> int:
    """End (epoch ms) of the newest window a creator row holds; -1 when it holds none."""
    windows = row.get("windows") or {}
    return max((int(w["end_ms"]) for w in windows.values()), default=-1)


def repair_row(row: Mapping[str, Any], ceiling: int) -> dict[str, Any] | None:
    """The row without what lies beyond `ceiling` (epoch ms); None when nothing does.

    Windows that start beyond it are dropped. A standing whose last judged horizon end lies
    beyond it would ignore every later judgment (an end is judged once): it is set back to the
    newest window kept (at most the ceiling). A served verdict over a horizon ending beyond it
    is dropped (the creator's next judgment serves a new one). Idempotent.
    """
    windows: Mapping[str, Any] = row.get("windows") or {}
    standing: Mapping[str, Any] = row.get("standing") or {}
    served = row.get("served")
    junk = [start for start in windows if int(start) > ceiling]
    last_judged = int(standing.get("last_window", -1))
    served_end = int(served["doc"].get("horizon_end", -1)) if served else -1
    if not junk and last_judged <= ceiling and served_end <= ceiling:
        return None
    repaired = {**row, "windows": {start: w for start, w in windows.items() if int(start) <= ceiling}}
    if last_judged > ceiling:
        repaired["standing"] = {**standing, "last_window": min(newest_end(repaired), ceiling)}
    if served_end > ceiling:
        del repaired["served"]
    return repaired


def sweep_due(clock_ms: int, last_sweep_ms: int | None, every_ms: int = SWEEP_EVERY_MS) -> bool:
    """Whether the judge's clock (epoch ms) has entered a new `every_ms` period since the last
    sweep (None: none since the worker started); never before the clock has a value."""
    if clock_ms <= 0:
        return False
    return last_sweep_ms is None or clock_ms // every_ms > last_sweep_ms // every_ms


def expired_creators(
    rows: Iterable[tuple[str, Mapping[str, Any]]], clock_ms: int, retention_ms: int
) -> list[str]:
    """The creators, of (creator_id, row) pairs, whose newest window ended more than
    `retention_ms` before the judge's clock `clock_ms` (both ms), sorted. A row without windows
    (its only windows were repaired away) has nothing left to judge and is expired too."""
    cutoff = clock_ms - retention_ms
    return sorted(creator_id for creator_id, row in rows if newest_end(row) < cutoff)
