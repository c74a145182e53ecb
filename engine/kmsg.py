"""The kernel log: a bounded ring of timestamped lines (what `kmsg` shows).

Lines carry the simulated time of the event, printed as dmesg does
(`[    1.230000] text`). The ring drops its oldest lines past `capacity` and
counts how many it dropped, so memory stays bounded on a long run.
"""
from __future__ import annotations

from collections import deque


class KernelLog:
    def __init__(self, capacity: int = 4096):
        self._lines: deque[tuple[int, str]] = deque(maxlen=capacity)
        self.dropped = 0
        self.seq = 0                  # lines ever logged

    def log(self, time_us: int, text: str) -> None:
        for line in text.splitlines() or [""]:
            if len(self._lines) == self._lines.maxlen:
                self.dropped += 1
            self._lines.append((time_us, line))
            self.seq += 1

    def lines(self) -> list[tuple[int, str]]:
        return list(self._lines)

    @staticmethod
    def format(time_us: int, text: str) -> str:
        return f"[{time_us // 1_000_000:5d}.{time_us % 1_000_000:06d}] {text}"
