"""A hard bound on the worker's graceful shutdown.

On SIGTERM (or SIGINT) Faust stops fetching, drops the records it had queued but not handed to an
agent (their offsets are not committed, so they are redelivered), lets every agent finish the
batch in hand (each batch ends with its outputs acknowledged by Kafka and written to Redis),
waits until every record taken is acknowledged, commits those offsets, and flushes the producer.
Each of those steps waits on Kafka or on an agent, without a deadline of its own. `arm_hard_exit`
starts a timer thread, independent of the event loop, that ends the process with
`SHUTDOWN_TIMEOUT_EXIT_CODE` once `LIKEFLOW_SHUTDOWN_TIMEOUT_S` has passed. That is still safe:
whatever was not committed is processed again by the next owner, idempotently.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from likeflow.errors import EXIT_SHUTDOWN_TIMEOUT

log = logging.getLogger(__name__)

# What timeout(1) returns when it had to stop the command.
SHUTDOWN_TIMEOUT_EXIT_CODE = EXIT_SHUTDOWN_TIMEOUT


def arm_hard_exit(timeout_s: float, exit_process: Callable[[int], None] = os._exit) -> threading.Timer:
    """Exit the process with SHUTDOWN_TIMEOUT_EXIT_CODE unless it ended within `timeout_s`."""

    def hard_exit() -> None:
        log.error(
            "graceful shutdown did not finish within %.0f s (LIKEFLOW_SHUTDOWN_TIMEOUT_S); exiting "
            "now with code %d: offsets not committed yet are redelivered to the next owner",
            timeout_s,
            SHUTDOWN_TIMEOUT_EXIT_CODE,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        exit_process(SHUTDOWN_TIMEOUT_EXIT_CODE)

    timer = threading.Timer(timeout_s, hard_exit)
    timer.daemon = True  # a finished shutdown is not held up by the timer
    timer.start()
    log.info("shutting down gracefully (at most %.0f s)", timeout_s)
    return timer
