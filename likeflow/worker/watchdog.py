"""The stall watchdog: a worker whose input stopped moving exits, so its supervisor restarts it.

Every few seconds it feeds the monitor's last sample of committed and end offsets (read from the
broker) to `StallDetector`. When a partition this worker owns has had lag for
`LIKEFLOW_STALL_TIMEOUT_S` without its committed offset moving, it logs the stuck partitions
and exits with `STALL_EXIT_CODE` without a graceful shutdown (a stalled consumer may not finish
one). Nothing is lost: offsets are committed only for processed records, so the restarted
worker (systemd `Restart=`, Kubernetes, docker `restart:`, or the test harness) is redelivered
everything after the last commit, and the job's state makes that redelivery idempotent.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from likeflow.domain.stall import Offsets, StallDetector
from likeflow.errors import EXIT_STALLED

log = logging.getLogger(__name__)

# EX_TEMPFAIL (sysexits.h): a temporary failure, the caller is invited to retry.
STALL_EXIT_CODE = EXIT_STALLED


class StallWatchdog:
    """Wiring of `StallDetector` to the monitor's offsets, a gauge and the process exit."""

    def __init__(
        self,
        detector: StallDetector,
        monitor: Any,
        gauge: Any,
        excuse: Callable[[], str | None],
        max_sample_age_s: float,
        exit_process: Callable[[int], None] = os._exit,
    ) -> None:
        self._detector = detector
        self._monitor = monitor  # likeflow.worker.monitor.Monitor: .offsets and .offsets_at
        self._gauge = gauge
        self._excuse = excuse
        self._max_sample_age_s = max_sample_age_s
        self._exit = exit_process

    async def check(self) -> None:
        """One check (an app timer)."""
        now = time.monotonic()
        offsets = {key: Offsets(c, e) for key, (c, e) in self._monitor.offsets.items()}
        reason = self._excuse()
        if reason is None and now - self._monitor.offsets_at > self._max_sample_age_s:
            # No fresh offsets (the broker is unreachable, say): nothing to judge progress by.
            reason = "no fresh offsets"
        self._gauge.set(self._detector.observe(now, offsets, excused=reason is not None))
        stuck = self._detector.stuck(now, offsets)
        if not stuck:
            return
        log.error(
            "stall watchdog: no progress for %.0f s on %d partition(s) with lag: %s; exiting with "
            "code %d so that the supervisor restarts this worker (uncommitted records are "
            "redelivered)",
            stuck[0].seconds,
            len(stuck),
            ", ".join(f"{s.topic}[{s.partition}] committed {s.committed} lag {s.lag}" for s in stuck),
            STALL_EXIT_CODE,
        )
        logging.shutdown()  # flush the log: os._exit skips every handler and finaliser
        self._exit(STALL_EXIT_CODE)
