"""Resident-set limits: a process allowed at most N frames, and who leaves when it wants more.

`limit frames=N policy=P` gives a process a resident set of N pages. Every
access of that process is seen by its policy: a page already resident is a
hit; a page that is not (first touch included) is a fault, and when N pages
are resident one of them is evicted first, chosen by the policy exactly as
the textbooks define it:

    fifo   the page resident longest (loaded first); hits change nothing
    lru    the page whose last access is oldest; every hit makes a page newest
    clock  second chance: resident pages sit on a circle in the order they were
           loaded, each with a reference bit, set by every access (the one that
           loads the page too). On a fault the hand looks at the page under it:
           bit set -> clear it and move on; bit clear -> that page is evicted,
           the new one takes its place (bit set) and the hand moves past it
    opt    Belady's optimal: the page whose next use lies farthest in the
           future (never used again counts as infinitely far; ties go to the
           page loaded first). Only for trace replay, where the future is known;
           an access the trace does not contain counts as never used again

An evicted page leaves the process as reclaim would take it: an anonymous
page goes to swap (its entry becomes a swap entry), a zero-page mapping is
simply dropped, a file page is unmapped (it stays in the page cache). A page
that leaves the process any other way (munmap, reclaim, exit) leaves the
resident set too. The policy counts its faults and evictions.
"""
from __future__ import annotations

import numpy as np

POLICIES = ("fifo", "lru", "clock", "opt")
INF = 1 << 62


class Policy:
    name = ""

    def __init__(self):
        self.pages: dict[int, int] = {}        # resident vpn -> policy data, in load order

    def __len__(self) -> int:
        return len(self.pages)

    def __contains__(self, vpn: int) -> bool:
        return vpn in self.pages

    def hit(self, vpn: int) -> None:
        pass

    def load(self, vpn: int) -> None:
        self.pages[vpn] = 0

    def victim(self) -> int:
        return next(iter(self.pages))

    def forget(self, vpn: int) -> None:
        self.pages.pop(vpn, None)


class Fifo(Policy):
    name = "fifo"


class Lru(Policy):
    name = "lru"

    def hit(self, vpn: int) -> None:
        del self.pages[vpn]                    # to the newest end
        self.pages[vpn] = 0


class Clock(Policy):
    name = "clock"

    def __init__(self):
        super().__init__()
        self.circle: list = []                 # vpn or None (a frame freed by forget)
        self.hand = 0

    def hit(self, vpn: int) -> None:
        self.pages[vpn] = 1

    def load(self, vpn: int) -> None:
        self.pages[vpn] = 1
        circle = self.circle
        if self.hand < len(circle) and circle[self.hand] is None:
            circle[self.hand] = vpn            # the evicted page's place
            self.hand = (self.hand + 1) % len(circle)
        elif None in circle:
            circle[circle.index(None)] = vpn
        else:
            circle.append(vpn)                 # still filling the frames

    def victim(self) -> int:
        circle, pages = self.circle, self.pages
        while True:
            vpn = circle[self.hand]
            if vpn is not None:
                if not pages[vpn]:
                    return vpn
                pages[vpn] = 0                 # second chance
            self.hand = (self.hand + 1) % len(circle)

    def forget(self, vpn: int) -> None:
        if self.pages.pop(vpn, None) is not None:
            self.circle[self.circle.index(vpn)] = None


class Opt(Policy):
    name = "opt"

    def __init__(self, future: np.ndarray, pos: int):
        super().__init__()
        self.seq = future                      # the page of every access, in order
        self.cursor = pos
        self.next_use = _next_uses(future)     # for each access, the next one of its page

    def _see(self, vpn: int) -> None:
        k = self.cursor
        if k < len(self.seq) and int(self.seq[k]) == vpn:
            self.pages[vpn] = int(self.next_use[k])
            self.cursor = k + 1
        else:
            self.pages[vpn] = INF              # not in the trace: no known next use

    def hit(self, vpn: int) -> None:
        self._see(vpn)

    def load(self, vpn: int) -> None:
        self._see(vpn)

    def victim(self) -> int:
        best, far = None, -1
        for vpn, nxt in self.pages.items():   # load order: the first of equals wins
            if nxt > far:
                best, far = vpn, nxt
        return best


def _next_uses(seq: np.ndarray) -> np.ndarray:
    """For each position k, the next position holding the same page (INF if none)."""
    n = len(seq)
    out = np.full(n, INF, dtype=np.int64)
    if n == 0:
        return out
    order = np.lexsort((np.arange(n), seq))   # by page, then by position
    same = seq[order[1:]] == seq[order[:-1]]
    out[order[:-1][same]] = order[1:][same]
    return out


class ResidentLimit:
    """A process's resident-set limit (on its address space) and the policy enforcing it."""

    def __init__(self, frames: int, policy: Policy):
        self.frames = frames
        self.policy = policy
        self.faults = 0
        self.evictions = 0
        self.stuck = 0                        # evictions refused (no swap space for the page)

    def forget(self, vpn: int) -> None:
        self.policy.forget(vpn)

    def forget_range(self, lo: int, hi: int) -> None:
        pages = self.policy.pages
        if hi - lo < len(pages):
            gone = [v for v in range(lo, hi) if v in pages]
        else:
            gone = [v for v in pages if lo <= v < hi]
        for v in gone:
            self.policy.forget(v)


def make_policy(name: str, future: tuple | None) -> Policy:
    if name == "fifo":
        return Fifo()
    if name == "lru":
        return Lru()
    if name == "clock":
        return Clock()
    seq, pos = future
    return Opt(seq, pos)
