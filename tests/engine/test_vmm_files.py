"""File mappings and shared anonymous memory on the small machine.

/data is an 8-page file made with create_file (its disk reads as zero). An
8-page mapping of it lands at 0x7ffff7ff7000, under PMD slot 447, so each
process's first touch there costs a PTE table besides whatever page it needs.
The first access to an uncached page reads it from disk into a new FILE
frame (a major fault); later accesses by anyone map that same frame.
"""
import pytest

from engine.errors import Exists, Fault, InvalidArgument
from engine.vmm import pte as P
from engine.vmm.vma import VM_READ
from vmm_common import PAGE, RW, MMAP_BASE, SMALL_MEMTOTAL, free, event, ptes, kcount


def data_file(m):
    return next(f for f in m.files() if f[0] == "/data")


def logged(m, text: str) -> str:
    """The last kernel log line containing text (AssertionError if none does)."""
    lines = [x for x in m.kmsg_lines() if text in x]
    assert lines, f"no kmsg line contains {text!r}"
    return lines[-1]


def test_shared_mappings_of_a_file_see_each_others_writes(small, invariants):
    assert small.tasks.create_file("/data", 8 * PAGE) == "/data"
    p1, p2 = small.tasks.spawn("a"), small.tasks.spawn("b")
    f1 = small.tasks.mmap(p1, 8 * PAGE, prot=RW, shared=True, file="/data")
    f2 = small.tasks.mmap(p2, 8 * PAGE, prot=RW, shared=True, file="/data")
    assert f1 == f2 == MMAP_BASE - 8 * PAGE
    before = small.meminfo()
    assert small.meminfo().committed_as == 2 * 97              # shared file areas are not charged
    majors, pgpgin = event(small, "pgmajfault"), event(small, "pgpgin")

    small.tasks.write(p1, f1, 11)                             # read in from disk: major fault
    mi = small.meminfo()
    assert mi.free == before.free - 2                         # PTE table + page-cache frame
    assert (mi.cached, mi.mapped, mi.dirty, mi.shmem) == (1, 1, 1, 0)
    assert mi.anon_pages == before.anon_pages
    assert event(small, "pgmajfault") == majors + 1
    assert event(small, "pgpgin") == pgpgin + 4               # kB
    assert small.proc_view(p1).majflt == 1
    assert small.proc_view(p1).rss_file == 1
    invariants(small)

    assert small.tasks.read(p2, f2) == 11                     # same frame: minor fault
    assert free(small) == mi.free - 1                         # p2's PTE table only
    assert small.proc_view(p2).majflt == 0
    pfn = P.pfn_of(ptes(small, p1)[f1])
    assert P.pfn_of(ptes(small, p2)[f2]) == pfn
    assert kcount(small, pfn) == 2
    assert small.meminfo().mapped == 1
    small.tasks.write(p2, f2 + PAGE, 12)
    assert small.tasks.read(p1, f1 + PAGE) == 12
    assert data_file(small) == ("/data", 8 * PAGE, 2, 2, 2)   # path, size, cached, dirty, maps
    invariants(small)

    small.tasks.exit(p1)
    small.tasks.exit(p2)
    mi = small.meminfo()
    assert (mi.cached, mi.mapped, mi.dirty) == (2, 0, 2)      # the page cache outlives the mappings
    assert mi.free == SMALL_MEMTOTAL - 2
    invariants(small)


def test_a_private_file_mapping_copies_on_write_and_leaves_the_file_alone(small, invariants):
    small.tasks.create_file("/data", 8 * PAGE)
    writer = small.tasks.spawn("w")
    f1 = small.tasks.mmap(writer, 8 * PAGE, prot=RW, shared=True, file="/data")
    small.tasks.write(writer, f1, 11)
    priv = small.tasks.spawn("p")
    f3 = small.tasks.mmap(priv, 8 * PAGE, prot=RW, file="/data")
    assert small.meminfo().committed_as == 97 + 97 + 8        # private writable: charged
    assert small.tasks.read(priv, f3) == 11                   # the cached page, read-only
    e = ptes(small, priv)[f3]
    assert not e & P.RW and small.ft.type_of(P.pfn_of(e)).name == "FILE"
    before = small.meminfo()
    small.tasks.write(priv, f3, 99)
    after = small.meminfo()
    assert after.free == before.free - 1                      # one anonymous copy
    assert after.anon_pages == before.anon_pages + 1
    assert after.cached == before.cached
    v = small.proc_view(priv)
    assert (v.rss_anon, v.rss_file) == (2, 0)
    assert small.tasks.read(writer, f1) == 11
    assert small.tasks.read(priv, f3) == 99
    invariants(small)

    # a private write to a page nobody has read yet: read it in (major), then copy it
    majors = small.proc_view(priv).majflt
    small.tasks.write(priv, f3 + 2 * PAGE, 7)
    assert free(small) == after.free - 2
    assert small.meminfo().cached == before.cached + 1
    assert small.proc_view(priv).majflt == majors + 1
    assert small.tasks.read(writer, f1 + 2 * PAGE) == 0
    invariants(small)

    # a fresh mapping sees the file, never the private copies
    small.tasks.exit(priv)
    reader = small.tasks.spawn("r")
    f4 = small.tasks.mmap(reader, 8 * PAGE, prot=VM_READ, file="/data")
    assert [small.tasks.read(reader, f4 + i * PAGE) for i in range(3)] == [11, 0, 0]
    invariants(small)


def test_a_major_fault_on_the_first_read_of_an_uncached_page(small, invariants):
    small.tasks.create_file("/data", 8 * PAGE)
    pid = small.tasks.spawn("a")
    f = small.tasks.mmap(pid, 8 * PAGE, prot=VM_READ, file="/data")
    majors = event(small, "pgmajfault")
    assert small.tasks.read(pid, f + 3 * PAGE) == 0
    assert event(small, "pgmajfault") == majors + 1
    assert (small.meminfo().cached, small.meminfo().mapped, small.meminfo().dirty) == (1, 1, 0)
    assert small.tasks.read(pid, f + 3 * PAGE) == 0           # present now: no fault at all
    small.tasks.munmap(pid, f, 8 * PAGE)
    g = small.tasks.mmap(pid, 8 * PAGE, prot=VM_READ, file="/data")
    assert small.tasks.read(pid, g + 3 * PAGE) == 0           # still cached: minor
    assert event(small, "pgmajfault") == majors + 1
    assert small.proc_view(pid).majflt == 1
    invariants(small)


def test_a_mapping_at_an_offset_maps_the_right_file_pages(small, invariants):
    small.tasks.create_file("/data", 8 * PAGE)
    pid = small.tasks.spawn("a")
    whole = small.tasks.mmap(pid, 8 * PAGE, prot=RW, shared=True, file="/data")
    small.tasks.fill(pid, whole, 8 * PAGE, seed=0)
    values = [small.tasks.read(pid, whole + i * PAGE) for i in range(8)]
    part = small.tasks.mmap(pid, 3 * PAGE, prot=VM_READ, shared=True, file="/data", offset=5 * PAGE)
    assert [small.tasks.read(pid, part + i * PAGE) for i in range(3)] == values[5:]
    assert small.proc_view(pid, vmas=True).vmas[2].pgoff == 5 * PAGE
    invariants(small)


def test_an_access_past_the_end_of_the_file_is_a_sigbus(small, invariants):
    small.tasks.create_file("/data", 8 * PAGE)
    pid = small.tasks.spawn("a")
    f = small.tasks.mmap(pid, 16 * PAGE, prot=RW, shared=True, file="/data")
    small.tasks.write(pid, f + 7 * PAGE, 1)
    with pytest.raises(Fault) as info:
        small.tasks.read(pid, f + 8 * PAGE)
    assert "SIGBUS" in str(info.value)
    assert pid not in small.pids()
    assert logged(small, "SIGBUS").endswith(
        f"a[{pid}]: SIGBUS at {f + 8 * PAGE:x}: page 8 is past the end of /data (8 pages)")
    invariants(small)


def test_shared_anonymous_memory_counts_in_shmem_and_survives_fork(small, invariants):
    pid = small.tasks.spawn("a")
    s = small.tasks.mmap(pid, 4 * PAGE, prot=RW, shared=True)
    assert s == MMAP_BASE - 4 * PAGE
    mi = small.meminfo()
    assert mi.committed_as == 97 + 4                          # charged to the object
    assert (mi.shmem, mi.cached) == (0, 0)
    assert small.proc_view(pid, vmas=True).vmas[2].path == "/dev/zero (deleted)"
    small.tasks.write(pid, s, 5)
    mi = small.meminfo()
    assert (mi.shmem, mi.cached, mi.mapped, mi.anon_pages) == (1, 1, 1, 1)
    assert mi.free == SMALL_MEMTOTAL - 5 - 2
    assert small.proc_view(pid).rss_shmem == 1
    assert event(small, "pgmajfault") == 0                    # nothing to read from disk
    invariants(small)

    child = small.tasks.fork(pid)
    assert small.meminfo().committed_as == 97 + 4 + 97         # the object is charged once
    assert small.tasks.read(child, s) == 5
    small.tasks.write(child, s + PAGE, 6)                     # no copy: the parent sees it
    assert small.tasks.read(pid, s + PAGE) == 6
    pfn = P.pfn_of(ptes(small, child)[s])
    assert kcount(small, pfn) == 2
    assert small.meminfo().shmem == 2
    invariants(small)

    small.tasks.exit(pid)
    assert [small.tasks.read(child, s + i * PAGE) for i in range(3)] == [5, 6, 0]
    assert small.meminfo().shmem == 3
    invariants(small)
    small.tasks.exit(child)                                   # the last mapping: the object dies
    mi = small.meminfo()
    assert (mi.shmem, mi.cached, mi.committed_as, mi.free) == (0, 0, 0, SMALL_MEMTOTAL)
    invariants(small)


def test_munmap_of_part_of_shared_memory_keeps_the_object_alive(small, invariants):
    pid = small.tasks.spawn("a")
    s = small.tasks.mmap(pid, 4 * PAGE, prot=RW, shared=True)
    small.tasks.fill(pid, s, 4 * PAGE, seed=1)
    small.tasks.munmap(pid, s, 2 * PAGE)
    mi = small.meminfo()
    assert (mi.shmem, mi.mapped, mi.committed_as) == (4, 2, 97 + 4)
    assert small.tasks.verify(pid, s + 2 * PAGE, 2 * PAGE, seed=1) == 0
    invariants(small)
    small.tasks.munmap(pid, s + 2 * PAGE, 2 * PAGE)
    mi = small.meminfo()
    assert (mi.shmem, mi.mapped, mi.committed_as) == (0, 0, 97)
    invariants(small)


def test_populate_past_the_end_of_the_file_maps_what_exists_and_fails_nothing(small, invariants):
    # Linux's __mm_populate ignores fault errors: the mmap succeeds, the pages
    # inside the file are mapped, and only a later access past the end is a SIGBUS.
    small.tasks.create_file("/data", 2 * PAGE)
    pid = small.tasks.spawn("a")
    f = small.tasks.mmap(pid, 4 * PAGE, prot=RW, shared=True, file="/data", populate=True)
    assert pid in small.pids()
    assert sorted(ptes(small, pid))[:2] == [f, f + PAGE]
    invariants(small)


def test_creating_a_file_twice_is_eexist(small, invariants):
    small.tasks.create_file("/data", PAGE)
    with pytest.raises(Exists):
        small.tasks.create_file("data", 2 * PAGE)
    with pytest.raises(InvalidArgument):
        small.tasks.create_file("/bad path", PAGE)
    with pytest.raises(InvalidArgument):
        small.tasks.create_file("/empty", 0)
    assert [f for f in small.files() if f[0] == "/data"] == [("/data", PAGE, 0, 0, 0)]
    invariants(small)
