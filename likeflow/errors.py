"""likeflow's typed errors: what the command line turns into one line and a documented exit code."""

from __future__ import annotations

from typing import ClassVar

#: Exit codes of the `likeflow` command (README, "Exit codes").
EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and found a problem: a broken audit chain, nothing valid to replay
EXIT_USAGE = 2  # a bad argument or setting (argparse and ConfigError)
EXIT_UNAVAILABLE = 3  # Kafka, Redis or the worker did not answer: retry once it is back
EXIT_STALLED = 75  # the worker's stall watchdog (EX_TEMPFAIL): its supervisor restarts it
EXIT_DUPLICATE_IDENTITY = 78  # another live worker has this LIKEFLOW_INSTANCE_ID (EX_CONFIG)
EXIT_SHUTDOWN_TIMEOUT = 124  # SIGTERM did not finish within LIKEFLOW_SHUTDOWN_TIMEOUT_S
EXIT_INTERRUPTED = 130  # Ctrl-C


class LikeflowError(Exception):
    """The base of likeflow's errors: a command cannot go on; the message says why and what to do.

    `exit_code` is what `likeflow` exits with (the command line catches this one type).
    """

    exit_code: ClassVar[int] = EXIT_FAILED


class ServiceUnavailable(LikeflowError):
    """Kafka, Redis or a worker is unreachable or stopped answering: retry once it is back."""

    exit_code = EXIT_UNAVAILABLE
