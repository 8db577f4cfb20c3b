"""Progress on stderr for long work (installs, waits, replays)."""

from __future__ import annotations

import sys
import time


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Meter:
    """A one-line progress display on stderr, redrawn at most a few times a second."""

    def __init__(self, label: str, total: int | None = None) -> None:
        self.label, self.total, self.count = label, total, 0
        self._started = self._drawn = time.monotonic()

    def advance(self, n: int = 1) -> None:
        self.count += n
        if time.monotonic() - self._drawn > 0.25:
            self._draw(end="")

    def _draw(self, end: str) -> None:
        self._drawn = time.monotonic()
        rate = self.count / max(self._drawn - self._started, 1e-9)
        of = f"/{self.total}" if self.total else ""
        print(f"\r{self.label}: {self.count}{of} ({rate:,.0f}/s)", end=end, file=sys.stderr, flush=True)

    def close(self) -> None:
        self._draw(end="\n")
