"""Random heap programs against a model, and the heap invariants catching corruption.

A hypothesis state machine (and a longer seeded random run) drives a small
machine through random malloc (any size, alignment, hint or pool), free,
realloc, memset, double free, scavenge, stack depth, fork and exit, over a
few processes, some with guard checks on. Next to it runs the model: for
each process, the live pointers and the size each was asked for.

After every step check_invariants must pass (its heap part: pools tiled by
used chunks, free chunks and the top; lists and bins agreeing; free chunks
merged; live blocks = used chunks or mapped blocks inside VMAs), each heap's
live pointers must be the model's, with the model's sizes, 16-byte aligned,
and no two live blocks [ptr, ptr + size) may overlap. A refused call must
leave the heap exactly as it was; scavenge must lower RSS by exactly the
pages it reports.

The second half corrupts a healthy heap's bookkeeping by hand, one way at a
time, and checks that check_invariants names what broke.
"""
from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from engine import Machine, load
from engine.errors import InternalError, InvalidArgument
from engine.heap.heap import size_class
from engine.invariants import check_invariants
from memfs.machines import builtin

PAGE = 4096
MAX_PROCS = 3
SIZES = st.one_of(st.sampled_from([1, 16, 24, 25, 100, 1000, 4096, 131055, 131056, 200000]),
                  st.integers(1, 40000))
ALIGNS = st.sampled_from([16, 32, 64, 4096, 1 << 20])


def heap_state(h):
    if h is None:
        return None
    return ([(dict(pl.segs), pl.top_start, pl.top_end, dict(pl.free), dict(pl.used), pl.binmap)
             for pl in h.pools], dict(h.live), dict(h.mmapped))


def check_model(m, model: dict) -> None:
    """The heaps hold exactly the model's blocks, aligned and disjoint."""
    assert sorted(m.tasks.procs) == sorted([*model, m.pids()[0]])        # + kthreadd
    for pid, blocks in model.items():
        h = m.tasks.procs[pid].heap
        live = {} if h is None else {ptr: rec[0] for ptr, rec in h.live.items()}
        assert live == blocks
        spans = sorted((ptr, ptr + n) for ptr, n in blocks.items())
        assert all(ptr % 16 == 0 for ptr, _ in spans)
        for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
            assert e0 <= s1, f"pid {pid}: blocks {s0:#x}+{e0 - s0} and {s1:#x} overlap"


class HeapModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.m = Machine(load(builtin("small")), paused=True)
        self.model: dict[int, dict[int, int]] = {}     # pid -> {ptr: size}
        self.freed: dict[int, list[int]] = {}          # pid -> pointers freed (not reused)
        self.spawn(guard=False)

    # helpers --------------------------------------------------------------

    def _pid(self, data_index: int) -> int:
        pids = sorted(self.model)
        return pids[data_index % len(pids)]

    def _block(self, pid: int, index: int) -> int:
        ptrs = sorted(self.model[pid])
        return ptrs[index % len(ptrs)]

    def _gone(self, pid: int, ptr: int) -> None:
        del self.model[pid][ptr]
        self.freed[pid].append(ptr)

    def _born(self, pid: int, ptr: int, n: int) -> None:
        self.model[pid][ptr] = n
        if ptr in self.freed[pid]:
            self.freed[pid].remove(ptr)

    def _any_blocks(self) -> bool:
        return any(self.model.values())

    def _pid_with_blocks(self, i: int) -> int:
        pids = [pid for pid in sorted(self.model) if self.model[pid]]
        return pids[i % len(pids)]

    # rules ------------------------------------------------------------------

    @precondition(lambda self: len(self.model) < MAX_PROCS)
    @rule(guard=st.booleans())
    def spawn(self, guard):
        pid = self.m.tasks.spawn("p", guard=guard)
        self.model[pid] = {}
        self.freed[pid] = []

    @rule(who=st.integers(0, 9), n=SIZES, align=ALIGNS, hint=st.sampled_from(["long", "short"]),
          pool=st.sampled_from([None, None, 0, 2]))
    def malloc(self, who, n, align, hint, pool):
        pid = self._pid(who)
        ptr = self.m.tasks.malloc(pid, n, align=align, hint=hint, pool=pool)
        assert ptr % align == 0
        assert ptr not in self.model[pid]
        self._born(pid, ptr, n)

    @precondition(_any_blocks)
    @rule(who=st.integers(0, 9), which=st.integers(0, 99))
    def free(self, who, which):
        pid = self._pid_with_blocks(who)
        ptr = self._block(pid, which)
        self.m.tasks.free(pid, ptr)
        self._gone(pid, ptr)

    @precondition(_any_blocks)
    @rule(who=st.integers(0, 9), which=st.integers(0, 99), n=SIZES)
    def realloc(self, who, which, n):
        pid = self._pid_with_blocks(who)
        ptr = self._block(pid, which)
        new = self.m.tasks.realloc(pid, ptr, n)
        if new != ptr:
            self._gone(pid, ptr)
        else:
            del self.model[pid][ptr]
        self._born(pid, new, n)

    @precondition(_any_blocks)
    @rule(who=st.integers(0, 9), which=st.integers(0, 99), lo=st.floats(0, 1), hi=st.floats(0, 1))
    def memset(self, who, which, lo, hi):
        pid = self._pid_with_blocks(who)
        ptr = self._block(pid, which)
        n = self.model[pid][ptr]
        a, b = sorted((int(lo * n), int(hi * n)))
        a = min(a, n - 1)                              # [a, a + length) stays inside the block
        self.m.tasks.memset(pid, ptr + a, max(1, b - a))

    @precondition(_any_blocks)
    @rule(who=st.integers(0, 9), which=st.integers(0, 99), past=st.integers(1, 64))
    def overflow(self, who, which, past):
        """A write past the end: refused with guard checks on, nothing written."""
        pid = self._pid_with_blocks(who)
        p = self.m.tasks.procs[pid]
        ptr = self._block(pid, which)
        n = self.model[pid][ptr]
        if not p.heap.guard:
            return
        rss, before = p.mm.rss, heap_state(p.heap)
        with pytest.raises(InvalidArgument, match="heap-buffer-overflow"):
            self.m.tasks.memset(pid, ptr, n + past)
        assert p.mm.rss == rss and heap_state(p.heap) == before

    @precondition(lambda self: any(self.freed.values()))
    @rule(who=st.integers(0, 9), which=st.integers(0, 99))
    def double_free(self, who, which):
        pids = [pid for pid in sorted(self.freed) if self.freed[pid]]
        pid = pids[who % len(pids)]
        ptr = self.freed[pid][which % len(self.freed[pid])]
        p = self.m.tasks.procs[pid]
        before, rss = heap_state(p.heap), p.mm.rss
        with pytest.raises(InvalidArgument, match="double free|invalid pointer"):
            self.m.tasks.free(pid, ptr)
        assert heap_state(p.heap) == before and p.mm.rss == rss

    @rule(who=st.integers(0, 9))
    def scavenge(self, who):
        pid = self._pid(who)
        p = self.m.tasks.procs[pid]
        rss, before = p.mm.rss, heap_state(p.heap)
        pages = self.m.tasks.scavenge(pid)
        assert pages >= 0 and p.mm.rss == rss - pages
        assert heap_state(p.heap) == before             # madvise changes no bookkeeping

    @rule(who=st.integers(0, 9), depth=st.integers(1, 2 << 20))
    def stack(self, who, depth):
        self.m.tasks.stack(self._pid(who), depth)

    @precondition(lambda self: len(self.model) < MAX_PROCS)
    @rule(who=st.integers(0, 9))
    def fork(self, who):
        pid = self._pid(who)
        child = self.m.tasks.fork(pid)
        self.model[child] = dict(self.model[pid])
        self.freed[child] = list(self.freed[pid])

    @precondition(lambda self: len(self.model) > 1)
    @rule(who=st.integers(0, 9))
    def exit(self, who):
        pid = self._pid(who)
        self.m.tasks.exit(pid)
        del self.model[pid]
        del self.freed[pid]

    @invariant()
    def consistent(self):
        check_invariants(self.m)
        check_model(self.m, self.model)


HeapModel.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, derandomize=True, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow])
TestHeapModel = HeapModel.TestCase



@pytest.mark.parametrize("seed,blocked,guard", [
    (1, False, False), (3, True, True),
    (2, True, True),
])
def test_a_long_random_program_keeps_the_heap_consistent(seed, blocked, guard):
    """400 random calls on one process and its forks (seeded, so reproducible). With
    `blocked`, a fixed mapping sits right at the break after the first grow, so every
    later grow of the main pool falls back to mmap'd segments (as glibc does when brk
    fails): the old top becomes a free chunk and the pool gets a second segment.
    Seed 2 meets the segment-end bug: a 24-byte short-lived block carved from such a
    chunk runs 8 bytes past its segment."""
    r = random.Random(seed)
    m = Machine(load(builtin("small")), paused=True)
    pid = m.tasks.spawn("r", guard=guard)
    model = {pid: {}}
    if blocked:
        first = m.tasks.malloc(pid, 100)
        brk = m.tasks.procs[pid].mm.brk
        m.tasks.mmap(pid, 4 * PAGE, addr=brk, prot=3)
        model[pid][first] = 100
        for _ in range(2):                             # the second cannot fit the 33-page top
            model[pid][m.tasks.malloc(pid, 120000)] = 120000
        assert m.tasks.procs[pid].mm.brk == brk
        assert len(m.tasks.procs[pid].heap.pools[0].segs) == 2
    for step in range(400):
        pid = r.choice(sorted(model))
        blocks = model[pid]
        op = r.choice(["malloc"] * 4 + ["free"] * 3 + ["realloc"] * 2
                      + ["memset", "scavenge", "fork", "align", "pool"])
        if op in ("free", "realloc", "memset") and not blocks:
            op = "malloc"
        if op == "malloc":
            n = r.choice([1, 24, 25, 100, 1000, 5000, 40000, 130000, 300000, r.randint(1, 200000)])
            blocks[m.tasks.malloc(pid, n, hint=r.choice(["short", "long"]))] = n
        elif op == "align":
            n, al = r.randint(1, 5000), r.choice([32, 64, 4096, 65536, 1 << 20])
            ptr = m.tasks.malloc(pid, n, align=al)
            assert ptr % al == 0
            blocks[ptr] = n
        elif op == "pool":
            n = r.randint(1, 50000)
            blocks[m.tasks.malloc(pid, n, pool=r.randint(0, 3))] = n
        elif op == "free":
            ptr = r.choice(sorted(blocks))
            m.tasks.free(pid, ptr)
            del blocks[ptr]
        elif op == "realloc":
            ptr = r.choice(sorted(blocks))
            n = r.choice([1, 50, 500, 5000, 50000, 200000, r.randint(1, 150000)])
            new = m.tasks.realloc(pid, ptr, n)
            del blocks[ptr]
            blocks[new] = n
        elif op == "memset":
            ptr = r.choice(sorted(blocks))
            m.tasks.memset(pid, ptr, blocks[ptr])
        elif op == "scavenge":
            p = m.tasks.procs[pid]
            rss = p.mm.rss
            pages = m.tasks.scavenge(pid)
            assert p.mm.rss == rss - pages
        elif op == "fork" and len(model) < 4:
            model[m.tasks.fork(pid)] = dict(blocks)
        check_invariants(m)
        check_model(m, model)


# ---------------------------------------------------------------------------
# the checker catches each kind of heap corruption
# ---------------------------------------------------------------------------

def broken(m, *words):
    with pytest.raises(InternalError) as info:
        check_invariants(m)
    msg = str(info.value)
    for w in words:
        assert w in msg, f"expected {w!r} in the message, got {msg!r}"


@pytest.fixture
def heap(small):
    """A program with used chunks, a free chunk between two of them, a top, an
    mmapped block and a short-lived pool: (machine, pid, heap, blocks)."""
    m = small
    pid = m.tasks.spawn("h")
    x, y, z = (m.tasks.malloc(pid, 100) for _ in range(3))
    w = m.tasks.malloc(pid, 1000)
    m.tasks.free(pid, y)                               # free chunk between x and z
    big = m.tasks.malloc(pid, 200000)
    s = m.tasks.malloc(pid, 64, hint="short")
    check_invariants(m)
    return m, pid, m.tasks.procs[pid].heap, dict(x=x, y=y, z=z, w=w, big=big, s=s)


def test_a_gap_in_a_segment_is_caught(heap):
    m, pid, h, b = heap
    del h.pools[0].used[b["z"] - 16]
    del h.live[b["z"]]
    broken(m, "pool 0", "leaves a gap")


def test_overlapping_chunks_are_caught(heap):
    m, pid, h, b = heap
    h.pools[0].used[b["x"] - 16] = 160                 # runs into the free chunk after it
    broken(m, "pool 0", "overlaps")


def test_unmerged_free_neighbours_are_caught(heap):
    m, pid, h, b = heap
    pool = h.pools[0]
    start = b["y"] - 16
    pool.take_free(start)
    pool.add_free(start, 48)                           # 112 split into 48 + 64
    pool.add_free(start + 48, 64)
    broken(m, "neighbours, not merged")


def test_a_free_chunk_before_the_top_is_caught(heap):
    m, pid, h, b = heap
    pool = h.pools[0]
    start = b["w"] - 16                                # the chunk right before the top
    size = pool.used.pop(start)
    del h.live[b["w"]]
    pool.add_free(start, size)
    broken(m, "ends at the top")


def test_a_wrong_binmap_is_caught(heap):
    m, pid, h, b = heap
    h.pools[0].binmap |= 1 << 3
    broken(m, "binmap")


def test_a_chunk_in_the_wrong_bin_is_caught(heap):
    m, pid, h, b = heap
    pool = h.pools[0]
    start = b["y"] - 16
    c = size_class(112)
    del pool.bins[c][start]
    pool.bins[c + 1][start] = None
    pool.binmap = (pool.binmap & ~(1 << c)) | 1 << (c + 1)
    broken(m, f"is in bin {c + 1}, its class is {c}")


def test_a_stale_free_end_is_caught(heap):
    m, pid, h, b = heap
    h.pools[0].free_end[b["y"] + 1000] = b["y"] - 16
    broken(m, "free_end")


def test_a_live_pointer_without_a_chunk_is_caught(heap):
    m, pid, h, b = heap
    h.live[b["y"]] = (100, 112, 0, "long", 0)          # y was freed
    broken(m, f"live block {b['y']:#x} (pool 0) is no used chunk")


def test_a_used_chunk_nobody_holds_is_caught(heap):
    m, pid, h, b = heap
    del h.live[b["x"]]
    broken(m, f"used chunk {b['x'] - 16:#x} is no live block")


def test_a_live_record_of_the_wrong_size_is_caught(heap):
    m, pid, h, b = heap
    h.live[b["x"]] = (100, 128, 0, "long", 0)
    broken(m, "says pool 0 size 128")


def test_an_mmapped_block_outside_the_vmas_is_caught(heap):
    m, pid, h, b = heap
    addr, length = h.mmapped[b["big"]]
    m.tasks.munmap(pid, addr, length)                  # behind the heap's back
    broken(m, f"mmapped block {b['big']:#x}", "not inside the process's VMAs")


def test_a_top_that_ends_no_segment_is_caught(heap):
    m, pid, h, b = heap
    h.pools[1].top_end -= 16
    broken(m, "pool 1 (short)", "does not end a segment")


def test_overlapping_segments_are_caught(heap):
    m, pid, h, b = heap
    addr, length = h.mmapped[b["big"]]
    pool = h.pools[1]
    pool.segs[addr] = addr + PAGE                      # a wholly free segment over the big block
    pool.add_free(addr, PAGE)
    broken(m, f"mmapped block {b['big']:#x}", "overlaps", f"pool 1 (short) segment {addr:#x}")
