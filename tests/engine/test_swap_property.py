"""Random workloads under memory pressure: every frame and slot accounted once, no value lost.

A hypothesis state machine runs the small machine with most of its RAM held
by a squeeze (so a few MiB of process memory already means swapping) through
random spawn, mmap + fill (with a recorded seed), refill, verify, touch, fork,
munmap, madvise (dontneed and free), kill, resident-set limits, ticks, more
squeezes, swapon of small extra areas, swapoff (which may fail for lack of
RAM: then nothing may have changed) and drop_caches. The OOM killer may take
processes at any point: the model follows m.has_pid.

The model: per process, the ranges it filled and the seed of each (a fork
copies them); dontneed'd ranges read as fresh zeros; a range given up with
MADV_FREE, or whose fill was cut short by the OOM killer, is no longer
followed. After every step check_invariants must pass (frames, LRU lists,
swap slots, swap cache and zswap each accounted exactly once), every followed
range must read back exactly what was written, and every zeroed one zeros:
no page's content is ever lost.
"""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from engine import Machine
from engine.errors import OutOfMemory
from engine.invariants import check_invariants
from vmm_common import peek
from engine.pmm.frames import TYPE_MASK, PageType
from engine.vmm.vmm import fill_values
from memfs.machines import builtin

import yaml
from engine import parse

PAGE = 4096
MIB = 1 << 20
RW = 3
MAX_PROCS = 4
MAX_RANGES = 4
POLICIES = ("fifo", "lru", "clock")
# Squeezes together hold at most this much of the 54 MiB: with zswap's pool (at most 5%
# of RAM here) and the kernel's own pages, swapping can usually feed them; without swap
# (swapped off) a squeeze calls the OOM killer, as any allocation does.
MAX_SQUEEZED = 48 * MIB // PAGE


def machine() -> Machine:
    """The small machine, its zswap pool capped at 5% of RAM."""
    text = builtin("small").read_text()
    assert "max_pool_percent: 20" in text
    cfg = yaml.safe_load(text.replace("max_pool_percent: 20", "max_pool_percent: 5"))
    return Machine(parse(cfg, source="<swap property>"), paused=True)


def swap_state(m):
    """What a failed swapoff may not change: the counters, the areas' slots, every page
    table, and the type, flags and content of every frame in use. (Which free frames sit on
    the buddy lists and which on the per-cpu stacks may differ: frames it took and gave
    back went to the stacks.)"""
    mi = m.meminfo()
    flags = m.ft.flags_np()
    used = (flags & TYPE_MASK) != PageType.FREE
    return (mi, m.swaps(),
            [(a.name, bytes(a.count), bytes(a.cache), bytes(a.zsize), bytes(a.data), bytes(a.free))
             for a in m.swap.active()],
            np.flatnonzero(used).tobytes(), flags[used].tobytes(),
            m.ft.content_np()[used].tobytes(),
            {k: bytes(v) for k, v in m.vmm.tables.items()},
            [(p.pid, p.mm.rss, p.mm.swap_ents) for p in m.tasks.procs.values() if p.mm])


class SwapModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.m = machine()
        self.ranges: dict[int, list] = {}     # pid -> [(start, pages, seed or None for zeros)]
        self.extra = 0                        # swap areas added
        self.seeds = 1

    # the model ---------------------------------------------------------------

    def _prune(self) -> None:
        """Forget processes the OOM killer took."""
        for pid in [p for p in self.ranges if not self.m.has_pid(p)]:
            del self.ranges[pid]

    def _pid(self, i: int) -> int:
        pids = sorted(self.ranges)
        return pids[i % len(pids)]

    def _with_ranges(self):
        return [p for p in sorted(self.ranges) if self.ranges[p]]

    def _range(self, i: int, j: int):
        pids = self._with_ranges()
        pid = pids[i % len(pids)]
        k = j % len(self.ranges[pid])
        return pid, k, self.ranges[pid][k]

    def _seed(self) -> int:
        self.seeds += 1
        return self.seeds

    # set-up -----------------------------------------------------------------

    @initialize(held=st.integers(44, 48), ticks=st.sampled_from([40, 400, 1 << 30]),
                more=st.integers(32, 768))
    def start(self, held, ticks, more):
        """Most of RAM goes to a squeeze (taken over its first ticks), for a while or for
        good; then one process fills `more` pages more than are free."""
        self.m.squeeze(held * MIB, ticks=ticks)
        self.m.step(12)
        pid = self.m.tasks.spawn("p")
        self.ranges[pid] = []
        self.mmap_fill(0, self.m.meminfo().free + more)

    # rules ------------------------------------------------------------------

    @precondition(lambda self: len(self.ranges) < MAX_PROCS)
    @rule()
    def spawn(self):
        try:
            pid = self.m.tasks.spawn("p")
        except OutOfMemory:
            self._prune()
            return
        self.ranges[pid] = []
        self._prune()

    @precondition(lambda self: self.ranges)
    @rule(who=st.integers(0, 9), pages=st.one_of(st.integers(1, 64), st.integers(128, 512)))
    def mmap_fill(self, who, pages):
        pid = self._pid(who)
        if len(self.ranges[pid]) >= MAX_RANGES:
            return
        seed = self._seed()
        try:
            a = self.m.tasks.mmap(pid, pages * PAGE, prot=RW)
        except OutOfMemory:
            self._prune()
            return
        try:
            self.m.tasks.fill(pid, a, pages * PAGE, seed=seed)
        except OutOfMemory:
            pass                                  # cut short: not followed (if it survived)
        else:
            self.ranges[pid].append((a, pages, seed))
        self._prune()

    @precondition(lambda self: any(self.ranges.values()))
    @rule(i=st.integers(0, 9), j=st.integers(0, 9))
    def refill(self, i, j):
        """A new seed over a whole range (copy-on-write after a fork, dirty swap cache)."""
        pid, k, (a, pages, _) = self._range(i, j)
        seed = self._seed()
        del self.ranges[pid][k]
        try:
            self.m.tasks.fill(pid, a, pages * PAGE, seed=seed)
        except OutOfMemory:
            self._prune()
            return
        self.ranges[pid].append((a, pages, seed))
        self._prune()

    @precondition(lambda self: any(self.ranges.values()))
    @rule(i=st.integers(0, 9), j=st.integers(0, 9))
    def verify(self, i, j):
        pid, k, (a, pages, seed) = self._range(i, j)
        self._check(pid, a, pages, seed)

    @precondition(lambda self: any(self.ranges.values()))
    @rule(i=st.integers(0, 9), j=st.integers(0, 9), write=st.booleans(),
          lo=st.floats(0, 1), hi=st.floats(0, 1))
    def touch(self, i, j, write, lo, hi):
        """Touching changes no value (a write fault copies or reuses the page as it is)."""
        pid, k, (a, pages, _) = self._range(i, j)
        first, last = sorted((int(lo * pages), int(hi * pages)))
        last = min(max(last, first + 1), pages)
        try:
            self.m.tasks.touch(pid, a + first * PAGE, (last - first) * PAGE, write)
        except OutOfMemory:
            pass
        self._prune()

    @precondition(lambda self: self.ranges and len(self.ranges) < MAX_PROCS)
    @rule(who=st.integers(0, 9))
    def fork(self, who):
        pid = self._pid(who)
        try:
            child = self.m.tasks.fork(pid)
        except OutOfMemory:
            self._prune()
            return
        self.ranges[child] = list(self.ranges[pid])
        self._prune()

    @precondition(lambda self: any(self.ranges.values()))
    @rule(i=st.integers(0, 9), j=st.integers(0, 9), part=st.sampled_from(["all", "low", "high"]),
          how=st.sampled_from(["munmap", "dontneed", "free"]))
    def give_up(self, i, j, part, how):
        """munmap, MADV_DONTNEED or MADV_FREE of a range or one half of it."""
        pid, k, (a, pages, seed) = self._range(i, j)
        half = pages // 2
        if part == "all" or half == 0:
            lo, hi = 0, pages
        elif part == "low":
            lo, hi = 0, half
        else:
            lo, hi = half, pages
        start, length = a + lo * PAGE, (hi - lo) * PAGE
        if how == "munmap":
            self.m.tasks.munmap(pid, start, length)
        else:
            self.m.tasks.madvise(pid, start, length, how)
        keep = []
        if lo:
            keep.append((a, lo, seed))
        if hi < pages:
            keep.append((a + hi * PAGE, pages - hi, seed))
        if how == "dontneed":
            keep.append((start, hi - lo, None))    # reads as zeros from now on
        self.ranges[pid][k:k + 1] = keep

    @precondition(lambda self: len(self.ranges) > 1)
    @rule(who=st.integers(0, 9))
    def kill(self, who):
        pid = self._pid(who)
        self.m.tasks.kill(pid)
        del self.ranges[pid]

    @precondition(lambda self: self.ranges)
    @rule(who=st.integers(0, 9), frames=st.sampled_from([0, 1, 3, 8, 64]),
          policy=st.sampled_from(POLICIES))
    def limit(self, who, frames, policy):
        pid = self._pid(who)
        self.m.tasks.limit(pid, frames, policy)
        view = self.m.tasks.limit_view(pid)
        assert (view is None) == (frames == 0)
        self._prune()

    @rule(n=st.integers(1, 30))
    def step(self, n):
        self.m.step(n)
        self._prune()

    def _squeezed(self) -> int:
        return sum(sq.pages for sq in self.m.pressure_src.squeezes)

    @rule(mib=st.integers(1, 16), ticks=st.integers(1, 60))
    def squeeze(self, mib, ticks):
        if self._squeezed() + mib * MIB // PAGE > MAX_SQUEEZED:
            return
        self.m.squeeze(mib * MIB, ticks=ticks)
        self.m.step(2)
        self._prune()

    @precondition(lambda self: self.extra < 4)
    @rule(mib=st.integers(1, 4), prio=st.sampled_from([None, 0, 5, 100]))
    def swapon(self, mib, prio):
        self.extra += 1
        self.m.swapon(f"/swap{self.extra}", mib * MIB, prio)

    @precondition(lambda self: self.m.swaps())
    @rule(which=st.integers(0, 9))
    def swapoff(self, which):
        names = [s.name for s in self.m.swaps()]
        name = names[which % len(names)]
        before = swap_state(self.m)
        try:
            self.m.swapoff(name)
        except OutOfMemory:
            assert swap_state(self.m) == before, f"a failed swapoff of {name} changed the machine"
            return
        assert name not in [s.name for s in self.m.swaps()]

    @rule(what=st.sampled_from(["1", "3"]))
    def drop_caches(self, what):
        self.m.sysctl_write("drop_caches", what)

    # the rule -----------------------------------------------------------------

    def _check(self, pid, a, pages, seed):
        if not self.m.has_pid(pid):
            return
        try:
            bad = self.m.tasks.verify(pid, a, pages * PAGE, seed=seed or 0)
        except OutOfMemory:
            assert not self.m.has_pid(pid), "verify failed, yet the process lives"
            self._prune()
            return
        if seed is None:
            assert bad == pages, f"pid {pid}: {pages - bad} of {pages} zeroed pages at " \
                                 f"{a:#x} hold values"
        else:
            assert bad == 0, f"pid {pid}: {bad} of {pages} pages at {a:#x} (seed {seed}) lost " \
                             f"their values"

    @invariant()
    def nothing_lost(self):
        """Every followed page holds its value, wherever it is (peeked, not faulted in)."""
        check_invariants(self.m)
        for pid in sorted(self.ranges):
            for a, pages, seed in self.ranges[pid]:
                have = peek(self.m, pid, a, pages)
                want = np.zeros(pages, dtype=np.uint64) if seed is None else \
                    fill_values(a, pages, seed)
                bad = np.flatnonzero(have != want)
                assert not bad.size, f"pid {pid}: {bad.size} of {pages} pages from {a:#x} " \
                                     f"(seed {seed}) lost their value, the first at " \
                                     f"{a + int(bad[0]) * PAGE:#x}"


SwapModel.TestCase.settings = settings(
    max_examples=15, stateful_step_count=30, derandomize=True, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestSwapModel = SwapModel.TestCase
