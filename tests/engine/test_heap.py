"""The per-process heap (engine/heap): chunk sizes, reuse, merging, brk growth and trim,
scavenge, mmapped blocks, aligned and moved blocks, refused frees, guard checks, fork,
and the stack-depth verb.

Hand-worked layout (engine/heap/heap.py) of a program spawned with the default
sizes on the small machine: the data ends at 0x540000, so the break starts
there (BASE) and the main pool's first chunk is at BASE, its pointer at
BASE + 16. A chunk for an n-byte request is max(32, align16(n + 8)) bytes
(+16 with guard checks on: the red zone). Growing the break asks for
page_up(need + 128K) where `need` is the chunk plus 32 bytes (the top must
keep a minimum chunk) less what the top holds. Trim (on a free that merges
into the top) gives back page_down(top - 128K - 33) bytes, so the top keeps
more than 128K. mmap places areas top-down below MMAP_BASE = 0x7ffff7fff000.
Only what the heap writes (its header words, links, tags) and what the
program memsets becomes resident: each figure below counts those pages.
"""
import pytest

from engine.errors import Fault, InvalidArgument
from vmm_common import MIB, MMAP_BASE, PAGE, STACK_TOP

BASE = 0x540000
K128 = 128 << 10


def logged(m, text: str) -> str:
    lines = [x for x in m.kmsg_lines() if text in x]
    assert lines, f"no kmsg line contains {text!r}"
    return lines[-1]


def proc(m, pid):
    return m.tasks.procs[pid]


def vmas(m, pid) -> list[tuple[int, int]]:
    return [(v.start, v.end) for v in proc(m, pid).mm.vmas]


def heap_state(h):
    """Everything a refused call must leave as it was."""
    return ([(dict(pl.segs), pl.top_start, pl.top_end, dict(pl.free), dict(pl.used), pl.binmap)
             for pl in h.pools], dict(h.live), dict(h.mmapped), h.nmalloc, h.nfree)


@pytest.fixture
def a(small):
    """A program "a" on the small machine: (machine, pid)."""
    return small, small.tasks.spawn("a")


# ---------------------------------------------------------------------------
# chunk sizes and the free lists
# ---------------------------------------------------------------------------

def test_chunk_size_is_max_32_and_align16_of_request_plus_8(a, invariants):
    """Consecutive mallocs from the top lie one chunk apart: 1 and 24 bytes fit the
    32-byte minimum (24 + 8 = 32), 25 needs 48 (33 rounded up), 100 needs 112."""
    m, pid = a
    ptrs = [m.tasks.malloc(pid, n) for n in (1, 24, 25, 100, 1)]
    assert ptrs[0] == BASE + 16
    assert [b - x for x, b in zip(ptrs, ptrs[1:])] == [32, 32, 48, 112]
    h = proc(m, pid).heap
    assert h.pools[0].used == {BASE: 32, BASE + 32: 32, BASE + 64: 48, BASE + 112: 112,
                               BASE + 224: 32}
    assert h.pools[0].top_start == BASE + 256
    invariants(m)


def test_first_malloc_grows_the_break_by_the_chunk_plus_the_pad(a, invariants):
    """malloc(1): the top must hold 32 + 32 bytes, so the break grows by
    page_up(64 + 128K) = 33 pages; one page is written (the chunk's and the top's
    size words share it)."""
    m, pid = a
    p = proc(m, pid)
    assert (p.mm.start_brk, p.mm.brk, p.mm.rss) == (BASE, BASE, 1)
    m.tasks.malloc(pid, 1)
    assert p.mm.brk == BASE + 33 * PAGE
    assert (BASE, BASE + 33 * PAGE) in vmas(m, pid)
    assert p.mm.rss == 2
    assert p.heap.pools[0].grows == 1
    invariants(m)


def test_a_freed_chunk_is_reused_newest_first_in_its_exact_class(a, invariants):
    """Two freed 112-byte chunks (kept apart by live ones so they cannot merge) sit in
    the same exact class; malloc takes the one freed last first (LIFO)."""
    m, pid = a
    x, pin1, y, pin2 = (m.tasks.malloc(pid, 100) for _ in range(4))
    m.tasks.free(pid, x)
    m.tasks.free(pid, y)
    pool = proc(m, pid).heap.pools[0]
    assert pool.free == {x - 16: 112, y - 16: 112}
    assert list(pool.bins[112 >> 4]) == [x - 16, y - 16]
    assert m.tasks.malloc(pid, 100) == y
    assert m.tasks.malloc(pid, 97) == x               # 97 + 8 -> 112 as well
    assert pool.free == {} and pool.binmap == 0
    invariants(m)


def test_freeing_the_middle_of_three_free_neighbours_merges_them(a, invariants):
    """Free x and z (112 bytes each), then y between them: one free chunk of 336 bytes at
    x's chunk. malloc(300) needs 320 bytes; the 16 left over cannot be a chunk, so it
    gets all 336 at x."""
    m, pid = a
    x, y, z, pin = (m.tasks.malloc(pid, 100) for _ in range(4))
    m.tasks.free(pid, x)
    m.tasks.free(pid, z)
    pool = proc(m, pid).heap.pools[0]
    assert pool.free == {x - 16: 112, z - 16: 112}
    m.tasks.free(pid, y)
    assert pool.free == {x - 16: 336}
    assert pool.free_end == {x - 16 + 336: x - 16}
    assert pool.binmap == 1 << (336 >> 4)
    invariants(m)
    assert m.tasks.malloc(pid, 300) == x
    assert pool.used[x - 16] == 336 and pool.free == {}
    invariants(m)


def test_a_free_next_to_the_top_joins_the_top(a, invariants):
    m, pid = a
    x = m.tasks.malloc(pid, 100)
    y = m.tasks.malloc(pid, 200)                       # 208 bytes, last before the top
    pool = proc(m, pid).heap.pools[0]
    assert pool.top_start == BASE + 112 + 208
    m.tasks.free(pid, y)
    assert pool.top_start == BASE + 112 and pool.free == {}
    m.tasks.free(pid, x)
    assert pool.top_start == BASE and pool.used == {} and pool.free == {}
    invariants(m)


# ---------------------------------------------------------------------------
# brk growth, trim and scavenge
# ---------------------------------------------------------------------------

def test_brk_grows_and_trims_back_keeping_the_pad(a, invariants):
    """Three 100000-byte blocks (chunks of 100016). The first grow asks
    page_up(100048 + 128K) = 57 pages; the second block fits the top (133456 bytes
    left); the third does not (33440 left): page_up(100048 - 33440 + 128K) = 49 pages
    more, break at BASE + 106 pages. Freeing all three merges them into a 106-page top;
    trim gives back page_down(434176 - 131072 - 33) = 73 pages: the break ends at
    BASE + 33 pages, the top keeping more than the 128K pad."""
    m, pid = a
    p = proc(m, pid)
    ptrs = [m.tasks.malloc(pid, 100000) for _ in range(3)]
    assert ptrs == [BASE + 16, BASE + 16 + 100016, BASE + 16 + 2 * 100016]
    assert p.mm.brk == BASE + 106 * PAGE
    assert p.heap.pools[0].grows == 2
    invariants(m)
    m.tasks.free(pid, ptrs[0])
    m.tasks.free(pid, ptrs[1])
    assert p.mm.brk == BASE + 106 * PAGE              # not next to the top: nothing to trim
    m.tasks.free(pid, ptrs[2])
    assert p.mm.brk == BASE + 33 * PAGE
    pool = p.heap.pools[0]
    assert (pool.top_start, pool.top_end, pool.trims) == (BASE, BASE + 33 * PAGE, 1)
    assert pool.segs == {BASE: BASE + 33 * PAGE}
    assert (BASE, BASE + 33 * PAGE) in vmas(m, pid)
    assert any(f"free {ptrs[2]:#x} size=100000 trimmed={73 * PAGE}" in line
               for line in trace_lines(m))
    invariants(m)


def test_a_pinned_block_stops_trim_and_scavenge_frees_the_whole_pages_inside(a, invariants):
    """Three 100000-byte blocks written in full, then a 1-byte block after them (at
    BASE + 300048, page 73): pages 0-73 of the heap are resident, the rest of the
    106-page heap is not. Freeing the three leaves one free chunk BASE..BASE+300048
    that cannot reach the top, so the break stays. scavenge madvises page_up(BASE + 48)
    to page_down(BASE + 300048): pages 1-72, 72 pages, all resident. The top's whole
    pages (74-105) were never written and the stack has nothing below sp: 72 in all."""
    m, pid = a
    p = proc(m, pid)
    ptrs = [m.tasks.malloc(pid, 100000) for _ in range(3)]
    for x in ptrs:
        m.tasks.memset(pid, x, 100000)
    pin = m.tasks.malloc(pid, 1)
    assert pin == BASE + 3 * 100016 + 16
    assert p.mm.rss == 1 + 74                          # the stack page and heap pages 0-73
    for x in ptrs:
        m.tasks.free(pid, x)
    assert p.mm.brk == BASE + 106 * PAGE
    assert p.heap.pools[0].free == {BASE: 300048}
    assert p.mm.rss == 75
    invariants(m)
    assert m.tasks.scavenge(pid) == 72
    assert p.mm.rss == 3
    assert p.mm.brk == BASE + 106 * PAGE
    assert p.heap.scavenged_pages == 72
    assert "scavenge: %d (a): 72 pages given back" % pid in logged(m, "scavenge:")
    assert m.tasks.scavenge(pid) == 0                  # nothing left to give
    invariants(m)
    # The chunk's header page stays: malloc reuses the chunk as before.
    assert m.tasks.malloc(pid, 100000) == BASE + 16


def test_releasable_figure_counts_whole_pages_inside_free_areas(a):
    """stats()['releasable'] is what scavenge would madvise: the free chunk's 72 pages
    and the top's pages from page_up(top + 48) to its end: the top starts at
    BASE + 300080 (after the 32-byte pin), so pages 74-105, 32 pages."""
    m, pid = a
    ptrs = [m.tasks.malloc(pid, 100000) for _ in range(3)]
    m.tasks.malloc(pid, 1)
    for x in ptrs:
        m.tasks.free(pid, x)
    assert m.heap_view(pid)["heap"]["releasable"] == (72 + 32) * PAGE


# ---------------------------------------------------------------------------
# mmapped blocks, pools, alignment
# ---------------------------------------------------------------------------

def test_a_large_request_gets_its_own_mapping_and_free_unmaps_it(a, invariants):
    """200000 + 16 >= 128K: its own mapping of page_up(200000 + 16) = 49 pages, placed
    top-down at MMAP_BASE - 49 pages, the pointer 16 bytes in (its header word is the
    one page written). free unmaps it."""
    m, pid = a
    p = proc(m, pid)
    before = vmas(m, pid)
    rss = p.mm.rss
    ptr = m.tasks.malloc(pid, 200000)
    start = MMAP_BASE - 49 * PAGE
    assert ptr == start + 16
    assert vmas(m, pid) == sorted(before + [(start, MMAP_BASE)])
    assert p.heap.mmapped == {ptr: (start, 49 * PAGE)}
    assert p.heap.pools[0].segs == {}                  # the brk pool was never used
    assert p.mm.rss == rss + 1
    invariants(m)
    m.tasks.free(pid, ptr)
    assert vmas(m, pid) == before
    assert p.mm.rss == rss
    assert p.heap.mmapped == {}
    invariants(m)


def test_just_below_the_threshold_stays_in_the_brk_pool(a, invariants):
    """n + 16 < 128K stays on the heap; n + 16 == 128K is mapped."""
    m, pid = a
    p = proc(m, pid)
    x = m.tasks.malloc(pid, K128 - 17)
    assert x == BASE + 16 and p.heap.mmapped == {}
    y = m.tasks.malloc(pid, K128 - 16)
    assert y in p.heap.mmapped
    invariants(m)


def test_short_lived_objects_get_a_mmapped_pool_that_trims_its_tail(a, invariants):
    """hint=short uses pool 1, an arena of 1 MiB mmap'd segments: the first segment at
    MMAP_BASE - 1M. Freeing its only block merges it into the top (1 MiB), above the
    trim threshold: the tail beyond page_down(1M - 128K - 33) is unmapped, leaving
    1M - 218 pages = 33 pages mapped."""
    m, pid = a
    p = proc(m, pid)
    seg = MMAP_BASE - MIB
    x = m.tasks.malloc(pid, 100, hint="short")
    assert x == seg + 16
    assert p.heap.pools[1].name == "short" and p.heap.pools[1].kind == "mmap"
    assert (seg, MMAP_BASE) in vmas(m, pid)
    invariants(m)
    m.tasks.free(pid, x)
    assert p.heap.pools[1].segs == {seg: seg + 33 * PAGE}
    assert (seg, seg + 33 * PAGE) in vmas(m, pid)
    invariants(m)


def test_a_block_at_the_end_of_an_old_segment_stays_inside_it(a, invariants):
    """The short pool's first segment (S = MMAP_BASE - 1M) is trimmed to 33 pages by
    freeing its only block. malloc(131000) takes a 131008-byte chunk at S and leaves a
    4160-byte top at S + 131008, up to the segment's end S + 33 pages. malloc(5000)
    does not fit (5008 + 32 > 4160): a new 1 MiB segment is mapped below S, and the old
    top, less a 16-byte fencepost at the segment's end, becomes a free chunk
    [S + 131008, S + 33 pages - 16) of 4144 bytes. malloc(4152) needs 4160 bytes and
    does not fit it; malloc(4136) needs exactly 4144 (4136 + 8) and gets it: its block
    S + 131024 .. S + 135160 ends before the segment's end (S + 135168), and the 8 bytes
    a chunk lends to its block from the next chunk's prev_size lie in the fencepost.
    Writing all 4136 bytes works."""
    m, pid = a
    seg = MMAP_BASE - MIB
    m.tasks.free(pid, m.tasks.malloc(pid, 100, hint="short"))
    pool = proc(m, pid).heap.pools[1]
    assert pool.segs == {seg: seg + 33 * PAGE}
    assert m.tasks.malloc(pid, 131000, hint="short") == seg + 16
    assert pool.top_size == 33 * PAGE - 131008 == 4160
    assert m.tasks.malloc(pid, 5000, hint="short") == seg - MIB + 16
    assert pool.free == {seg + 131008: 4144}
    assert pool.tails == {seg: seg + 33 * PAGE - 16}
    assert m.tasks.malloc(pid, 4152, hint="short") != seg + 131008 + 16
    w = m.tasks.malloc(pid, 4136, hint="short")
    assert w == seg + 131008 + 16
    assert w + 4136 <= seg + 33 * PAGE - 8, "the block runs into the fencepost"
    m.tasks.memset(pid, w, 4136)
    assert pid in m.pids()
    invariants(m)


def test_aligned_mallocs_return_aligned_pointers(a, invariants):
    """align=64: a chunk of 112 + 64 + 32 from the top at BASE; the first 64-aligned
    pointer with a whole leading chunk is BASE + 0x40 (lead 48 bytes, freed); the tail
    joins the top (top at BASE + 0xa0). align=4096: from the top at BASE + 0xa0, the
    pointer is BASE + 0x1000. align=1M: 100 + 1M >= 128K, its own mapping of
    page_up(100 + 16 + 1M - 16) = 257 pages at MMAP_BASE - 257 pages = 0x7ffff7efe000,
    the pointer rounded up to 0x7ffff7f00000."""
    m, pid = a
    x64 = m.tasks.malloc(pid, 100, align=64)
    x4k = m.tasks.malloc(pid, 100, align=4096)
    x1m = m.tasks.malloc(pid, 100, align=MIB)
    assert (x64, x4k, x1m) == (BASE + 0x40, BASE + 0x1000, 0x7FFFF7F00000)
    h = proc(m, pid).heap
    assert h.pools[0].free[BASE] == 48
    assert h.mmapped[x1m] == (MMAP_BASE - 257 * PAGE, 257 * PAGE)
    invariants(m)
    for x in (x64, x4k, x1m):
        m.tasks.free(pid, x)
    invariants(m)


@pytest.mark.parametrize("align", [64, 4096, MIB])
def test_aligned_pointers_stay_aligned_after_other_blocks(a, invariants, align):
    m, pid = a
    for n in (1, 40, 1000, 70):
        m.tasks.malloc(pid, n)
        ptr = m.tasks.malloc(pid, n, align=align)
        assert ptr % align == 0
    invariants(m)


def test_bad_malloc_arguments_are_refused(a):
    m, pid = a
    for kwargs in ({"n": 0}, {"n": 10, "align": 24}, {"n": 10, "align": 8},
                   {"n": 10, "hint": "medium"}, {"n": 10, "pool": 8}):
        n = kwargs.pop("n")
        with pytest.raises(InvalidArgument):
            m.tasks.malloc(pid, n, **kwargs)


# ---------------------------------------------------------------------------
# realloc
# ---------------------------------------------------------------------------

def test_realloc_grows_into_the_top_moves_when_blocked_and_shrinks_in_place(a, invariants):
    """x (112 bytes) at the top grows in place to 1008 (1000 + 8). y after it blocks the
    next growth: realloc to 2000 moves to the top (after y's 112-byte chunk: chunk at
    BASE + 1008 + 112, pointer 16 further) and frees x's chunk. Shrinking the moved
    block to 100 keeps it in place and gives its tail back to the top."""
    m, pid = a
    pool_of = lambda: proc(m, pid).heap.pools[0]          # noqa: E731
    x = m.tasks.malloc(pid, 100)
    assert m.tasks.realloc(pid, x, 1000) == x
    assert pool_of().used[BASE] == 1008
    y = m.tasks.malloc(pid, 100)
    assert y == BASE + 1008 + 16
    moved = m.tasks.realloc(pid, x, 2000)
    assert moved == BASE + 1008 + 112 + 16
    assert pool_of().free == {BASE: 1008}
    assert x not in proc(m, pid).heap.live
    invariants(m)
    assert m.tasks.realloc(pid, moved, 100) == moved
    assert pool_of().used[moved - 16] == 112
    assert pool_of().top_start == moved - 16 + 112
    invariants(m)


def test_realloc_grows_into_a_free_next_chunk(a, invariants):
    """x (a 112-byte chunk) is carved from a freed 1008-byte chunk at BASE: the rest,
    896 bytes at BASE + 112, stays free right after it. realloc(x, 500) needs 512: it
    takes 400 bytes of the neighbour in place and leaves 496 free at BASE + 512."""
    m, pid = a
    big = m.tasks.malloc(pid, 1000)
    m.tasks.malloc(pid, 1)                             # keeps big's chunk off the top
    m.tasks.free(pid, big)
    x = m.tasks.malloc(pid, 100)
    assert x == big
    pool = proc(m, pid).heap.pools[0]
    assert pool.free == {BASE + 112: 896}
    assert m.tasks.realloc(pid, x, 500) == x
    assert pool.used[BASE] == 512 and pool.free == {BASE + 512: 496}
    invariants(m)


def test_realloc_zero_frees_and_realloc_null_mallocs(a, invariants):
    m, pid = a
    x = m.tasks.realloc(pid, 0, 100)
    assert x == BASE + 16
    assert m.tasks.realloc(pid, x, 0) == 0
    assert proc(m, pid).heap.live == {}
    with pytest.raises(InvalidArgument, match="double free"):
        m.tasks.realloc(pid, x, 10)
    invariants(m)


# ---------------------------------------------------------------------------
# refused frees
# ---------------------------------------------------------------------------

def test_double_and_invalid_frees_are_refused_and_change_nothing(a, invariants):
    m, pid = a
    p = proc(m, pid)
    x = m.tasks.malloc(pid, 100)
    y = m.tasks.malloc(pid, 100)
    m.tasks.free(pid, x)
    state = heap_state(p.heap)
    rss, mi = p.mm.rss, m.meminfo()
    with pytest.raises(InvalidArgument, match="double free"):
        m.tasks.free(pid, x)
    assert logged(m, "double free").endswith(
        f"heap: {pid} (a): free({x:#x}): double free (the block was freed at tick 0); "
        f"the heap is unchanged")
    with pytest.raises(InvalidArgument, match="invalid pointer"):
        m.tasks.free(pid, y + 16)
    assert f"heap: {pid} (a): free({y + 16:#x}): invalid pointer" in logged(m, "invalid pointer")
    with pytest.raises(InvalidArgument, match="invalid pointer"):
        m.tasks.realloc(pid, 0x1234560, 10)
    assert heap_state(p.heap) == state
    assert p.mm.rss == rss and m.meminfo() == mi
    assert p.heap.errors == 3
    errors = [line for line in trace_lines(m) if f" {pid} heap-error " in line]
    assert len(errors) == 3
    invariants(m)
    m.tasks.free(pid, y)                               # the heap still works
    assert p.heap.live == {}


def test_free_of_null_is_a_no_op(a):
    m, pid = a
    m.tasks.malloc(pid, 10)
    m.tasks.free(pid, 0)
    assert len(proc(m, pid).heap.live) == 1


# ---------------------------------------------------------------------------
# guard checks
# ---------------------------------------------------------------------------

def test_guard_adds_a_red_zone_and_refuses_overflow_underflow_and_use_after_free(small, invariants):
    """With guard on a 10000-byte request takes align16(10000 + 8 + 16) = 10032 bytes.
    The block spans heap pages 0-2; page 1 holds no header, so it is resident only once
    the block is written. A memset one byte too long is refused before anything is
    written (RSS unchanged); the exact length writes page 1."""
    m = small
    pid = m.tasks.spawn("g", guard=True)
    p = proc(m, pid)
    x = m.tasks.malloc(pid, 10000)
    y = m.tasks.malloc(pid, 16)
    assert (x, y) == (BASE + 16, BASE + 10032 + 16)
    rss = p.mm.rss
    assert rss == 1 + 2                                # stack, heap pages 0 and 2
    with pytest.raises(InvalidArgument, match="heap-buffer-overflow"):
        m.tasks.memset(pid, x, 10001)
    assert "runs 1 bytes past the end of the 10000-byte block" in logged(m, "overflow")
    assert p.mm.rss == rss
    with pytest.raises(InvalidArgument, match="heap-buffer-underflow"):
        m.tasks.memset(pid, x - 8, 8)
    assert p.mm.rss == rss
    m.tasks.memset(pid, x, 10000)
    assert p.mm.rss == rss + 1
    m.tasks.memset(pid, y, 16)
    m.tasks.free(pid, x)
    with pytest.raises(InvalidArgument, match="heap-use-after-free"):
        m.tasks.memset(pid, x, 8)
    assert p.heap.errors == 3
    assert p.mm.rss == rss + 1
    invariants(m)


def test_without_guard_writes_are_not_checked(a):
    m, pid = a
    x = m.tasks.malloc(pid, 100)
    m.tasks.memset(pid, x, 200)                        # a bug nobody catches
    assert proc(m, pid).heap.errors == 0


def test_guard_cannot_change_once_the_heap_is_in_use(a):
    m, pid = a
    m.tasks.set_guard(pid, True)                       # before the first malloc: fine
    x = m.tasks.malloc(pid, 100)
    assert proc(m, pid).heap.guard
    assert m.tasks.malloc(pid, 1) - x == 128           # 100 + 8 + 16 -> 128
    with pytest.raises(InvalidArgument, match="already has a heap"):
        m.tasks.set_guard(pid, False)
    assert proc(m, pid).heap.guard


# ---------------------------------------------------------------------------
# fork
# ---------------------------------------------------------------------------

def test_fork_copies_the_heap_and_each_side_frees_on_its_own(a, invariants):
    m, pid = a
    x = m.tasks.malloc(pid, 100)
    y = m.tasks.malloc(pid, 5000)
    big = m.tasks.malloc(pid, 300000)
    child = m.tasks.fork(pid)
    ph, ch = proc(m, pid).heap, proc(m, child).heap
    assert ch is not ph and ch.live == ph.live and ch.live is not ph.live
    assert ch.sys.p is proc(m, child)
    m.tasks.free(child, x)
    m.tasks.free(child, big)                           # unmaps the child's copy only
    assert set(ch.live) == {y} and set(ph.live) == {x, y, big}
    assert big in ph.mmapped and big not in ch.mmapped
    assert any(v.start == big - 16 for v in proc(m, pid).mm.vmas)
    assert not any(v.start == big - 16 for v in proc(m, child).mm.vmas)
    invariants(m)
    m.tasks.free(pid, x)                               # the parent's x is still its own
    with pytest.raises(InvalidArgument, match="double free"):
        m.tasks.free(child, x)
    assert ph.errors == 0 and ch.errors == 1
    z = m.tasks.malloc(child, 100)
    assert z == x                                      # the child reuses its freed chunk
    assert set(ph.live) == {y, big}
    invariants(m)


# ---------------------------------------------------------------------------
# the stack
# ---------------------------------------------------------------------------

def test_stack_depth_writes_new_pages_and_scavenge_frees_those_below_sp(a, invariants):
    """exec leaves sp one page below the top, that page written. `stack 1M` writes
    [top - 1M, top - 4K): 255 more pages, the [stack] VMA growing down to top - 1M.
    `stack 8K` writes nothing. scavenge releases [stack start, page_down(sp - 128)) =
    [top - 1M, top - 12K): 253 pages, leaving the top 3 pages."""
    m, pid = a
    p = proc(m, pid)
    assert (p.sp, p.mm.rss) == (STACK_TOP - PAGE, 1)
    m.tasks.stack(pid, MIB)
    assert p.sp == STACK_TOP - MIB
    assert p.mm.rss == 256
    assert (STACK_TOP - MIB, STACK_TOP) in vmas(m, pid)
    m.tasks.stack(pid, 8 << 10)
    assert p.sp == STACK_TOP - 8192 and p.mm.rss == 256
    assert m.tasks.scavenge(pid) == 253
    assert p.mm.rss == 3
    assert (STACK_TOP - MIB, STACK_TOP) in vmas(m, pid)    # the VMA stays grown
    assert any(f"{pid} scavenge reason=command areas=0 heap_pages=0 stack_pages=253" in line
               for line in trace_lines(m))
    invariants(m)


def test_a_stack_deeper_than_the_rlimit_kills_the_process(a, invariants):
    """9M is past the 8M stack limit: the first (lowest) page cannot grow the stack, the
    program dies of SIGSEGV and the command fails with EFAULT."""
    m, pid = a
    with pytest.raises(Fault, match="SIGSEGV"):
        m.tasks.stack(pid, 9 * MIB)
    assert pid not in m.pids()
    assert f"a[{pid}]: segfault at {STACK_TOP - 9 * MIB:x}" in logged(m, "segfault")
    invariants(m)


def test_stack_depth_out_of_range_is_refused(a):
    m, pid = a
    for depth in (0, (1 << 30) + 1):
        with pytest.raises(InvalidArgument):
            m.tasks.stack(pid, depth)
    assert pid in m.pids()


def trace_lines(m) -> list[str]:
    """Every trace line published so far (the ring holds them all in these short tests)."""
    log = m.trace
    data = log.read(log.reader(), 0, 1 << 30, block=False) or b""
    return data.decode().splitlines()
