"""Random hot-plug and faulty RAM under process workloads: every frame accounted, no value lost.

A hypothesis state machine runs the small machine (64 MiB, 128 MiB blocks)
through random probes (below 4 GiB, where blocks join DMA32, and above, where
they join Normal or Movable), DIMM adds (at 4 GiB and up, added offline) and
removes, onlining to the default, kernel or Movable zone, offlining, hard and
soft offlining of pages (a process's page, a free frame, any frame), bursts of
injected failures, balloon targets (0, small, about the free memory, far more
than there is) with the ticks that move the balloon, mixed with spawn, mmap +
fill (with a recorded seed), single writes, fork, kill and ticks.

The model: which hot-added blocks are online (so MemTotal = 13825 + 32768 per
online hot-added block, whatever was poisoned), the poisoned frames, and per
process the ranges it filled with their seeds plus the single values it wrote
since (a fork copies both). A hard offline may kill exactly the processes that
map the frame or hold its swap slot, and only for an anonymous page or a dirty
file page; they are dropped from the model. Refusals that are checked before
anything moves (an unmovable frame, no room, a zone crossing, a kernel page)
must leave the machine as it was. A DIMM removal migrates exactly the pages in
use on the DIMM, each once. After every step check_invariants must pass
and every followed page must hold its value, wherever it is (peeked, not
faulted in: in a frame, in the swap cache or in its swap slot). The balloon
holds exactly the frames typed BALLOON, all in online blocks, none poisoned;
it moves towards its target by at most RATE pages a tick (inflating may stop
short when nothing can be had, deflating never does), and no frame it takes
was offline, poisoned or absent before.

Left to test_hotplug.py's own cases: PROT_NONE pages, shared anonymous
memory and dimm add with online=.
"""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from engine import Machine, load
from engine.devices.balloon import RATE
from engine.devices.memfail import AlreadyPoisoned
from engine.errors import Busy, Exists, InvalidArgument, IoError, NoDevice, OutOfMemory
from engine.invariants import check_invariants
from vmm_common import peek
from engine.pmm.frames import DIRTY, SWAPCACHE, TYPE_MASK, PageType
from engine.vmm import pte as P
from engine.vmm.vmm import fill_values
from memfs.machines import builtin

PAGE = 4096
MIB = 1 << 20
G = 1 << 30
RW = 3
BLOCK = 128 * MIB
BP = BLOCK // PAGE
BOOT_TOTAL = 13825
MAX_PROCS = 4
MAX_RANGES = 3
MAX_BLOCKS = 5                       # hot-added blocks at a time
# probe addresses: blocks 1 and 2 (DMA32), 33 and 35 (Normal or Movable, between DIMMs)
PROBES = (BLOCK, 2 * BLOCK, 4 * G + BLOCK, 4 * G + 3 * BLOCK)
ANON, FILE, FREE = int(PageType.ANON), int(PageType.FILE), int(PageType.FREE)
HWPOISON, OFFLINE = int(PageType.HWPOISON), int(PageType.OFFLINE)
BALLOON, NOPAGE = int(PageType.BALLOON), int(PageType.NOPAGE)
# refusals raised before anything is touched
EARLY = ("cannot be migrated", "frames free elsewhere", "spans more than one zone",
         "already", "cannot go to", "no zone can take it")


def check(m) -> None:
    check_invariants(m)


def snapshot(m):
    """What a refusal may not change."""
    flags = m.ft.flags_np()
    used = (flags & TYPE_MASK) != FREE
    return (m.meminfo(), [(z.start_pfn, z.end_pfn, z.present_pages, z.managed_pages, z.free_pages,
                           z.wmark_min, tuple(z.lowmem_reserve)) for z in m.zones],
            {i: b.online for i, b in m.hotplug.blocks.items()}, sorted(m.poisoned),
            np.flatnonzero(used).tobytes(), flags[used].tobytes(),
            m.ft.content_np()[used].tobytes(), {k: bytes(v) for k, v in m.vmm.tables.items()})


def users(m, pids, pfn) -> set:
    """The followed processes whose PTEs map pfn or, for a swap-cache page, its slot."""
    entry = None
    if m.ft.flags[pfn] & SWAPCACHE:
        area, off = m.vmm.slot_of(pfn)
        entry = P.swp_entry(area.type, off)
    out = set()
    for pid in pids:
        for _, _, vas, ents, *_ in m.pte_dump(pid).vmas:
            for e in ents.tolist():
                if (P.is_present(e) and not e & P.SPECIAL and P.pfn_of(e) == pfn) or e == entry:
                    out.add(pid)
                    break
            if pid in out:
                break
    return out


class HotplugModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.m = Machine(load(builtin("small")), paused=True)
        self.ranges: dict[int, list] = {}     # pid -> [(start, pages, seed)]
        self.writes: dict[int, dict] = {}     # pid -> {va: value} written after the fill
        self.online: set[int] = set()         # hot-added blocks online
        self.added: set[int] = set()          # hot-added blocks
        self.poisoned: set[int] = set()
        self.seeds = 1
        self.value = 1 << 40

    # the model ---------------------------------------------------------------

    def _prune(self) -> set:
        gone = {p for p in self.ranges if not self.m.has_pid(p)}
        for pid in gone:
            del self.ranges[pid]
            del self.writes[pid]
        return gone

    def _pid(self, i):
        pids = sorted(self.ranges)
        return pids[i % len(pids)]

    def _block(self, i, online):
        pool = sorted(self.online if online else self.added - self.online)
        return pool[i % len(pool)] if pool else None

    def _refused(self, e, before, what):
        if any(t in e.reason for t in EARLY):
            assert snapshot(self.m) == before, f"a refused {what} changed the machine: {e.reason}"

    # hot-plug ------------------------------------------------------------------

    def _online(self, b, how) -> None:
        before = snapshot(self.m)
        try:
            self.m.memory_block_set(b, how)
        except InvalidArgument:                  # the zone would cross another one
            assert snapshot(self.m) == before
            return
        self.online.add(b)

    @precondition(lambda self: len(self.added) < MAX_BLOCKS - 1)
    @rule(where=st.sampled_from(PROBES + ("dimm1", "dimm2")),
          how=st.sampled_from([None, "online", "online_kernel", "online_movable"]))
    def hot_add(self, where, how):
        """probe a block or plug in a DIMM of one or two blocks; then online them (or not)."""
        before = snapshot(self.m)
        try:
            if isinstance(where, int):
                new = [self.m.memory_probe(where)]
            else:
                d = self.m.dimm_add(int(where[-1]) * BLOCK)
                new = list(self.m.hotplug.dimms[d])
        except (Exists, OutOfMemory):                # taken, or no room for the memmap
            assert snapshot(self.m) == before
            return
        self.added.update(new)
        for b in new:
            if how:
                self._online(b, how)

    @precondition(lambda self: self.added - self.online)
    @rule(i=st.integers(0, 9), how=st.sampled_from(["online", "online_kernel", "online_movable"]))
    def online_block(self, i, how):
        self._online(self._block(i, online=False), how)

    @precondition(lambda self: self.online)
    @rule(i=st.integers(0, 9))
    def offline_block(self, i):
        b = self._block(i, online=True)
        before = snapshot(self.m)
        try:
            self.m.memory_block_set(b, "offline")
        except (Busy, InvalidArgument) as e:
            self._refused(e, before, "offline")
            return
        self.online.discard(b)

    @precondition(lambda self: self.m.hotplug.dimms)
    @rule(i=st.integers(0, 9))
    def dimm_remove(self, i):
        dimms = sorted(self.m.hotplug.dimms)
        d = dimms[i % len(dimms)]
        indexes = list(self.m.hotplug.dimms[d])
        states = {j: self.m.hotplug.blocks[j].online for j in indexes}
        total = self.m.meminfo().total
        s, e = indexes[0] * BP, (indexes[-1] + 1) * BP
        types = self.m.ft.flags_np()[s:e] & TYPE_MASK
        in_use = int(np.count_nonzero(~np.isin(types, (FREE, OFFLINE, HWPOISON, NOPAGE))))
        before = snapshot(self.m)
        try:
            moved = self.m.dimm_remove(d)
        except Busy as err:
            assert {j: self.m.hotplug.blocks[j].online for j in indexes} == states
            assert self.m.meminfo().total == total
            self._refused(err, before, "dimm remove")
            return
        assert moved == in_use, f"dimm{d}: {moved} pages migrated, {in_use} were in use there"
        self.poisoned = {p for p in self.poisoned if not s <= p < e}
        self.added -= set(indexes)
        self.online -= set(indexes)

    # faulty RAM ----------------------------------------------------------------

    def _target(self, kind, i, j):
        m = self.m
        if kind == "process" and any(self.ranges.values()):
            pids = [p for p in sorted(self.ranges) if self.ranges[p]]
            pid = pids[i % len(pids)]
            a, pages, _ = self.ranges[pid][j % len(self.ranges[pid])]
            e = 0
            t = m.vmm.leaf(m.tasks.procs[pid].mm, a + (j % pages) * PAGE)
            if t is not None:
                e = t[((a >> 12) + j % pages) & 511]
            if P.is_present(e) and not e & P.SPECIAL:
                return P.pfn_of(e)
        ranges = [r for rs in m.node_ram for r in rs]
        flags = m.ft.flags_np()
        if kind == "free":
            free = np.concatenate([np.flatnonzero((flags[s:e] & TYPE_MASK) == FREE) + s
                                   for s, e in ranges])
            if free.size:
                return int(free[(i * 7919 + j) % free.size])
        total = sum(e - s for s, e in ranges)
        k = (i * 104729 + j * 7919) % total
        for s, e in ranges:
            if k < e - s:
                return s + k
            k -= e - s

    @rule(kind=st.sampled_from(["process", "free", "any"]), i=st.integers(0, 1 << 16),
          j=st.integers(0, 1 << 16), hard=st.booleans())
    def offline_page(self, kind, i, j, hard):
        m = self.m
        pfn = self._target(kind, i, j)
        t = m.ft.flags[pfn] & TYPE_MASK
        dirty = bool(m.ft.flags[pfn] & DIRTY)
        could_die = users(m, sorted(self.ranges), pfn) if t == ANON or (t == FILE and dirty) \
            else set()
        before = snapshot(m)
        try:
            m.offline_page(pfn << 12, hard=hard)
        except (Busy, NoDevice, IoError, AlreadyPoisoned):
            assert snapshot(m) == before, f"a refused page offline of {pfn:#x} changed things"
            assert not self._prune()
            return
        gone = self._prune()
        if hard:
            assert gone == could_die, f"hard offline of {pfn:#x} ({PageType(t).name}) killed " \
                                      f"{sorted(gone)}, its users were {sorted(could_die)}"
        else:
            assert not gone, "soft offline killed a process"
        if t != HWPOISON:
            self.poisoned.add(pfn)

    # processes ---------------------------------------------------------------

    @rule(who=st.integers(0, 9),
          pages=st.one_of(st.integers(1, 64), st.integers(256, 2048), st.integers(8000, 16000)))
    def mmap_fill(self, who, pages):
        """mmap and fill a range in a process, a new one if who is past the last."""
        if who >= len(self.ranges) and len(self.ranges) < MAX_PROCS:
            try:
                pid = self.m.tasks.spawn("p")
            except OutOfMemory:
                self._prune()
                return
            self.ranges[pid] = []
            self.writes[pid] = {}
        if not self.ranges:
            return
        pid = self._pid(who)
        if len(self.ranges[pid]) >= MAX_RANGES:
            return
        self.seeds += 1
        try:
            a = self.m.tasks.mmap(pid, pages * PAGE, prot=RW)
            self.m.tasks.fill(pid, a, pages * PAGE, seed=self.seeds)
        except OutOfMemory:
            self._prune()
            return
        self.ranges[pid].append((a, pages, self.seeds))
        self._prune()

    @precondition(lambda self: any(self.ranges.values()))
    @rule(i=st.integers(0, 9), j=st.integers(0, 1 << 16))
    def write(self, i, j):
        pids = [p for p in sorted(self.ranges) if self.ranges[p]]
        pid = pids[i % len(pids)]
        a, pages, _ = self.ranges[pid][j % len(self.ranges[pid])]
        va = a + (j % pages) * PAGE
        self.value += 1
        try:
            self.m.tasks.write(pid, va, self.value)
        except OutOfMemory:
            self._prune()
            return
        self.writes[pid][va] = self.value
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
        self.writes[child] = dict(self.writes[pid])
        self._prune()

    @precondition(lambda self: self.ranges)
    @rule(who=st.integers(0, 9))
    def kill(self, who):
        pid = self._pid(who)
        self.m.tasks.kill(pid)
        del self.ranges[pid]
        del self.writes[pid]

    @rule(n=st.integers(1, 20), inject=st.sampled_from([None, None, "hard", "soft"]))
    def step(self, n, inject):
        """Ticks; with inject, failures injected at 500 frames a second (5 a tick) meanwhile:
        a hard one may kill anyone, a soft one no one."""
        m = self.m
        if inject:
            m.inject_faults(500, soft=inject == "soft")
        m.step(n)
        if inject:
            m.inject_faults(0)
        gone = self._prune()
        if inject == "soft":
            assert not gone
        if inject:
            assert self.poisoned <= m.poisoned
            self.poisoned = set(m.poisoned)

    # the balloon ---------------------------------------------------------------

    @rule(size=st.sampled_from(["zero", "zero", "small", "small", "free", "more"]),
          k=st.integers(0, 4096),
          n=st.integers(1, 6))
    def balloon(self, size, k, n):
        """Set the balloon's target (0; up to 4096 pages; the free memory, give or take 2048
        pages; far more than the machine has) and tick n times."""
        m = self.m
        free = m.meminfo().free
        target = {"zero": 0, "small": k, "free": max(0, free + k - 2048),
                  "more": 2 * m.meminfo().total + k}[size]
        m.balloon_set_target(target)
        was = m.balloon.actual
        held = set(m.balloon.frames)
        types = m.ft.flags_np() & TYPE_MASK              # a copy, as before the ticks
        m.step(n)
        assert not self._prune(), "the balloon killed a process"
        now = m.balloon.actual
        assert m.balloon.target == target
        if was >= target:
            assert now == max(target, was - RATE * n), f"deflate {was} -> {target}: {now}"
        else:
            assert was <= now <= min(target, was + RATE * n), f"inflate {was} -> {target}: {now}"
        new = np.array(sorted(set(m.balloon.frames) - held), dtype=np.int64)
        bad = new[np.isin(types[new], (OFFLINE, HWPOISON, NOPAGE))] if new.size else new
        assert not bad.size, f"the balloon took frame {int(bad[0]):#x}, " \
                             f"{PageType(int(types[bad[0]])).name} before"

    # after every step ------------------------------------------------------------

    @invariant()
    def accounted_and_intact(self):
        m = self.m
        check(m)
        self._prune()
        assert {i for i in self.added} == set(m.hotplug.blocks) - {0}
        assert {i for i, b in m.hotplug.blocks.items() if b.online and i} == self.online
        mi = m.meminfo()
        assert mi.total == BOOT_TOTAL + BP * len(self.online)
        assert m.poisoned == self.poisoned and mi.hardware_corrupted == len(self.poisoned)
        held = np.frombuffer(m.balloon.frames, dtype=np.uint32).astype(np.int64)
        ptypes = m.ft.flags_np() & TYPE_MASK
        assert m.balloon.actual == held.size == int(np.count_nonzero(ptypes == BALLOON))
        assert (ptypes[held] == BALLOON).all(), "a balloon frame is not typed BALLOON"
        assert not m.poisoned & set(held.tolist()), "the balloon holds a poisoned frame"
        offline_blocks = {i for i, b in m.hotplug.blocks.items() if not b.online}
        assert not offline_blocks & set((held // BP).tolist()), "a balloon frame is offline"
        for pid in sorted(self.ranges):
            for a, pages, seed in self.ranges[pid]:
                want = fill_values(a, pages, seed)
                for va, v in self.writes[pid].items():
                    if a <= va < a + pages * PAGE:
                        want[(va - a) // PAGE] = v
                have = peek(m, pid, a, pages)
                bad = np.flatnonzero(have != want)
                assert not bad.size, f"pid {pid}: {bad.size} of {pages} pages from {a:#x} " \
                                     f"(seed {seed}) lost their value, the first at " \
                                     f"{a + int(bad[0]) * PAGE:#x}"


HotplugModel.TestCase.settings = settings(
    max_examples=30, stateful_step_count=40, derandomize=True, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestHotplugModel = HotplugModel.TestCase
