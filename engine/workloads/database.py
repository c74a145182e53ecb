"""database: maps a data file shared and scans and updates it.

At start it creates /var/lib/NAME-PID.db of size= bytes and maps it shared,
read-write (page cache: Cached, Mapped; updated pages Dirty). Queries
arrive on half the ticks (it sleeps on the others); a query scans rate=
pages in order from where the last one stopped (read faults bring pages in
from the file: major faults, pgpgin) and updates one page in eight of them,
chosen at random in the whole file (each update writes a new value).
"""
from __future__ import annotations

from .base import INT, SIZE, Workload
from ..units import PAGE_SIZE
from ..vmm.vma import VM_READ, VM_WRITE


class Database(Workload):
    kind = "database"
    compress_ratio = 2.0          # packed rows and indexes compress less
    summary = "maps a size= data file shared; scans rate= pages a tick and updates some"
    options = {"size": (SIZE, 64 << 20, PAGE_SIZE, 1 << 40), "rate": (INT, 64, 1, 1 << 20)}

    def __init__(self, opts):
        super().__init__(opts)
        self.base = 0
        self.cursor = 0
        self.path = ""

    def start(self, tasks, p) -> None:
        self.path = f"/var/lib/{p.comm}-{p.pid}.db"
        vmm = tasks.vmm
        f = vmm.files.get(self.path) or vmm.create_file(self.path, self.opts["size"])
        self.base = vmm.mmap(p, self.opts["size"], addr=None, prot=VM_READ | VM_WRITE, shared=True,
                             file=f, offset=0, populate=False)
        tasks.m.trace.emit(p.pid, "mmap", f"{self.base:#x} {self.opts['size']} {self.path} shared")

    def step(self, tasks, p) -> bool:
        rng = tasks.m.rng
        if rng.random() < 0.5:
            return False                                  # no query this tick
        pages = self.opts["size"] // PAGE_SIZE
        n = min(self.opts["rate"], pages)
        first = self.cursor
        end = first + n
        tasks.vmm.touch(p, self.base + first * PAGE_SIZE, min(end, pages) * PAGE_SIZE - first * PAGE_SIZE, False)
        if end > pages:
            tasks.vmm.touch(p, self.base, (end - pages) * PAGE_SIZE, False)
        self.cursor = end % pages
        for _ in range(max(1, n // 8)):
            page = rng.randrange(pages)
            tasks.vmm.write_value(p, self.base + page * PAGE_SIZE, rng.getrandbits(64) | 1)
        return True
