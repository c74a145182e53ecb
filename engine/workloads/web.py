"""web: a server's steady churn of small objects, and a cache it can shrink.

Requests come in bursts: on a tick with traffic (three ticks in five) a
random number arrives (1 to 2*rate); on the others the server sleeps. A
request allocates a few short-lived objects (32 bytes to 2 KiB, weighted to
the small end), writes them, and frees them 1 to 5 ticks later; one request
in four also caches a response (256 bytes to 16 KiB, long-lived) in an LRU
cache capped at size=. A "low" notification drops a quarter of the cache, a
"critical" one half: software that caches is what notifications are for.
"""
from __future__ import annotations

import heapq
from collections import OrderedDict

from .base import INT, SIZE, Workload
from ..errors import OutOfMemory

OBJ_SIZES = (32, 48, 64, 96, 128, 256, 512, 1024, 2048)
OBJ_WEIGHTS = (20, 16, 14, 10, 10, 8, 6, 4, 2)


class Web(Workload):
    kind = "web"
    compress_ratio = 3.5          # text-heavy caches and buffers compress well
    summary = "a server: requests allocate and free small objects every tick; an LRU cache"
    options = {"rate": (INT, 8, 1, 10000), "size": (SIZE, 2 << 20, 0, 1 << 40)}

    def __init__(self, opts):
        super().__init__(opts)
        self.inflight: list = []                  # heap of (free at tick, seq, [ptrs])
        self.cache: OrderedDict = OrderedDict()   # ptr -> bytes
        self.cached = 0
        self.served = 0

    def step(self, tasks, p) -> bool:
        rng = tasks.m.rng
        tick = tasks.m.clock.tick
        busy = False
        while self.inflight and self.inflight[0][0] <= tick:
            for ptr in heapq.heappop(self.inflight)[2]:
                tasks.heap_free(p, ptr)
            busy = True
        n = rng.randint(1, 2 * self.opts["rate"]) if rng.random() < 0.6 else 0
        for _ in range(n):
            objs = []
            try:
                for size in rng.choices(OBJ_SIZES, OBJ_WEIGHTS, k=rng.randint(2, 6)):
                    ptr = tasks.heap_malloc(p, size, hint="short")
                    objs.append(ptr)
                    tasks.heap_memset(p, ptr, size)
                if rng.random() < 0.25 and self.opts["size"]:
                    self._cache_put(tasks, p, rng.randint(256, 16384))
            except OutOfMemory:
                tasks.m.trace.emit(p.pid, "malloc-failed", "request dropped (ENOMEM)")
            heapq.heappush(self.inflight, (tick + rng.randint(1, 5), self.served, objs))
            self.served += 1
        return busy or n > 0

    def _cache_put(self, tasks, p, size: int) -> None:
        ptr = tasks.heap_malloc(p, size, hint="long")
        tasks.heap_memset(p, ptr, size)
        self.cache[ptr] = size
        self.cached += size
        while self.cached > self.opts["size"]:
            self._evict(tasks, p)

    def _evict(self, tasks, p) -> None:
        ptr, size = self.cache.popitem(last=False)
        self.cached -= size
        tasks.heap_free(p, ptr)

    def on_pressure(self, tasks, p, level: str) -> None:
        drop = len(self.cache) // (2 if level == "critical" else 4)
        for _ in range(drop):
            self._evict(tasks, p)
        if drop:
            tasks.m.trace.emit(p.pid, "cache-drop", f"entries={drop} level={level}")
