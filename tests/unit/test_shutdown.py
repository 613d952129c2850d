"""The graceful-shutdown bound: the timer exits with its code after the timeout, never before."""

from __future__ import annotations

import threading

from likeflow.worker.shutdown import SHUTDOWN_TIMEOUT_EXIT_CODE, arm_hard_exit


def test_the_hard_exit_fires_after_the_timeout_and_not_when_cancelled() -> None:
    fired = threading.Event()
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        fired.set()

    timer = arm_hard_exit(0.05, exit_process=fake_exit)
    assert timer.daemon
    assert fired.wait(10)
    assert codes == [SHUTDOWN_TIMEOUT_EXIT_CODE]

    cancelled = arm_hard_exit(5.0, exit_process=fake_exit)  # far longer than the cancel takes
    cancelled.cancel()
    cancelled.join(1)
    assert codes == [SHUTDOWN_TIMEOUT_EXIT_CODE]
