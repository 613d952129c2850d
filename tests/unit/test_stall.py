"""The stall watchdog: lag without committed-offset progress trips it; rebalances and idleness do not."""

from __future__ import annotations

import pytest

from likeflow.domain.stall import Offsets, StallDetector
from likeflow.worker.watchdog import STALL_EXIT_CODE, StallWatchdog

LIKES0 = ("likes", 0)
LIKES1 = ("likes", 1)


def test_a_partition_behind_with_a_frozen_commit_is_stuck_after_the_timeout() -> None:
    d = StallDetector(60)
    frozen = {LIKES0: Offsets(10, 50), LIKES1: Offsets(0, 0)}
    assert d.observe(0, frozen, excused=False) == 0
    assert d.observe(30, frozen, excused=False) == 30
    assert d.stuck(30, frozen) == []
    assert d.observe(60, frozen, excused=False) == 60
    [stuck] = d.stuck(60, frozen)
    assert (stuck.topic, stuck.partition, stuck.committed, stuck.lag, stuck.seconds) == (
        "likes",
        0,
        10,
        40,
        60,
    )


def test_a_moving_commit_or_no_lag_is_progress() -> None:
    d = StallDetector(60)
    d.observe(0, {LIKES0: Offsets(10, 50)}, excused=False)
    d.observe(50, {LIKES0: Offsets(11, 90)}, excused=False)  # one record committed: progress
    assert d.observe(100, {LIKES0: Offsets(11, 90)}, excused=False) == 50
    assert d.stuck(100, {LIKES0: Offsets(11, 90)}) == []
    d.observe(105, {LIKES0: Offsets(11, 11)}, excused=False)  # caught up, idle: nothing to do
    assert d.observe(300, {LIKES0: Offsets(11, 11)}, excused=False) == 0
    # New records after a long idle period: the clock runs from the last sample without lag.
    assert d.observe(310, {LIKES0: Offsets(11, 20)}, excused=False) == 10


def test_other_partitions_progressing_do_not_hide_a_stuck_one() -> None:
    d = StallDetector(60)
    for t in range(0, 70, 5):
        d.observe(t, {LIKES0: Offsets(5, 9), LIKES1: Offsets(t, t + 100)}, excused=False)
    assert [
        (s.topic, s.partition) for s in d.stuck(65, {LIKES0: Offsets(5, 9), LIKES1: Offsets(65, 165)})
    ] == [LIKES0]


def test_rebalances_and_recovery_restart_the_clock_and_revoked_partitions_are_forgotten() -> None:
    d = StallDetector(60)
    behind = {LIKES0: Offsets(10, 50)}
    d.observe(0, behind, excused=False)
    d.observe(55, behind, excused=True)  # a rebalance: waiting is expected
    assert d.observe(100, behind, excused=False) == 45
    assert d.stuck(100, behind) == []
    d.observe(105, {}, excused=False)  # revoked
    assert d.observe(200, behind, excused=False) == 0  # assigned again: a fresh clock


class FakeMonitor:
    def __init__(self) -> None:
        self.offsets: dict[tuple[str, int], tuple[int, int]] = {}
        self.offsets_at = 0.0


class FakeGauge:
    value = -1.0

    def set(self, value: float) -> None:
        self.value = value


async def test_the_watchdog_exits_with_its_code_and_waits_without_fresh_offsets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr("likeflow.worker.watchdog.time.monotonic", lambda: clock[0])
    exits: list[int] = []
    monitor = FakeMonitor()
    gauge = FakeGauge()
    dog = StallWatchdog(StallDetector(60), monitor, gauge, lambda: None, 15, exit_process=exits.append)
    monitor.offsets, monitor.offsets_at = {LIKES0: (10, 50)}, clock[0]
    await dog.check()
    clock[0] += 100  # no fresh sample for 100 s: excused, no exit
    await dog.check()
    assert exits == [] and gauge.value == 0
    checks = 0
    while not exits:
        clock[0] += 5
        monitor.offsets_at = clock[0]
        await dog.check()
        checks += 1
    assert exits == [STALL_EXIT_CODE]
    assert checks == 12 and gauge.value == 60  # 60 s after the last excused sample
