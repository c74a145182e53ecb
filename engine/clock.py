"""Simulated time: the tick counter, and the ticker thread that paces it.

The machine advances only through Machine.step(); this module decides *when*
(SimPy's rt.py idea): while running, the Ticker calls step(1) `hz` times per
wall-clock second; paused, only `step N` moves time. Each tick is `tick_ms`
simulated milliseconds, so simulated time is exact whatever the pace.
"""
from __future__ import annotations

import threading
import time


class Clock:
    """Tick count and pacing state. Guarded by the engine lock."""

    def __init__(self, hz: int, tick_ms: int, paused: bool):
        self.tick = 0
        self.hz = hz
        self.tick_ms = tick_ms
        self.paused = paused

    @property
    def uptime_us(self) -> int:
        return self.tick * self.tick_ms * 1000


class Ticker(threading.Thread):
    """Calls machine.step(1) at the clock's rate while the clock runs."""

    def __init__(self, machine):
        super().__init__(name="memfs-ticker", daemon=True)
        self.machine = machine
        self._cv = threading.Condition()
        self._stopping = False

    def poke(self) -> None:
        """Wake the ticker: the clock was paused, resumed or re-rated."""
        with self._cv:
            self._cv.notify_all()

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=2)

    def run(self) -> None:
        clock = self.machine.clock
        next_t = time.monotonic()          # when the next tick is due
        while True:
            with self._cv:
                if self._stopping:
                    return
                if clock.paused:
                    self._cv.wait()
                    next_t = time.monotonic()
                    continue
                delay = next_t - time.monotonic()
                if delay > 0:
                    self._cv.wait(delay)   # a poke re-checks the state; next_t stays
                    continue
                if delay < -1.0:
                    next_t = time.monotonic()   # fell far behind: do not burst to catch up
            self.machine.step(1)
            next_t += 1.0 / clock.hz
