"""The judge's horizon: every creator's closed windows of the trailing span, and the platform's sums.

The judge receives each creator's windows as the counting partitions close them (revision 1)
and again whenever one is revised (a source that was idle counted more into it). It keeps, per
creator, the latest revision of every window in the horizon; the platform sums are the sum of
those over all creators, so they are derived state: rebuilt from the creators' rows after a
restart, never counted twice.

Nothing beyond the time ceiling (the worker's clock plus the allowed skew) enters the sums or
moves the judge's clock: a window that starts beyond it is refused, and the clock is at most it
(likeflow/domain/quality/creator_rows.py repairs rows an earlier version wrote).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from likeflow.domain.quality.windows import COUNT_FIELDS, Counts

# A creator's row keeps its windows as {str(start_ms): {counts..., "revision": r}}.
WindowsField = dict[str, dict[str, int]]


@dataclass(slots=True)
class PlatformHorizon:
    """Sums over all creators by window start, and the judge's clock (the latest window end seen)."""

    horizon_ms: int
    by_start: dict[int, Counts] = field(default_factory=dict)
    clock: int = 0

    @property
    def floor(self) -> int:
        """Sums of windows starting before this (epoch ms) are forgotten: two horizons back, so a
        counting partition that closes its windows later than the others (its inputs lag) still
        finds the platform's sums of the horizon it is judged on."""
        return self.clock - 2 * self.horizon_ms

    def totals(self, end_ms: int | None = None) -> Counts:
        """The platform's counts over the horizon ending at `end_ms` (default: the judge's clock)."""
        end = self.clock if end_ms is None else end_ms
        floor = end - self.horizon_ms
        out = Counts()
        for start, counts in self.by_start.items():
            if floor <= start < end:
                out.add(counts)
        return out

    def _add(self, start: int, counts: Mapping[str, int], sign: int) -> None:
        held = self.by_start.get(start)
        if held is None:
            held = self.by_start[start] = Counts()
        for name in COUNT_FIELDS:
            setattr(held, name, getattr(held, name) + sign * int(counts.get(name, 0)))

    def forget(self, windows: WindowsField) -> None:
        """Take a forgotten creator's windows (its row's `windows`) out of the sums that still
        hold them, so that the sums stay those a rebuild from the remaining rows gives."""
        for start, window in windows.items():
            if int(start) in self.by_start:
                self._add(int(start), window, -1)

    def prune(self) -> None:
        """Forget the sums of windows that left the horizon."""
        floor = self.floor
        for start in [s for s in self.by_start if s < floor]:
            del self.by_start[start]

    @classmethod
    def rebuild(
        cls, horizon_ms: int, rows: Iterable[Mapping[str, Any]], ceiling: int | None = None
    ) -> PlatformHorizon:
        """The sums and clock derived from every creator row's windows; with `ceiling` (epoch
        ms), windows that start beyond it are left out and the clock is at most it."""
        platform = cls(horizon_ms)
        for row in rows:
            for start, window in (row.get("windows") or {}).items():
                if ceiling is not None and int(start) > ceiling:
                    continue
                platform._add(int(start), window, 1)
                platform.clock = max(platform.clock, int(window.get("end_ms", 0)))
        if ceiling is not None:
            platform.clock = min(platform.clock, ceiling)
        platform.prune()
        return platform


def apply_window(
    windows: WindowsField,
    platform: PlatformHorizon,
    *,
    start_ms: int,
    end_ms: int,
    counts: Mapping[str, int],
    revision: int,
    ceiling: int,
) -> bool:
    """Apply revision `revision` of one creator window to the creator's `windows` and the platform.

    Returns False (nothing changed) for a revision at or below the one held, the same window
    redelivered or sent again after a crash upstream, for a window already outside the
    creator's horizon (behind its latest window by more than the horizon), and for a window
    that starts beyond `ceiling` (epoch ms; only an earlier version sent one). A newer revision
    replaces the old counts in both places. The creator's windows are kept for one horizon
    behind its latest window: a creator's windows all come from one counting partition, so they
    close in its order whatever the other partitions do.
    """
    if start_ms > ceiling:
        return False
    platform.clock = max(platform.clock, min(end_ms, ceiling))
    key = str(start_ms)
    held = windows.get(key)
    latest = max([end_ms, *(int(w["end_ms"]) for w in windows.values())])
    floor = latest - platform.horizon_ms
    if (held is not None and held["revision"] >= revision) or start_ms < floor:
        return False
    if held is not None:
        platform._add(start_ms, held, -1)
    platform._add(start_ms, counts, 1)
    windows[key] = {
        **{f: int(counts.get(f, 0)) for f in COUNT_FIELDS},
        "end_ms": end_ms,
        "revision": revision,
    }
    for old in [k for k in windows if int(k) < floor]:
        del windows[old]
    platform.prune()
    return True


def creator_totals(windows: WindowsField, end_ms: int, horizon_ms: int) -> Counts:
    """A creator's counts over its windows of the horizon ending at `end_ms` (epoch ms)."""
    floor = end_ms - horizon_ms
    out = Counts()
    for start, window in windows.items():
        if floor <= int(start) < end_ms:
            out.add(Counts.from_dict(window))
    return out
