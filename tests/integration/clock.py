"""Event time for integration tests: one clock read per session, and hour-aligned bases."""

from __future__ import annotations

import time

HOUR_MS = 3_600_000
# The session's "now" (epoch ms): recent enough for every horizon (dedupe, retention, windows).
NOW = int(time.time() * 1000)


def hours_ago(hours: int) -> int:
    """The start of the hour `hours` before now (epoch ms): a window base that is inside
    retention and whose windows do not close while a test runs."""
    return (NOW // HOUR_MS - hours) * HOUR_MS
