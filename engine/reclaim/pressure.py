"""External memory pressure and swap prefetch: two background tasks.

squeeze (`pressure SIZE [ticks=N]`): something outside the simulated
processes (a driver, a burst of kernel allocations, another tenant) wants
SIZE of RAM for N ticks. The kernel first tells every process memory is low
(the notification is handled on each process's next run: its heap
scavenges), then from the next tick the squeeze takes its pages, at most a
tenth of them a tick (at most 64 MiB), through the same allocator as everyone (kswapd,
direct reclaim, the OOM killer). N ticks after it started it lets go of
everything. What the processes gave back when notified is used before
anything has to be swapped.

prefetch (idle): on a tick that leaves a CPU idle, while a zone has more than
twice its high watermark free, swapped-out pages are read back into the
swap cache (at most PREFETCH_BATCH a run, scanning at most PREFETCH_SCAN
slots), so that a process touching them again finds them in RAM (a minor
fault). They stay clean in the swap cache: reclaim drops them at no cost if
memory is needed again.
"""
from __future__ import annotations

from array import array

from ..pmm.frames import MigrateType, PageType
from ..pmm.zone import ZONE_NORMAL
from ..vmm.vmm import FaultOom
from .swap import COUNT_MASK

MAX_RATE = 16384              # pages a squeeze takes at most in one tick (64 MiB)
PREFETCH_BATCH = 32
PREFETCH_SCAN = 4096
SQUEEZE_PID = 0               # the squeeze's stalls are accounted to "no process" (pid 0)


class Squeeze:
    def __init__(self, pages: int, ticks: int, start: int):
        self.pages = pages
        self.ticks = ticks
        self.start = start
        self.frames = array("I")
        self.rate = min(-(-pages // min(ticks, 10)), MAX_RATE)
        self.gave_up = False


class _Pid0:
    """Who allocates for the squeeze: no simulated process (kmsg calls it "pressure")."""
    pid = SQUEEZE_PID
    comm = "pressure"
    oom_score_adj = 0


class Pressure:
    def __init__(self, machine):
        self.m = machine
        self.squeezes: list[Squeeze] = []
        self.cursor: dict[int, int] = {}          # swap type -> next slot prefetch looks at
        self.prefetched = 0

    def held_pages(self) -> int:
        return sum(len(s.frames) for s in self.squeezes)

    # --- the squeeze -------------------------------------------------------

    def add(self, pages: int, ticks: int) -> None:
        self.squeezes.append(Squeeze(pages, ticks, self.m.clock.tick))

    def run(self, tick: int) -> None:
        for sq in list(self.squeezes):
            if tick - sq.start >= sq.ticks:
                self._release(sq)
                continue
            if sq.gave_up or len(sq.frames) >= sq.pages:
                continue
            want = min(sq.rate, sq.pages - len(sq.frames))
            for _ in range(want):
                pfn = self._take()
                if pfn is None:
                    sq.gave_up = True
                    self.m.kmsg.log(self.m.clock.uptime_us,
                                    f"pressure: squeeze stopped at {len(sq.frames)} of "
                                    f"{sq.pages} pages: out of memory")
                    break
                sq.frames.append(pfn)

    def _take(self) -> int | None:
        m = self.m
        kw = dict(node=0, cpu=0, highest=ZONE_NORMAL, mt=MigrateType.UNMOVABLE,
                  ptype=PageType.KERNEL)
        pfn = m.pmm.try_alloc_page(**kw)
        if pfn is not None:
            return pfn
        try:
            return m.reclaim.alloc_slow(_Pid0, **kw)
        except FaultOom:
            return None

    def _release(self, sq: Squeeze) -> None:
        for pfn in sq.frames:
            self.m.pmm.free_page(pfn, cpu=0)
        self.squeezes.remove(sq)
        self.m.kmsg.log(self.m.clock.uptime_us, f"pressure: squeeze of {sq.pages} pages over "
                                                f"after {sq.ticks} ticks: {len(sq.frames)} pages "
                                                f"given back")
        self.m.trace.emit(0, "pressure-end", f"pages={len(sq.frames)}")

    # --- prefetch ----------------------------------------------------------

    def prefetch(self, tick: int) -> None:
        vmm = self.m.vmm
        done = 0
        for area in self.m.swap.active():
            if area.used_slots == 0:
                continue
            off = self.cursor.get(area.type, 1)
            for _ in range(min(PREFETCH_SCAN, area.nr_slots)):
                if off > area.nr_slots:
                    off = 1
                if area.count[off] & COUNT_MASK and not area.cache[off]:
                    if not vmm.prefetch(area, off):
                        self.cursor[area.type] = off
                        self._count(done)
                        return
                    done += 1
                    if done >= PREFETCH_BATCH:
                        self.cursor[area.type] = off + 1
                        self._count(done)
                        return
                off += 1
            self.cursor[area.type] = off
        self._count(done)

    def _count(self, done: int) -> None:
        if done:
            self.prefetched += done
            self.m.trace.emit(0, "prefetch", f"pages={done}")
