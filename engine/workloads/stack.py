"""stack: a deep recursion whose stack depth rises and falls.

Each tick the recursion goes deeper or returns by a few frames (256 bytes to
4 KiB each); now and then it dives towards depth= and comes back over the
next ticks. A deeper stack writes new pages (the [stack] mapping grows);
returning leaves the pages below the stack pointer resident until the
process scavenges (a notification, the idle scavenger, or `scavenge`).
"""
from __future__ import annotations

from .base import SIZE, Workload
from ..units import PAGE_SIZE


class Stack(Workload):
    kind = "stack"
    compress_ratio = 3.0          # stack frames
    summary = "recursion: the stack depth wanders up to depth= and back"
    options = {"depth": (SIZE, 512 << 10, PAGE_SIZE, 7 << 20)}

    def __init__(self, opts):
        super().__init__(opts)
        self.depth = PAGE_SIZE
        self.target = PAGE_SIZE

    def step(self, tasks, p) -> bool:
        rng = tasks.m.rng
        top = self.opts["depth"]
        if self.depth == self.target:
            if rng.random() < 0.05:
                self.target = rng.randint(top // 2, top)          # a deep dive
            else:
                self.target = max(PAGE_SIZE, min(top, self.depth + rng.randint(-8, 8) * 512))
        frames = rng.randint(1, 16) * rng.choice((256, 512, 1024, 4096))
        if self.target > self.depth:
            self.depth = min(self.target, self.depth + frames * 4)
        else:
            self.depth = max(self.target, self.depth - frames * 4)
        tasks.set_stack_depth(p, self.depth)
        return True
