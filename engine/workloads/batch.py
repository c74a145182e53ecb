"""batch: a job runner that forks workers.

The parent keeps workers= children alive. Each worker (a fork: it shares the
parent's pages copy-on-write) allocates size= bytes, writes them all, works
on random parts of them for about rate= ticks, frees them and exits; the
parent then forks the next one. The parent sleeps while its workers run.
"""
from __future__ import annotations

from .base import INT, SIZE, Workload


class Batch(Workload):
    kind = "batch"
    compress_ratio = 2.5          # mixed numeric working data
    summary = "forks workers= children; each allocates size=, works ~rate= ticks, exits"
    options = {"workers": (INT, 2, 1, 64), "size": (SIZE, 4 << 20, 4096, 1 << 36),
               "rate": (INT, 50, 1, 1 << 20)}

    def __init__(self, opts):
        super().__init__(opts)
        self.children: set[int] = set()
        self.jobs = 0

    def step(self, tasks, p) -> bool:
        self.children &= set(tasks.procs)                 # reap the finished ones
        forked = False
        while len(self.children) < self.opts["workers"]:
            child = tasks.do_fork(p)
            rng = tasks.m.rng
            ticks = max(1, self.opts["rate"] + rng.randint(-self.opts["rate"] // 4,
                                                            self.opts["rate"] // 4))
            child.workload = Worker(self.opts["size"], ticks)
            child.state = "R"
            self.children.add(child.pid)
            self.jobs += 1
            forked = True
        return forked

    def stop(self, tasks, p) -> None:
        self.children.clear()


class Worker(Workload):
    """One batch job (not spawned directly: the batch parent forks it)."""
    kind = "batch-worker"
    compress_ratio = 2.5          # mixed numeric working data
    options = {}

    def __init__(self, size: int, ticks: int):
        super().__init__({})
        self.size = size
        self.left = ticks
        self.buf = 0

    def describe(self) -> str:
        return f"batch-worker size={self.size} ticks={self.left}"

    def step(self, tasks, p) -> bool:
        if not self.buf:
            self.buf = tasks.heap_malloc(p, self.size)
            tasks.heap_memset(p, self.buf, self.size)
            return True
        self.left -= 1
        if self.left <= 0:
            tasks.heap_free(p, self.buf)
            self.buf = 0
            tasks.exit_from_program(p, 0)
            return False
        rng = tasks.m.rng
        off = rng.randrange(0, self.size, 4096)
        tasks.heap_memset(p, self.buf + off, min(64 << 10, self.size - off))
        return True
