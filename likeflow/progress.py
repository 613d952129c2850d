"""Progress for long commands: a bar with rate and ETA on a terminal, periodic lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

LINE_EVERY_S = 5.0
BAR_EVERY_S = 0.2
BAR_WIDTH = 30


class Progress:
    """Tracks work done against an estimated total (bytes, say) and events sent."""

    def __init__(self, total: int, label: str, out: TextIO | None = None) -> None:
        self._total = max(total, 1)
        self._label = label
        self._out = out or sys.stderr
        self._tty = self._out.isatty()
        self._started = time.monotonic()
        self._last_shown = 0.0
        self.events = 0

    def update(self, done: int, events: int) -> None:
        """Report `done` units of the total and `events` sent so far."""
        self.events = events
        now = time.monotonic()
        if now - self._last_shown < (BAR_EVERY_S if self._tty else LINE_EVERY_S):
            return
        self._last_shown = now
        elapsed = now - self._started
        rate = events / elapsed if elapsed > 0 else 0.0
        fraction = min(1.0, done / self._total)
        eta = (elapsed / fraction - elapsed) if fraction > 0 else float("inf")
        eta_text = f"{eta:5.0f}s" if eta != float("inf") else "    ?"
        if self._tty:
            filled = int(fraction * BAR_WIDTH)
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            self._out.write(
                f"\r{self._label} [{bar}] {fraction:6.1%} {events} events {rate:8.0f}/s ETA {eta_text}"
            )
        else:
            self._out.write(
                f"{self._label}: {fraction:.1%}, {events} events, {rate:.0f}/s, ETA {eta_text.strip()}\n"
            )
        self._out.flush()

    def finish(self) -> float:
        """End the bar; returns elapsed seconds."""
        if self._tty:
            self._out.write("\n")
            self._out.flush()
        return time.monotonic() - self._started
