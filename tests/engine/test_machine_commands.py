"""engine/machine.py commands: pfree's checks, the clock, determinism, and long random
sequences of palloc / pfree / sysctl writes that keep every invariant and exact counts.

Zones of the small machine (see test_boot.py): DMA is pfn 0x1-0x1000
(managed 3840), DMA32 pfn 0x1000-0x4000 (managed 9985).
"""
import errno

import numpy as np
import pytest

from engine.units import runs_of
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from engine import Machine, load
from engine.errors import InvalidArgument, OutOfMemory
from engine.invariants import check_invariants
from engine.pmm.frames import PageType
from memfs.machines import builtin

K, M = 1 << 10, 1 << 20
KERNEL = int(PageType.KERNEL)
DMA_MANAGED, DMA32_MANAGED = 3840, 9985


def frames(runs):
    return [p for s, n in runs for p in range(s, s + n)]


as_runs = runs_of          # builds pfree's input from a set of frames


def snapshot(m):
    return (m.meminfo(), m.zoneinfo(), bytes(m.ft.flags), bytes(m.ft.content))


# ---------------------------------------------------------------------------
# pfree
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("bad, why", [
    ([(0x1800, 1)], "a free frame"),
    ([(0x1000, 1)], "a kernel image frame (reserved)"),
    ([(0x50, 1)], "low memory kept by the kernel (reserved)"),
    ([(0xA0, 1)], "the Video RAM hole (not RAM)"),
    ([(0x4000, 1)], "the first pfn past the end"),
    ([(0x100000, 4)], "far beyond the end"),
    ([(0x3FFF, 2)], "a run that runs past the end"),
    ([(-1, 1)], "a negative pfn"),
    ([(-4, 2)], "a run of negative pfns"),
    ([(0x1800, 0)], "a count of zero"),
])
def test_pfree_rejects_frames_palloc_did_not_hand_out_and_frees_nothing(small, invariants, bad, why):
    held = small.palloc(count=5)
    before = snapshot(small)
    with pytest.raises(InvalidArgument) as info:
        small.pfree(held + bad)
    assert info.value.errno == errno.EINVAL, f"{why}: expected EINVAL, got {info.value.errno}"
    assert snapshot(small) == before, f"pfree of {why} changed the machine"
    assert all(small.ft.type_of(p) == PageType.KERNEL for p in frames(held)), "a held frame was freed"
    invariants(small)


@pytest.mark.parametrize("twice", ["same run", "overlapping runs"])
def test_pfree_rejects_a_frame_named_twice_and_frees_nothing(small, invariants, twice):
    (start, n), = small.palloc(count=4, contiguous=True)
    runs = [(start, n), (start, n)] if twice == "same run" else [(start, 3), (start + 2, 2)]
    before = snapshot(small)
    with pytest.raises(InvalidArgument) as info:
        small.pfree(runs)
    assert "twice" in info.value.reason, f"expected 'named twice', got {info.value.reason!r}"
    assert snapshot(small) == before
    invariants(small)


def test_pfree_of_a_frame_freed_already_is_rejected(small, invariants):
    runs = small.palloc(count=3)
    small.pfree(runs)
    before = snapshot(small)
    with pytest.raises(InvalidArgument) as info:
        small.pfree(runs[:1])
    assert "free" in info.value.reason
    assert snapshot(small) == before
    invariants(small)


def test_pfree_frees_exactly_the_named_frames_and_returns_their_number(small, invariants):
    (start, n), = small.palloc(count=10, contiguous=True)
    free_before = small.meminfo().free
    assert small.pfree([(start + 2, 3), (start + 7, 1)]) == 4
    assert small.meminfo().free == free_before + 4
    types = [small.ft.type_of(p) == PageType.KERNEL for p in range(start, start + 10)]
    assert types == [True, True, False, False, False, True, True, False, True, True], f"got {types}"
    invariants(small)


def test_pfree_of_frames_allocated_on_the_other_node_returns_them_to_their_zone(default, invariants):
    runs = default.palloc(count=100, node=1)
    assert all(s >= 0x100000 for s, _ in runs), f"expected node 1 Normal frames, got {runs}"
    normal = next(z for z in default.zones if (z.node_id, z.name) == (1, "Normal"))
    assert normal.free_pages == normal.managed_pages - 100
    default.pfree(runs)
    assert normal.free_pages == normal.managed_pages, \
        f"expected {normal.managed_pages} free in node 1 Normal, got {normal.free_pages}"
    invariants(default)


# ---------------------------------------------------------------------------
# clock
# ---------------------------------------------------------------------------

def test_step_advances_ticks_and_simulated_time(small):
    small.step(5)
    small.clock_command("step", 3)
    state = small.clock_state()
    assert (state["tick"], state["uptime_us"], state["state"]) == (8, 8 * 10 * 1000, "paused")


def test_clock_commands_pause_resume_and_rate(small):
    small.clock_command("hz", 250)
    small.clock_command("resume")
    assert small.clock_state()["state"] == "running" and small.clock_state()["hz"] == 250
    small.clock_command("pause")
    assert small.clock_state()["state"] == "paused"


# ---------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------

def scripted_run(m):
    held = []
    held += m.palloc(count=3000, node=1)
    held += m.palloc(count=16, contiguous=True, below=16 * M, boundary=64 * K)
    m.sysctl_write("min_free_kbytes", "20000")
    held += m.palloc(count=700, contiguous=True, align=2 * M)
    held += m.palloc(count=200, below=1 << 32)
    m.step(7)
    m.pfree([r for i, r in enumerate(held) if i % 2 == 0])
    m.place_bar(256 * M)
    m.place_bar(1 << 30, wide=True)
    m.sysctl_write("watermark_scale_factor", "300")
    held2 = m.palloc(count=5000)
    m.pfree(held2[::3])
    m.palloc(count=1, zone="DMA")
    return m


def test_same_config_and_commands_give_identical_frame_tables(default, invariants):
    a = scripted_run(default)
    b = scripted_run(Machine(load(builtin("default")).without_processes(), paused=True))
    assert bytes(a.ft.flags) == bytes(b.ft.flags), "frame flags differ between the two runs"
    assert bytes(a.ft.content) == bytes(b.ft.content), "frame content differs between the two runs"
    assert bytes(a.ft.pb_mt) == bytes(b.ft.pb_mt), "pageblock types differ between the two runs"
    assert a.zoneinfo() == b.zoneinfo() and a.meminfo() == b.meminfo() and a.iomem() == b.iomem()
    assert a.kmsg_lines() == b.kmsg_lines()
    invariants(a)


# ---------------------------------------------------------------------------
# random sequences
# ---------------------------------------------------------------------------

def dma_protection(m):
    ratio = int(m.sysctl_read("lowmem_reserve_ratio").split()[0])
    return DMA32_MANAGED // ratio if ratio else 0


def small_zones(m):
    return {z.name: z for z in m.zones if z.managed_pages}


def available_for_normal_requests(m):
    """Pages palloc (no zone) may take: each zone down to min, DMA down to min + protection."""
    zones = small_zones(m)
    return (max(0, zones["DMA32"].free_pages - zones["DMA32"].wmark_min)
            + max(0, zones["DMA"].free_pages - zones["DMA"].wmark_min - dma_protection(m)))


class PallocPfreeSysctl(RuleBasedStateMachine):
    """The small machine under palloc (every kind), pfree and sysctl writes.

    The model: which frames are held, and a content value written into each;
    the zones' free counts must be their managed pages minus the held frames.
    """

    @initialize(min_free_kbytes=st.sampled_from([128, 940, 20000, 40000]),
                scale_factor=st.sampled_from([10, 1000]))
    def boot(self, min_free_kbytes, scale_factor):
        # A wide low-min gap lets many freed frames wait on per-cpu stacks (their high
        # mark follows the low watermark); a high min keeps "everything" cheap.
        self.m = Machine(load(builtin("small")), paused=True)
        self.m.sysctl_write("min_free_kbytes", str(min_free_kbytes))
        self.m.sysctl_write("watermark_scale_factor", str(scale_factor))
        self.held: dict[int, int] = {}           # pfn -> content value written into it
        self.serial = 0

    def _hold(self, runs, count):
        pfns = frames(runs)
        assert len(pfns) == count == len(set(pfns)), f"expected {count} distinct frames, got {len(pfns)}"
        for p in pfns:
            assert p not in self.held, f"pfn {p:#x} handed out twice"
            assert self.m.ft.content[p] == 0, f"new frame {p:#x} reads {self.m.ft.content[p]:#x}, expected 0"
            self.serial += 1
            value = (self.serial << 20) | p
            self.m.ft.content[p] = value            # the driver writes its data
            self.held[p] = value
        return pfns

    @rule(count=st.integers(1, 400))
    def palloc_pages(self, count):
        avail = available_for_normal_requests(self.m)
        try:
            runs = self.m.palloc(count=count)
        except OutOfMemory:
            assert count > avail, f"palloc count={count} failed with {avail} pages available"
            return
        assert count <= avail, f"palloc count={count} succeeded with only {avail} available"
        self._hold(runs, count)

    @rule()
    def palloc_everything_available(self):
        avail = available_for_normal_requests(self.m)
        if avail == 0:
            with pytest.raises(OutOfMemory):
                self.m.palloc(count=1)
            return
        self._hold(self.m.palloc(count=avail), avail)

    @rule(count=st.one_of(st.integers(1, 64), st.integers(65, 600)),
          align=st.sampled_from([None, 8 * K, 64 * K, 2 * M]),
          boundary=st.sampled_from([None, 256 * K, 4 * M]), below=st.sampled_from([None, 16 * M, 40 * M]),
          zone=st.sampled_from([None, "DMA", "DMA32"]))
    def palloc_contiguous(self, count, align, boundary, below, zone):
        try:
            runs = self.m.palloc(count=count, contiguous=True, align=align, boundary=boundary,
                                 below=below, zone=zone)
        except (OutOfMemory, InvalidArgument):
            return
        (start, n), = runs
        if align:
            assert (start * 4 * K) % align == 0
        if boundary:
            assert start * 4 * K // boundary == ((start + n) * 4 * K - 1) // boundary
        if below:
            assert (start + n) * 4 * K <= below
        self._hold(runs, count)

    @rule(count=st.integers(1, 50), below=st.sampled_from([8 * M, 16 * M, 30 * M]))
    def palloc_scattered_below(self, count, below):
        try:
            runs = self.m.palloc(count=count, below=below)
        except OutOfMemory:
            return
        pfns = self._hold(runs, count)
        assert max(pfns) < below // (4 * K)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def pfree_some(self, data):
        pfns = sorted(self.held)
        rnd = data.draw(st.randoms(use_true_random=False))
        picked = rnd.sample(pfns, min(len(pfns), data.draw(st.integers(1, 400))))
        assert self.m.pfree(as_runs(picked)) == len(picked)
        for p in picked:
            del self.held[p]

    @precondition(lambda self: self.held)
    @rule()
    def pfree_everything(self):
        assert self.m.pfree(as_runs(self.held)) == len(self.held)
        self.held.clear()

    @rule(bad=st.sampled_from(["free", "reserved", "twice", "hole"]))
    def pfree_bad_changes_nothing(self, bad):
        some = [(p, 1) for p in sorted(self.held)[:1]]
        free_pfn = int(np.flatnonzero((self.m.ft.flags_np() & 0xF) == PageType.FREE)[0])
        runs = {"free": some + [(free_pfn, 1)],
                "reserved": some + [(0x1000, 1)],           # kernel image
                "twice": some * 2 or [(0x1000, 1)],
                "hole": some + [(0xA0, 1)]}[bad]            # Video RAM, not RAM
        before = snapshot(self.m)
        with pytest.raises(InvalidArgument):
            self.m.pfree(runs)
        assert snapshot(self.m) == before, f"a rejected pfree ({bad}) changed the machine"

    @rule(knob=st.sampled_from(["min_free_kbytes", "watermark_scale_factor", "lowmem_reserve_ratio",
                                "percpu_pagelist_high_fraction"]),
          value=st.integers(0, 60000))
    def sysctl_write(self, knob, value):
        text = {"min_free_kbytes": str(128 + value), "watermark_scale_factor": str(1 + value % 3000),
                "lowmem_reserve_ratio": f"{value % 512} {value % 300} 32",
                "percpu_pagelist_high_fraction": str(0 if value % 3 == 0 else 8 + value)}[knob]
        self.m.sysctl_write(knob, text)

    @invariant()
    def every_invariant_and_exact_counts(self):
        m = self.m
        check_invariants(m)
        zones = small_zones(m)
        held_dma = sum(1 for p in self.held if p < 0x1000)
        got = (zones["DMA"].free_pages, zones["DMA32"].free_pages)
        expected = (DMA_MANAGED - held_dma, DMA32_MANAGED - (len(self.held) - held_dma))
        assert got == expected, f"expected free (DMA, DMA32) = {expected}, got {got}"
        assert m.meminfo().free == sum(expected)
        if self.held:
            pfns = np.fromiter(self.held, dtype=np.int64)
            values = np.fromiter(self.held.values(), dtype=np.uint64)
            assert (m.ft.flags_np()[pfns] == KERNEL).all(), "a held frame is no longer KERNEL"
            lost = np.flatnonzero(m.ft.content_np()[pfns] != values)
            assert lost.size == 0, f"held frame {int(pfns[lost[0]]):#x} lost its content"


TestPallocPfreeSysctl = PallocPfreeSysctl.TestCase
TestPallocPfreeSysctl.settings = settings(max_examples=30, stateful_step_count=25, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])


def test_random_command_sequence_on_two_nodes_keeps_invariants_and_counts(default, invariants):
    rng = np.random.default_rng(2024)
    m = default
    managed = {(z.node_id, z.idx): z.managed_pages for z in m.zones}
    held: set[int] = set()

    def zone_key(pfn):
        node = 0 if pfn < 0x80000 else 1
        idx = 0 if pfn < 0x1000 else (1 if pfn < 0x100000 else 2)
        return node, idx

    for step in range(120):
        op = rng.choice(["pages", "node", "contig", "below", "free", "sysctl"], p=[.25, .2, .15, .1, .25, .05])
        try:
            if op == "pages":
                runs = m.palloc(count=int(rng.integers(1, 3000)))
            elif op == "node":
                runs = m.palloc(count=int(rng.integers(1, 3000)), node=int(rng.integers(0, 2)))
            elif op == "contig":
                runs = m.palloc(count=int(rng.integers(1, 600)), contiguous=True,
                                align=int(1 << rng.integers(12, 22)), node=int(rng.integers(0, 2)))
            elif op == "below":
                runs = m.palloc(count=int(rng.integers(1, 40)), below=int(rng.choice([16 * M, 1 << 31])))
            elif op == "free":
                if held:
                    pick = rng.choice(np.fromiter(held, dtype=np.int64), size=min(len(held), 2500), replace=False)
                    m.pfree(as_runs(int(p) for p in pick))
                    held.difference_update(int(p) for p in pick)
                runs = []
            else:
                m.sysctl_write("min_free_kbytes", str(int(rng.integers(1000, 40000))))
                runs = []
        except OutOfMemory:
            runs = []
        new = frames(runs)
        assert not held.intersection(new), f"step {step}: a held frame was handed out again"
        held.update(new)
        if step % 15 == 14:
            invariants(m)
            expected = dict(managed)
            for p in held:
                expected[zone_key(p)] -= 1
            got = {(z.node_id, z.idx): z.free_pages for z in m.zones}
            assert got == expected, f"step {step}: expected free pages {expected}, got {got}"
    invariants(m)
