"""leaky: allocates and writes size= bytes every tick and never frees them.

Without limit= it leaks until malloc fails (the commit limit) or the OOM
killer takes it; with limit= it stops there and sleeps, a steady leak that
is easy to watch in RSS and in its heap.
"""
from __future__ import annotations

from .base import SIZE, Workload
from ..errors import OutOfMemory


class Leaky(Workload):
    kind = "leaky"
    compress_ratio = 4.0          # leaked buffers are mostly zeros and patterns
    summary = "allocates size= bytes a tick, never frees (stops at limit=, if given)"
    options = {"size": (SIZE, 16 << 10, 1, 1 << 30), "limit": (SIZE, 0, 0, 1 << 40)}

    def __init__(self, opts):
        super().__init__(opts)
        self.leaked = 0
        self.failed = False

    def step(self, tasks, p) -> bool:
        size, limit = self.opts["size"], self.opts["limit"]
        if self.failed or (limit and self.leaked + size > limit):
            return False
        try:
            ptr = tasks.heap_malloc(p, size)
        except OutOfMemory as e:
            self.failed = True
            tasks.m.trace.emit(p.pid, "malloc-failed", f"size={size}: {e.reason}")
            return False
        tasks.heap_memset(p, ptr, size)
        self.leaked += size
        return True
