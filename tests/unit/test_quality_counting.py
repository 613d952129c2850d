"""Window math, lateness and the crash-safe dedupe rules of the creator counters."""

from __future__ import annotations

import pytest

from likeflow.domain.quality.counting import (
    Outcome,
    PartitionClock,
    WindowPolicy,
    WindowRow,
    advance,
    classify,
    clock_key,
    expired_before,
    seen_key,
)
from likeflow.domain.quality.engine import apply_event
from likeflow.domain.quality.index import PartitionIndex
from likeflow.domain.quality.windows import Counts, rates, total, window_start
from streams.events import CreatorEvent

H = 3_600_000
T0 = 1_795_000_000_000 - 1_795_000_000_000 % H  # an hour boundary
POLICY = WindowPolicy(size_ms=H, grace_ms=H, retention_ms=7 * 24 * H, dedupe_horizon_ms=24 * H)


def test_window_start_is_the_tumbling_boundary() -> None:
    assert window_start(T0, H) == T0
    assert window_start(T0 + H - 1, H) == T0
    assert window_start(T0 + H, H) == T0 + H


def test_counts_and_rates() -> None:
    c = Counts()
    for kind in ("prompt", "prompt", "prompt", "prompt", "click", "click"):
        c.add_event(kind, 0)  # type: ignore[arg-type]
    c.add_event("order", 1999)
    assert c == Counts(prompts=4, clicks=2, orders=1, gmv_cents=1999)
    assert rates(c) == {"ctr": 0.5, "conversion": 0.5, "return_rate": 0.0, "complaint_rate": 0.0}
    assert rates(Counts()) == {"ctr": None, "conversion": None, "return_rate": None, "complaint_rate": None}
    assert total([c, c]).gmv_cents == 3998


def test_a_window_closes_when_the_watermark_passes_its_end() -> None:
    clock = PartitionClock()
    assert advance(clock, offset=0, ts=T0 + 10, policy=POLICY) == [T0 - 2 * H]
    # [T0, T0+H) closes once the highest ts reaches its end plus the grace: T0 + 2H.
    assert advance(clock, offset=1, ts=T0 + 2 * H - 1, policy=POLICY) == [T0 - H]
    assert advance(clock, offset=2, ts=T0 + 2 * H - 1, policy=POLICY) == []
    assert advance(clock, offset=3, ts=T0 + 2 * H, policy=POLICY) == [T0]
    assert advance(clock, offset=4, ts=T0 + 5 * H, policy=POLICY) == [T0 + H, T0 + 2 * H, T0 + 3 * H]
    assert clock.closed_until == T0 + 4 * H and clock.offset == 4


def test_an_event_for_a_closed_window_is_late_and_an_open_one_counts() -> None:
    clock = PartitionClock(offset=10, high_ts=T0 + 2 * H + 5, closed_until=T0 + H)
    assert classify(clock, None, None, offset=11, ts=T0 + 30, policy=POLICY) == Outcome.LATE
    # 1 h 59 min behind the highest ts, but its window [T0+H, T0+2H) is still open.
    assert classify(clock, None, None, offset=11, ts=T0 + H + 6, policy=POLICY) == Outcome.COUNTED


def test_redelivery_is_recognised_whichever_write_survived_a_crash() -> None:
    clock = PartitionClock(offset=10, high_ts=T0, closed_until=T0 - H)
    row = WindowRow("c1", T0, Counts(prompts=3), last_offset=12)
    # The clock says so.
    assert classify(clock, None, None, offset=9, ts=T0, policy=POLICY) == Outcome.REDELIVERED
    # Only the row was written before the crash.
    assert classify(clock, row, None, offset=12, ts=T0, policy=POLICY) == Outcome.REDELIVERED
    # Row and dedupe entry were written (entry carries this very offset).
    assert classify(clock, row, 12, offset=12, ts=T0, policy=POLICY) == Outcome.REDELIVERED
    # A later event into the same row is new.
    assert classify(clock, row, None, offset=13, ts=T0, policy=POLICY) == Outcome.COUNTED


def test_an_upstream_duplicate_is_a_duplicate() -> None:
    clock = PartitionClock(offset=10, high_ts=T0, closed_until=T0 - H)
    assert classify(clock, None, 7, offset=11, ts=T0, policy=POLICY) == Outcome.DUPLICATE


def test_expiry_bounds_follow_event_time() -> None:
    clock = PartitionClock(offset=1, high_ts=T0 + 30 * 24 * H, closed_until=T0 + 30 * 24 * H - H)
    windows_below, seen_below = expired_before(clock, POLICY)
    assert windows_below == clock.closed_until - 7 * 24 * H
    assert seen_below == clock.high_ts - 24 * H


@pytest.mark.parametrize("jump_days", [1, 365])
def test_a_big_jump_closes_at_most_the_retained_windows(jump_days: int) -> None:
    clock = PartitionClock(offset=0, high_ts=T0, closed_until=T0 - H)
    closing = advance(clock, offset=1, ts=T0 + jump_days * 24 * H, policy=POLICY)
    assert len(closing) <= POLICY.retention_ms // H
    assert closing == sorted(closing)


def test_a_copy_after_a_crash_that_lost_the_dedupe_entry_is_not_counted_again() -> None:
    """Kill -9 after the row reached the changelog but before its dedupe entry and the clock did:
    the redelivered event restores the entry, so a later copy of it is a duplicate."""

    class DictStore(dict):  # type: ignore[type-arg]
        def put(self, key: str, value: object) -> None:
            self[key] = value

        def delete(self, key: str) -> None:
            self.pop(key, None)

    hour = 3_600_000
    policy = WindowPolicy(size_ms=hour, grace_ms=hour, retention_ms=168 * hour, dedupe_horizon_ms=24 * hour)
    click = CreatorEvent("f1", "p1", "c1", "x", "v1.u", "click", 1_795_000_000_000)
    store = DictStore()
    assert (
        apply_event(store, PartitionIndex(), partition=0, offset=5, event=click, policy=policy).outcome
        is Outcome.COUNTED
    )
    # What survived the crash: the row only.
    store.pop(seen_key("f1"))
    store.pop(clock_key(0))
    index = PartitionIndex.rebuild(list(store.items()), 0)
    redelivered = apply_event(store, index, partition=0, offset=5, event=click, policy=policy)
    assert redelivered.outcome is Outcome.REDELIVERED
    copy = apply_event(store, index, partition=0, offset=9, event=click, policy=policy)
    assert copy.outcome is Outcome.DUPLICATE
    rows = [v for k, v in store.items() if isinstance(v, dict) and "counts" in v]
    assert [r["counts"]["clicks"] for r in rows] == [1]
