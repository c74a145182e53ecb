"""fork and copy-on-write on the small machine, frame by frame.

After spawn("a") (5 frames: PGD, PUD, PMD, the stack's PTE table, the stack
page) a 4-page private area sits at 0x7ffff7ffb000, under PMD slot 447, so
filling it takes a PTE table and 4 frames. fork copies the tables, never the
pages: the child's PGD, PUD, PMD and two PTE tables are 5 frames, and each of
the 5 private pages is then mapped twice, read-only in both processes.
"""
from engine.vmm import pte as P
from engine.vmm.vma import VM_READ
from engine.vmm.vmm import fill_value
from vmm_common import PAGE, RW, MMAP_BASE, STACK_TOP, FIRST_PID, SMALL_MEMTOTAL, free, event, ptes, kcount


def logged(m, text: str) -> str:
    """The last kernel log line containing text (AssertionError if none does)."""
    lines = [x for x in m.kmsg_lines() if text in x]
    assert lines, f"no kmsg line contains {text!r}"
    return lines[-1]


def setup(m):
    pid = m.tasks.spawn("a")
    a = m.tasks.mmap(pid, 4 * PAGE, prot=RW)
    assert a == MMAP_BASE - 4 * PAGE
    m.tasks.fill(pid, a, 4 * PAGE, seed=7)
    assert free(m) == SMALL_MEMTOTAL - 10
    return pid, a


def test_fork_shares_every_private_page_read_only(small, invariants):
    parent, a = setup(small)
    child = small.tasks.fork(parent)
    assert child == FIRST_PID + 1
    assert small.proc_view(child).ppid == parent
    assert free(small) == SMALL_MEMTOTAL - 15                # 5 tables, no pages
    assert small.meminfo().committed_as == 2 * (97 + 4)
    assert small.meminfo().page_tables == 4 + 1 + 5
    pe, ce = ptes(small, parent), ptes(small, child)
    assert sorted(pe) == sorted(ce) == [a + i * PAGE for i in range(4)] + [STACK_TOP - PAGE]
    for va in pe:
        assert P.pfn_of(pe[va]) == P.pfn_of(ce[va])
        assert not pe[va] & P.RW and not ce[va] & P.RW
        assert kcount(small, P.pfn_of(pe[va])) == 2
    cv = small.proc_view(child)
    assert (cv.rss_anon, cv.pt_bytes) == (5, 4 * PAGE)
    assert small.tasks.verify(child, a, 4 * PAGE, seed=7) == 0
    assert logged(small, "fork:").endswith(f"fork: {parent} (a) -> {child}")
    invariants(small)


def test_a_write_in_the_child_copies_one_frame_and_the_parent_keeps_its_value(small, invariants):
    parent, a = setup(small)
    child = small.tasks.fork(parent)
    shared = P.pfn_of(ptes(small, parent)[a])
    reuse = event(small, "pgreuse")
    small.tasks.write(child, a, 77)
    assert free(small) == SMALL_MEMTOTAL - 16
    copy = P.pfn_of(ptes(small, child)[a])
    assert copy != shared
    assert P.pfn_of(ptes(small, parent)[a]) == shared
    assert (kcount(small, shared), kcount(small, copy)) == (1, 1)
    assert small.tasks.read(child, a) == 77
    assert small.tasks.read(parent, a) == fill_value(a, 7)
    assert event(small, "pgreuse") == reuse
    invariants(small)

    # the parent writing a page still shared copies too
    small.tasks.write(parent, a + PAGE, 88)
    assert free(small) == SMALL_MEMTOTAL - 17
    assert small.tasks.read(child, a + PAGE) == fill_value(a + PAGE, 7)
    invariants(small)

    # the child's exit frees its copy of a, the original of a + PAGE (only the
    # child mapped it any more) and its 5 tables; the rest drop to mapcount 1
    small.tasks.exit(child)
    assert free(small) == SMALL_MEMTOTAL - 10
    assert small.meminfo().committed_as == 97 + 4
    third = P.pfn_of(ptes(small, parent)[a + 2 * PAGE])
    assert kcount(small, third) == 1
    invariants(small)

    # a write now reuses the frame in place: no copy, counted as pgreuse
    small.tasks.write(parent, a + 2 * PAGE, 5)
    assert free(small) == SMALL_MEMTOTAL - 10
    assert P.pfn_of(ptes(small, parent)[a + 2 * PAGE]) == third
    assert ptes(small, parent)[a + 2 * PAGE] & P.RW
    assert event(small, "pgreuse") == reuse + 1
    assert [small.tasks.read(parent, a + i * PAGE) for i in range(4)] == \
        [fill_value(a, 7), 88, 5, fill_value(a + 3 * PAGE, 7)]
    invariants(small)


def test_the_child_keeps_the_data_when_the_parent_exits(small, invariants):
    parent, a = setup(small)
    child = small.tasks.fork(parent)
    small.tasks.exit(parent)
    assert free(small) == SMALL_MEMTOTAL - 5 - 5             # the child's tables and 5 pages
    assert small.proc_view(child).ppid == 0
    assert small.tasks.verify(child, a, 4 * PAGE, seed=7) == 0
    reuse = event(small, "pgreuse")
    small.tasks.fill(child, a, 4 * PAGE, seed=8)             # every page is the child's alone now
    assert free(small) == SMALL_MEMTOTAL - 10
    assert event(small, "pgreuse") == reuse + 4
    invariants(small)


def test_fork_shares_the_zero_page_without_counting_it(small, invariants):
    pid = small.tasks.spawn("a")
    a = small.tasks.mmap(pid, 2 * PAGE, prot=RW)
    small.tasks.write(pid, a, 3)
    assert small.tasks.read(pid, a + PAGE) == 0              # the zero page
    child = small.tasks.fork(pid)
    zero = small.vmm.zero_pfn
    e = ptes(small, child)[a + PAGE]
    assert P.pfn_of(e) == zero and e & P.SPECIAL
    assert kcount(small, zero) == 0
    before = free(small)
    small.tasks.write(child, a + PAGE, 4)                    # copy of the zero page: a new frame
    assert free(small) == before - 1
    assert small.tasks.read(pid, a + PAGE) == 0
    invariants(small)


def test_a_written_private_file_page_is_shared_by_fork_and_copied_on_write(small, invariants):
    small.tasks.create_file("/data", 4 * PAGE)
    pid = small.tasks.spawn("a")
    f = small.tasks.mmap(pid, 4 * PAGE, prot=RW, file="/data")
    small.tasks.write(pid, f, 10)                            # anon copy of the file page
    assert small.tasks.read(pid, f + PAGE) == 0              # the cached file page itself
    child = small.tasks.fork(pid)
    e = ptes(small, child)
    assert kcount(small, P.pfn_of(e[f])) == 2
    assert kcount(small, P.pfn_of(e[f + PAGE])) == 2         # copied as the area has anon pages
    small.tasks.write(child, f, 11)
    assert (small.tasks.read(pid, f), small.tasks.read(child, f)) == (10, 11)
    invariants(small)


def test_fork_of_a_protnone_area_keeps_it_copy_on_write_after_mprotect(small, invariants):
    pid = small.tasks.spawn("a")
    a = small.tasks.mmap(pid, PAGE, prot=RW)
    small.tasks.write(pid, a, 21)
    small.tasks.mprotect(pid, a, PAGE, 0)
    child = small.tasks.fork(pid)
    pfn = P.pfn_of(ptes(small, child)[a])
    assert kcount(small, pfn) == 2
    invariants(small)
    small.tasks.mprotect(child, a, PAGE, RW)
    assert not ptes(small, child)[a] & P.RW                  # still shared: must stay read-only
    small.tasks.write(child, a, 22)
    small.tasks.mprotect(pid, a, PAGE, VM_READ)
    assert small.tasks.read(pid, a) == 21
    assert small.tasks.read(child, a) == 22
    invariants(small)


def test_smaps_after_fork_splits_pss_and_shows_the_pages_shared(small, invariants):
    parent, a = setup(small)
    child = small.tasks.fork(parent)

    def stats(pid):
        v = next(r for r in small.proc_view(pid, vmas=True, stats=True).vmas if r.start == a)
        return v.stats

    for pid, referenced in ((parent, 4 * PAGE), (child, 0)):     # the child's entries start old
        s = stats(pid)
        assert (s.rss, s.anonymous, s.shared_dirty, s.private_dirty) == (4 * PAGE,) * 3 + (0,)
        assert s.pss == 4 * ((PAGE << 12) // 2)                  # Pss with 12 fractional bits
        assert s.referenced == referenced
    small.tasks.write(child, a, 1)
    s = stats(child)
    assert (s.private_dirty, s.shared_dirty) == (PAGE, 3 * PAGE)
    assert s.pss == (PAGE << 12) + 3 * ((PAGE << 12) // 2)
    invariants(small)
