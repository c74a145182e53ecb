"""Pressure stall information for memory (kernel/sched/psi.c), in simulated time.

A task stalls on memory when it waits for it: direct reclaim, a swap-in from
the device or zswap, a file page read back after reclaim dropped it. Each
such wait adds simulated microseconds to the task's stall (the costs
below). A stall longer than a tick carries over: the task stays stalled for
the ticks that follow, up to MAX_BACKLOG_US (commands run between ticks, so
a `fill` that swaps for 3 s shows as 3 s of stall on the clock after it).
At the end of every tick, with each task's stall this tick at most a tick:

    some  the time at least one non-idle task was stalled: the longest stall
    full  the time all non-idle tasks were stalled at once: the shortest
          stall among the tasks that ran or stalled this tick (0 if any of
          them did not stall)

each capped at the tick's length. `total` adds them up (microseconds);
every 2 s of simulated time the averages over 10, 60 and 300 s are updated
as the kernel does: avg = avg * e + pct * (1 - e), e = exp(-2 s / window),
pct the share of the last 2 s spent stalled.
"""
from __future__ import annotations

import math

PSI_FREQ_US = 2_000_000
MAX_BACKLOG_US = 10_000_000
WINDOWS_S = (10, 60, 300)


class Psi:
    SWAP_READ_US = 150          # a 4 KiB random read from the swap device
    FILE_READ_US = 150          # a page of a file read back from disk
    ZSWAP_LOAD_US = 4           # decompressing a page from zswap
    RECLAIM_PAGE_US = 2         # direct reclaim, per page scanned

    def __init__(self, tick_us: int):
        self.tick_us = tick_us
        self.pending: dict[int, int] = {}       # pid -> stall (us) not yet accounted
        self.total = [0, 0]                     # some, full (us)
        self.avg = [[0.0] * 3, [0.0] * 3]
        self.period = [0, 0]                    # stall in the current 2 s period
        self.period_us = 0
        self.decay = tuple(math.exp(-PSI_FREQ_US / (w * 1_000_000)) for w in WINDOWS_S)

    def stall(self, proc, us: int) -> None:
        if proc is not None and us > 0:
            self.pending[proc.pid] = min(MAX_BACKLOG_US, self.pending.get(proc.pid, 0) + us)

    def tick(self, ran: set[int]) -> None:
        """Account one tick; ran holds the pids that were runnable this tick."""
        some = full = 0
        if self.pending:
            cap = self.tick_us
            stalls = {pid: min(us, cap) for pid, us in self.pending.items()}
            some = max(stalls.values())
            nonidle = ran | stalls.keys()
            full = min(stalls.get(pid, 0) for pid in nonidle)
            self.pending = {pid: us - cap for pid, us in self.pending.items() if us > cap}
        for k, v in ((0, some), (1, full)):
            self.total[k] += v
            self.period[k] += v
        self.period_us += self.tick_us
        if self.period_us >= PSI_FREQ_US:
            for k in (0, 1):
                pct = 100.0 * self.period[k] / self.period_us
                self.avg[k] = [a * e + pct * (1 - e) for a, e in zip(self.avg[k], self.decay)]
                self.period[k] = 0
            self.period_us = 0

    def lines(self) -> tuple[tuple[float, float, float, int], ...]:
        return tuple((*self.avg[k], self.total[k]) for k in (0, 1))
