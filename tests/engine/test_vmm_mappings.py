"""munmap, mprotect, madvise and brk on the small machine.

A 6 MiB area mapped at 0x40000000 (1 GiB aligned: PGD slot 0, PUD slot 1)
spans three 2 MiB PTE tables; touching one page in each builds a PUD, a PMD,
three PTE tables and takes three pages. The program break starts right after
data, at 0x540000.
"""
import pytest

from engine.errors import Exists, Fault, InvalidArgument, OutOfMemory
from engine.vmm import pte as P
from engine.vmm.vma import VM_READ
from engine.vmm.vmm import fill_value
from vmm_common import PAGE, MIB, RW, MMAP_BASE, STACK_TOP, free, event, ptes

BASE = 0x40000000
BRK0 = 0x540000


def areas(m, pid):
    return [(r.start, r.end, r.perms) for r in m.proc_view(pid, vmas=True).vmas]


def logged(m, text: str) -> str:
    """The last kernel log line containing text (AssertionError if none does)."""
    lines = [x for x in m.kmsg_lines() if text in x]
    assert lines, f"no kmsg line contains {text!r}"
    return lines[-1]


# ---------------------------------------------------------------------------
# munmap
# ---------------------------------------------------------------------------

def test_munmap_of_the_middle_splits_the_area_and_frees_what_no_area_needs(small, invariants):
    pid = small.tasks.spawn("a")
    assert small.tasks.mmap(pid, 6 * MIB, addr=BASE, prot=RW) == BASE
    for k in range(3):
        small.tasks.write(pid, BASE + 2 * k * MIB, 100 + k)
    before = small.meminfo()
    assert before.page_tables == 4 + 5
    invariants(small)

    assert small.tasks.munmap(pid, BASE + 2 * MIB, 2 * MIB) == 512
    assert areas(small, pid)[:2] == [(0x400000, 0x500000, "r-xp"), (0x500000, 0x540000, "rw-p")]
    assert areas(small, pid)[2:4] == [(BASE, BASE + 2 * MIB, "rw-p"),
                                      (BASE + 4 * MIB, BASE + 6 * MIB, "rw-p")]
    after = small.meminfo()
    assert after.free == before.free + 2                  # the page and its PTE table
    assert after.page_tables == before.page_tables - 1
    assert after.anon_pages == before.anon_pages - 1
    assert after.committed_as == before.committed_as - 512
    assert small.tasks.read(pid, BASE) == 100
    assert small.tasks.read(pid, BASE + 4 * MIB) == 102
    invariants(small)

    with pytest.raises(Fault):                             # the hole is gone for good
        small.tasks.read(pid, BASE + 3 * MIB)
    invariants(small)


def test_munmap_inside_one_table_keeps_the_table_the_rest_needs(small, invariants):
    pid = small.tasks.spawn("a")
    a = small.tasks.mmap(pid, 8 * PAGE, prot=RW)
    small.tasks.fill(pid, a, 8 * PAGE, seed=1)
    before = small.meminfo()
    small.tasks.munmap(pid, a + 2 * PAGE, 3 * PAGE)
    after = small.meminfo()
    assert after.free == before.free + 3
    assert after.page_tables == before.page_tables
    assert small.tasks.verify(pid, a, 2 * PAGE, seed=1) == 0
    assert small.tasks.verify(pid, a + 5 * PAGE, 3 * PAGE, seed=1) == 0
    invariants(small)


def test_munmap_over_holes_and_of_nothing_is_fine(small, invariants):
    pid = small.tasks.spawn("a")
    a = small.tasks.mmap(pid, 2 * PAGE, prot=RW)
    assert small.tasks.munmap(pid, a - 4 * PAGE, 16 * PAGE) == 2
    assert small.tasks.munmap(pid, a, PAGE) == 0
    with pytest.raises(InvalidArgument):
        small.tasks.munmap(pid, a + 1, PAGE)
    invariants(small)


# ---------------------------------------------------------------------------
# mprotect
# ---------------------------------------------------------------------------

def test_mprotect_splits_and_a_write_to_the_read_only_part_kills_only_that_process(small, invariants):
    pid = small.tasks.spawn("a")
    other = small.tasks.spawn("b")
    a = small.tasks.mmap(pid, 3 * PAGE, prot=RW)
    small.tasks.fill(pid, a, 3 * PAGE, seed=2)
    small.tasks.fill(other, STACK_TOP - 2 * PAGE, 2 * PAGE, seed=5)
    small.tasks.mprotect(pid, a + PAGE, PAGE, VM_READ)
    assert areas(small, pid)[2:5] == [(a, a + PAGE, "rw-p"), (a + PAGE, a + 2 * PAGE, "r--p"),
                                      (a + 2 * PAGE, a + 3 * PAGE, "rw-p")]
    assert not ptes(small, pid)[a + PAGE] & P.RW
    assert ptes(small, pid)[a] & P.RW
    assert small.tasks.read(pid, a + PAGE) == fill_value(a + PAGE, 2)
    invariants(small)

    start = small.meminfo()
    with pytest.raises(Fault):
        small.tasks.write(pid, a + PAGE, 1)
    assert pid not in small.pids()
    assert free(small) == start.free + 5 + 1 + 3              # its tables, stack page, 3 pages
    assert small.tasks.verify(other, STACK_TOP - 2 * PAGE, 2 * PAGE, seed=5) == 0
    line = logged(small, f"a[{pid}]: segfault")
    assert f"a[{pid}]: segfault at {a + PAGE:x} " in line
    assert " error 7 in a[" in line                           # write to a present page: protection
    invariants(small)


def test_mprotect_none_blocks_reads_and_mprotect_back_merges_and_keeps_the_data(small, invariants):
    pid = small.tasks.spawn("a")
    a = small.tasks.mmap(pid, 4 * PAGE, prot=RW)
    small.tasks.fill(pid, a, 4 * PAGE, seed=3)
    small.tasks.mprotect(pid, a, 2 * PAGE, 0)
    small.tasks.mprotect(pid, a, PAGE, 0)                     # twice over the same page
    e = ptes(small, pid)[a]
    assert not e & P.P and e & P.PROTNONE
    pfn = P.pfn_of(e)
    assert small.ft.type_of(pfn).name == "ANON"
    assert int.from_bytes(small.kpagecount(pfn, 1), "little") == 1
    assert areas(small, pid)[2:4] == [(a, a + 2 * PAGE, "---p"), (a + 2 * PAGE, a + 4 * PAGE, "rw-p")]
    invariants(small)
    small.tasks.mprotect(pid, a, 2 * PAGE, RW)
    assert areas(small, pid)[2] == (a, a + 4 * PAGE, "rw-p")
    assert small.tasks.verify(pid, a, 4 * PAGE, seed=3) == 0
    assert ptes(small, pid)[a] & P.RW                         # exclusively owned: writable again
    invariants(small)
    small.tasks.mprotect(pid, a, PAGE, 0)
    with pytest.raises(Fault):
        small.tasks.read(pid, a)
    invariants(small)


def test_mprotect_making_a_private_read_only_area_writable_charges_it(small, invariants):
    pid = small.tasks.spawn("a")
    before = small.meminfo().committed_as
    a = small.tasks.mmap(pid, 10 * PAGE, prot=VM_READ)
    assert small.meminfo().committed_as == before
    small.tasks.mprotect(pid, a, 4 * PAGE, RW)
    assert small.meminfo().committed_as == before + 4
    small.tasks.mprotect(pid, a, 4 * PAGE, VM_READ)           # the charge stays (VM_ACCOUNT)
    assert small.meminfo().committed_as == before + 4
    small.tasks.munmap(pid, a, 10 * PAGE)
    assert small.meminfo().committed_as == before
    with pytest.raises(OutOfMemory):
        small.tasks.mprotect(pid, a, PAGE, RW)                # ENOMEM: not mapped
    invariants(small)


# ---------------------------------------------------------------------------
# madvise
# ---------------------------------------------------------------------------

def test_madvise_dontneed_gives_the_frames_back_and_reads_zero_after(small, invariants):
    pid = small.tasks.spawn("a")
    a = small.tasks.mmap(pid, 4 * PAGE, prot=RW)
    small.tasks.fill(pid, a, 4 * PAGE, seed=4)
    before = small.meminfo()
    small.tasks.madvise(pid, a + PAGE, 2 * PAGE, "dontneed")
    after = small.meminfo()
    assert after.free == before.free + 2
    assert after.anon_pages == before.anon_pages - 2
    assert after.committed_as == before.committed_as          # still mapped, still charged
    assert small.proc_view(pid).rss_anon == 1 + 2
    assert [small.tasks.read(pid, a + i * PAGE) for i in range(4)] == \
        [fill_value(a, 4), 0, 0, fill_value(a + 3 * PAGE, 4)]
    assert free(small) == after.free                          # the reads map the zero page
    invariants(small)


def test_madvise_free_marks_pages_lazy_and_keeps_them_until_reclaim(small, invariants):
    pid = small.tasks.spawn("a")
    a = small.tasks.mmap(pid, 4 * PAGE, prot=RW)
    small.tasks.fill(pid, a, 4 * PAGE, seed=6)
    before = small.meminfo()
    lazy = event(small, "pglazyfree")
    small.tasks.madvise(pid, a, 3 * PAGE, "free")
    v = small.proc_view(pid, vmas=True, stats=True).vmas[2]
    assert (v.start, v.end) == (a, a + 4 * PAGE)
    assert v.stats.lazyfree == 3 * PAGE
    assert v.stats.anonymous == 4 * PAGE
    assert event(small, "pglazyfree") == lazy + 3
    assert free(small) == before.free                         # nothing reclaims them yet
    e = ptes(small, pid)[a]
    assert not e & P.DIRTY
    pfn = P.pfn_of(e)
    flags = int.from_bytes(small.kpageflags(pfn, 1), "little")
    assert flags & (1 << 12) and not flags & (1 << 14)        # ANON without SWAPBACKED
    assert small.tasks.verify(pid, a, 4 * PAGE, seed=6) == 0
    small.tasks.write(pid, a, 1)                              # written again: no longer lazy
    v = small.proc_view(pid, vmas=True, stats=True).vmas[2]
    assert v.stats.lazyfree == 2 * PAGE
    invariants(small)


def test_madvise_free_refuses_file_and_shared_areas_and_changes_nothing(small, invariants):
    small.tasks.create_file("/f", 2 * PAGE)
    pid = small.tasks.spawn("a")
    f = small.tasks.mmap(pid, 2 * PAGE, prot=RW, file="/f")
    s = small.tasks.mmap(pid, 2 * PAGE, prot=RW, shared=True)
    small.tasks.write(pid, f, 1)
    for addr in (f, s):
        with pytest.raises(InvalidArgument):
            small.tasks.madvise(pid, addr, 2 * PAGE, "free")
    with pytest.raises(InvalidArgument):
        small.tasks.madvise(pid, f, PAGE, "willneed")
    with pytest.raises(OutOfMemory):                          # a hole in the range
        small.tasks.madvise(pid, 0x10000000, PAGE, "dontneed")
    assert small.tasks.read(pid, f) == 1
    invariants(small)


# ---------------------------------------------------------------------------
# brk
# ---------------------------------------------------------------------------

def test_brk_grows_and_shrinks_the_heap_and_its_charge(small, invariants):
    pid = small.tasks.spawn("a")
    before = small.meminfo()
    assert small.tasks.brk(pid) == BRK0
    assert small.tasks.brk(pid, delta=3 * PAGE + 10) == BRK0 + 3 * PAGE + 10
    assert small.proc_view(pid, vmas=True).vmas[2].path == "[heap]"
    assert areas(small, pid)[2] == (BRK0, BRK0 + 4 * PAGE, "rw-p")
    assert small.meminfo().committed_as == before.committed_as + 4
    small.tasks.fill(pid, BRK0, 4 * PAGE, seed=1)
    assert free(small) == before.free - 4 - 3                 # PUD, PMD, PTE table (PGD slot 0)
    invariants(small)
    assert small.tasks.brk(pid, new=BRK0 + PAGE) == BRK0 + PAGE
    assert areas(small, pid)[2] == (BRK0, BRK0 + PAGE, "rw-p")
    assert small.meminfo().committed_as == before.committed_as + 1
    assert free(small) == before.free - 1 - 3
    assert small.tasks.verify(pid, BRK0, PAGE, seed=1) == 0
    with pytest.raises(InvalidArgument):
        small.tasks.brk(pid, new=BRK0 - PAGE)
    small.tasks.brk(pid, new=BRK0)
    assert len(areas(small, pid)) == 3
    assert small.meminfo().committed_as == before.committed_as
    invariants(small)


def test_brk_grows_a_heap_that_mprotect_split(small, invariants):
    pid = small.tasks.spawn("a")
    small.tasks.brk(pid, delta=4 * PAGE)
    small.tasks.mprotect(pid, BRK0 + PAGE, PAGE, VM_READ)
    small.tasks.brk(pid, delta=PAGE)
    assert areas(small, pid)[2:5] == [(BRK0, BRK0 + PAGE, "rw-p"),
                                      (BRK0 + PAGE, BRK0 + 2 * PAGE, "r--p"),
                                      (BRK0 + 2 * PAGE, BRK0 + 5 * PAGE, "rw-p")]
    invariants(small)


# ---------------------------------------------------------------------------
# placement, arguments, limits
# ---------------------------------------------------------------------------

def test_mmap_places_areas_top_down_merges_neighbours_and_reuses_holes(small, invariants):
    pid = small.tasks.spawn("a")
    a = small.tasks.mmap(pid, 4 * PAGE, prot=RW)
    b = small.tasks.mmap(pid, 2 * PAGE, prot=RW)
    assert (a, b) == (MMAP_BASE - 4 * PAGE, MMAP_BASE - 6 * PAGE)
    assert areas(small, pid)[2] == (b, MMAP_BASE, "rw-p")     # same flags: one VMA
    s = small.tasks.mmap(pid, PAGE, prot=RW, shared=True)       # its own object: never merged
    assert s == MMAP_BASE - 7 * PAGE
    assert len(areas(small, pid)) == 5
    small.tasks.munmap(pid, a, 4 * PAGE)
    assert small.tasks.mmap(pid, 3 * PAGE, prot=VM_READ) == MMAP_BASE - 3 * PAGE   # highest hole
    assert small.tasks.mmap(pid, 2 * PAGE, prot=VM_READ) == MMAP_BASE - 9 * PAGE   # hole too small now
    invariants(small)


def test_mmap_rejects_bad_arguments_and_changes_nothing(small, invariants):
    small.tasks.create_file("/f", PAGE)
    pid = small.tasks.spawn("a")
    a = small.tasks.mmap(pid, 2 * PAGE, addr=0x10000000, prot=RW)
    assert a == 0x10000000
    before = (small.meminfo(), areas(small, pid))
    with pytest.raises(Exists):
        small.tasks.mmap(pid, PAGE, addr=a + PAGE, prot=RW)
    for kw in (dict(addr=a + 5), dict(addr=0x1000), dict(offset=PAGE), dict(file="/nope"),
               dict(file="/f", offset=100)):
        with pytest.raises(InvalidArgument):
            small.tasks.mmap(pid, PAGE, prot=RW, **kw)
    with pytest.raises(InvalidArgument):
        small.tasks.mmap(pid, 0, prot=RW)
    assert (small.meminfo(), areas(small, pid)) == before
    invariants(small)


def test_max_map_count_limits_mmap(small, invariants):
    small.sysctl_write("max_map_count", "5")
    pid = small.tasks.spawn("a")                                # 3 VMAs
    small.tasks.mmap(pid, PAGE, prot=RW, shared=True)
    small.tasks.mmap(pid, PAGE, prot=RW, shared=True)
    # do_mmap refuses only once the count already exceeds the limit: 5 -> 6 still maps
    small.tasks.mmap(pid, PAGE, prot=RW, shared=True)
    assert len(areas(small, pid)) == 6
    committed = small.meminfo().committed_as
    with pytest.raises(OutOfMemory):
        small.tasks.mmap(pid, PAGE, prot=RW, shared=True)
    assert small.meminfo().committed_as == committed
    with pytest.raises(OutOfMemory):
        small.tasks.mmap(pid, PAGE, prot=RW)
    invariants(small)


def test_max_map_count_limits_splits_too(small, invariants):
    small.sysctl_write("max_map_count", "5")
    pid = small.tasks.spawn("a")
    a = small.tasks.mmap(pid, 8 * PAGE, prot=RW)                # 4 VMAs
    with pytest.raises(OutOfMemory):                            # needs 6 (split_vma: ENOMEM)
        small.tasks.mprotect(pid, a + 2 * PAGE, PAGE, VM_READ)
    assert len(areas(small, pid)) == 4
    # munmap may split as long as the count on return stays within the limit (4 -> 5) ...
    small.tasks.munmap(pid, a + 4 * PAGE, PAGE)
    assert len(areas(small, pid)) == 5
    # ... but not past it (5 -> 6)
    with pytest.raises(OutOfMemory):
        small.tasks.munmap(pid, a + 6 * PAGE, PAGE)
    assert len(areas(small, pid)) == 5
    invariants(small)


def test_the_stack_keeps_its_guard_gap_when_it_grows(small, invariants):
    low = 0x7FFFFFFDE000                                        # the stack's first page
    pid = small.tasks.spawn("a")
    # an area ending exactly one guard gap below the page the stack grows to: allowed
    small.tasks.mmap(pid, PAGE, addr=low - PAGE - 256 * PAGE - PAGE, prot=RW)
    small.tasks.write(pid, low - PAGE, 1)
    assert areas(small, pid)[-1][0] == low - PAGE
    invariants(small)
    other = small.tasks.spawn("b")
    # one page closer: the stack may not grow into the gap, the access is a segfault
    small.tasks.mmap(other, PAGE, addr=low - 256 * PAGE - PAGE, prot=RW)
    with pytest.raises(Fault):
        small.tasks.write(other, low - PAGE, 1)
    assert other not in small.pids()
    invariants(small)


def test_brk_stops_at_the_next_mapping(small, invariants):
    pid = small.tasks.spawn("a")
    small.tasks.mmap(pid, PAGE, addr=BRK0 + 4 * PAGE, prot=RW)
    assert small.tasks.brk(pid, new=BRK0 + 4 * PAGE) == BRK0 + 4 * PAGE
    with pytest.raises(OutOfMemory):
        small.tasks.brk(pid, delta=1)
    assert small.tasks.brk(pid) == BRK0 + 4 * PAGE
    invariants(small)


def test_vmhwm_remembers_the_peak_after_dontneed(small, invariants):
    pid = small.tasks.spawn("a")
    a = small.tasks.mmap(pid, 10 * PAGE, prot=RW)
    small.tasks.fill(pid, a, 10 * PAGE, seed=0)
    small.tasks.madvise(pid, a, 10 * PAGE, "dontneed")
    v = small.proc_view(pid)
    assert (v.rss, v.hiwater_rss) == (1, 11)
    assert v.hiwater_vm == v.total_vm == 256 + 64 + 33 + 10
    small.tasks.munmap(pid, a, 10 * PAGE)
    assert small.proc_view(pid).hiwater_vm == 256 + 64 + 33 + 10
    invariants(small)
