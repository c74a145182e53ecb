"""Background tasks: kernel threads and idle work that run between process steps.

Each tick, after every process ran, the background tasks run in priority
order (lower number first, as nice values): a task runs when `period` ticks
have passed since its last run; an idle-class task waits, past that, for a
tick that left a CPU idle (no process ran on it), as SCHED_IDLE work does.

Tasks at this layer:
- vmpressure: watches the zones' free pages against their watermarks; below
  low it notifies every process ("low"), below min "critical", at most once
  per `pressure_interval` ticks while the condition lasts. The kernel only
  notifies: each process's heap scavenges itself when it next runs.
- scavenger (idle): the low-priority background scavenger of the seed
  discussion. On an idle tick it lets one process (round robin, in pid order)
  scavenge its heap and its stack below the stack pointer.
- kswapd0: page reclaim in the background (reclaim/vmscan.py).
- squeeze: external pressure from `pressure SIZE` (reclaim/pressure.py).
- prefetch (idle): swapped pages back into RAM while memory is free.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

PRIO_KERNEL = 0
PRIO_IDLE = 19


@dataclass
class BgTask:
    name: str
    priority: int
    period: int                                  # ticks between runs
    run: Callable[[int], None]                   # run(tick)
    idle_only: bool = False
    runs: int = 0
    next_due: int = 0                            # first tick it may run again


class Background:
    def __init__(self, machine):
        self.m = machine
        self.tasks: list[BgTask] = []
        self.idle_ticks = 0
        self._last_notice = -10 ** 9
        self._scavenge_next = 0                  # the next pid the idle scavenger visits
        self.add(BgTask("vmpressure", PRIO_KERNEL, 1, self._vmpressure))
        self.add(BgTask("scavenger", PRIO_IDLE, machine.config.clock.scavenge_period,
                        self._idle_scavenge, idle_only=True))
        self.add(BgTask("kswapd0", PRIO_KERNEL, 1, machine.reclaim.kswapd))
        self.add(BgTask("hwpoison", PRIO_KERNEL, 1, machine.memfail.tick))
        self.add(BgTask("balloon", PRIO_KERNEL, 1, machine.balloon.tick))
        self.add(BgTask("kcompactd0", PRIO_KERNEL, 1, machine.compactor.kcompactd))
        self.add(BgTask("squeeze", PRIO_KERNEL, 1, machine.pressure_src.run))
        self.add(BgTask("prefetch", PRIO_IDLE, 10, machine.pressure_src.prefetch, idle_only=True))

    def add(self, task: BgTask) -> None:
        self.tasks.append(task)
        self.tasks.sort(key=lambda t: t.priority)

    def run(self, tick: int, busy_cpus: int) -> None:
        idle = busy_cpus < self.m.config.cpus
        if idle:
            self.idle_ticks += 1
        for t in self.tasks:
            if tick < t.next_due or (t.idle_only and not idle):
                continue
            t.next_due = tick + t.period
            t.runs += 1
            t.run(tick)

    # ------------------------------------------------------------------

    def pressure_level(self) -> str | None:
        level = None
        for z in self.m.zones:
            if not z.managed_pages:
                continue
            # The allocator keeps a zone at its watermark, not under it: at it is short.
            if z.free_pages <= z.wmark_min:
                return "critical"
            if z.free_pages <= z.wmark_low:
                level = "low"
        return level

    def _vmpressure(self, tick: int) -> None:
        level = self.pressure_level()
        if level is None or tick - self._last_notice < self.m.config.clock.pressure_interval:
            return
        self._last_notice = tick
        self.m.tasks.notify_all(level)

    def _idle_scavenge(self, tick: int) -> None:
        procs = self.m.tasks.procs
        users = sorted(pid for pid, p in procs.items() if p.mm is not None)
        if not users:
            return
        i = next((k for k, pid in enumerate(users) if pid >= self._scavenge_next), 0)
        p = procs[users[i]]
        self._scavenge_next = p.pid + 1
        self.m.tasks.scavenge_process(p, "idle")
