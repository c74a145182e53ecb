"""Demand paging on the small machine: what a map, a first touch, a segfault and an exit cost.

Hand-worked layout (engine/vmm/mm.py, process.py): a spawned program gets
text 0x400000-0x500000 (r-x, 256 pages), data 0x500000-0x540000 (rw-, 64
pages) and a stack 0x7ffffffde000-0x7ffffffff000 (33 pages) whose top page
exec writes. That one write builds the PGD, a PUD (PGD slot 255), a PMD (PUD
slot 511) and a PTE table (PMD slot 511) and takes one anonymous frame: 5
frames. Committed_AS charges the writable private areas: 64 + 33 = 97 pages.
mmap places areas top-down below 0x7ffff7fff000, so a 1 MiB area starts at
0x7ffff7eff000, inside the 2 MiB span of PMD slot 447: its first touch needs
a PTE table of its own, the PUD and PMD already exist.
"""
import pytest

from engine.errors import Fault, InvalidArgument, NoSuchProcess
from engine.pmm.frames import PageType
from engine.vmm import pte as P
from engine.vmm.vma import VM_READ
from engine.vmm.vmm import fill_value
from vmm_common import PAGE, RW, MMAP_BASE, STACK_TOP, FIRST_PID, SMALL_MEMTOTAL, free


def logged(m, text: str) -> str:
    """The last kernel log line containing text (AssertionError if none does)."""
    lines = [x for x in m.kmsg_lines() if text in x]
    assert lines, f"no kmsg line contains {text!r}"
    return lines[-1]


def entry(m, pid, va):
    """The raw PTE mapping va in pid (0 when none), from the pte dump."""
    for _, _, vas, ents, *_ in m.pte_dump(pid).vmas:
        for v, e in zip(vas.tolist(), ents.tolist()):
            if v == va:
                return e
    return 0


def test_a_fresh_small_machine_has_only_kthreadd(small, invariants):
    assert small.pids() == [FIRST_PID - 1]
    assert small.proc_view(FIRST_PID - 1).comm == "kthreadd"
    mi = small.meminfo()
    assert (mi.total, mi.free, mi.page_tables, mi.committed_as) == (SMALL_MEMTOTAL, SMALL_MEMTOTAL, 0, 0)
    invariants(small)


def test_kthreadd_has_no_address_space_and_unknown_pids_are_esrch(small, invariants):
    kthreadd = FIRST_PID - 1
    with pytest.raises(InvalidArgument):
        small.tasks.mmap(kthreadd, PAGE, prot=RW)
    with pytest.raises(InvalidArgument):
        small.pte_dump(kthreadd)
    with pytest.raises(NoSuchProcess):
        small.tasks.touch(FIRST_PID, 0x400000, PAGE, write=False)
    assert small.proc_view(kthreadd).rss == 0
    invariants(small)


def test_spawn_lays_out_text_data_stack_and_writes_the_top_stack_page(small, invariants):
    pid = small.tasks.spawn("a")
    assert pid == FIRST_PID
    v = small.proc_view(pid, vmas=True)
    assert [(r.start, r.end, r.perms, r.path) for r in v.vmas] == [
        (0x400000, 0x500000, "r-xp", "/usr/bin/a"),
        (0x500000, 0x540000, "rw-p", "/usr/bin/a"),
        (0x7FFFFFFDE000, STACK_TOP, "rw-p", "[stack]"),
    ]
    assert v.vmas[1].pgoff == 0x100000                  # data follows text in the executable
    assert (v.rss_anon, v.rss_file, v.rss_shmem) == (1, 0, 0)
    assert v.pt_bytes == 3 * PAGE                       # PUD, PMD, PTE (VmPTE leaves out the PGD)
    assert v.total_vm == 256 + 64 + 33
    mi = small.meminfo()
    assert mi.free == SMALL_MEMTOTAL - 5
    assert mi.page_tables == 4
    assert mi.anon_pages == 1
    assert mi.committed_as == 64 + 33
    assert small.tasks.read(pid, STACK_TOP - PAGE) == fill_value(STACK_TOP - PAGE, len("a"))
    d = small.pte_dump(pid)
    assert [name for name, _, _ in d.tables] == ["PGD", "PUD", "PMD", "PTE"]
    assert [va for _, va, _ in d.tables] == [0, 255 << 39, (255 << 39) | (511 << 30),
                                             (255 << 39) | (511 << 30) | (511 << 21)]
    invariants(small)


def test_mmap_only_reserves_and_the_first_write_takes_a_frame(small, invariants):
    pid = small.tasks.spawn("a")
    before = small.meminfo()
    a = small.tasks.mmap(pid, 1 << 20, prot=RW)
    assert a == MMAP_BASE - (1 << 20) == 0x7FFFF7EFF000
    after = small.meminfo()
    assert after.free == before.free
    assert after.committed_as == before.committed_as + 256
    assert small.proc_view(pid).rss_anon == 1
    invariants(small)

    small.tasks.write(pid, a, 7)                         # a PTE table and the page
    mi = small.meminfo()
    assert mi.free == before.free - 2
    assert mi.page_tables == before.page_tables + 1
    assert mi.anon_pages == before.anon_pages + 1
    v = small.proc_view(pid)
    assert v.rss_anon == 2
    assert v.pt_bytes == 4 * PAGE
    small.tasks.write(pid, a + PAGE, 8)                  # the table is there: one frame
    small.tasks.write(pid, a + (1 << 20) - PAGE, 9)      # last page, same 2 MiB span
    assert free(small) == before.free - 4
    assert [small.tasks.read(pid, a + off) for off in (0, PAGE, (1 << 20) - PAGE)] == [7, 8, 9]
    assert small.tasks.read(pid, a + 5) == 7             # any address inside the page
    invariants(small)


def test_reading_never_written_memory_maps_the_zero_page(small, invariants):
    pid = small.tasks.spawn("a")
    a = small.tasks.mmap(pid, 4 * PAGE, prot=RW)
    before = small.meminfo()
    faults = dict(small.vmstat())["pgfault"]
    assert small.tasks.read(pid, a) == 0
    mi = small.meminfo()
    assert mi.free == before.free - 1                    # only the PTE table
    assert mi.anon_pages == before.anon_pages
    assert small.proc_view(pid).rss_anon == 1            # still just the stack page
    assert dict(small.vmstat())["pgfault"] == faults + 1
    e = entry(small, pid, a)
    zero = small.vmm.zero_pfn
    assert P.pfn_of(e) == zero
    assert e & P.P and e & P.SPECIAL and not e & P.RW
    assert small.ft.type_of(zero) == PageType.RESERVED
    assert int.from_bytes(small.kpagecount(zero, 1), "little") == 0
    assert small.tasks.verify(pid, a, 4 * PAGE, seed=1) == 4     # zero pages never match
    invariants(small)

    small.tasks.write(pid, a, 5)                         # copy-on-write of the zero page
    assert free(small) == before.free - 2
    e = entry(small, pid, a)
    assert P.pfn_of(e) != zero and e & P.RW and not e & P.SPECIAL
    assert small.tasks.read(pid, a) == 5
    assert small.proc_view(pid).rss_anon == 2
    invariants(small)


def test_a_table_for_each_level_a_touch_reaches_first(small, invariants):
    pid = small.tasks.spawn("a")
    base = 0x40000000                                     # 1 GiB aligned: PGD 0, PUD 1, PMD 0
    small.tasks.mmap(pid, 8 << 20, addr=base, prot=RW)
    start = small.meminfo()
    small.tasks.write(pid, base, 1)                       # PUD + PMD + PTE table + page
    assert free(small) == start.free - 4
    small.tasks.write(pid, base + (2 << 20), 2)           # a second 2 MiB span: table + page
    assert free(small) == start.free - 6
    small.tasks.write(pid, base + PAGE, 3)                # same table: page only
    assert free(small) == start.free - 7
    mi = small.meminfo()
    assert mi.page_tables == 4 + 4
    assert small.proc_view(pid).pt_bytes == 7 * PAGE
    tables = small.pte_dump(pid).tables
    assert sorted(va for name, va, _ in tables if name == "PTE") == [
        base, base + (2 << 20), (255 << 39) | (511 << 30) | (511 << 21)]
    invariants(small)

    # unmapping everything frees the pages, both PTE tables and the PMD; the
    # PUD stays because the text area still lies under it
    small.tasks.munmap(pid, base, 8 << 20)
    mi = small.meminfo()
    assert mi.free == start.free - 1
    assert mi.page_tables == 4 + 1
    assert small.proc_view(pid).pt_bytes == 4 * PAGE
    assert mi.committed_as == start.committed_as - 2048
    invariants(small)


def test_populate_faults_every_page_in_at_once(small, invariants):
    pid = small.tasks.spawn("a")
    start = free(small)
    a = small.tasks.mmap(pid, 16 * PAGE, prot=RW, populate=True)
    assert free(small) == start - 16 - 1
    assert small.proc_view(pid).rss_anon == 17
    assert small.tasks.read(pid, a + 15 * PAGE) == 0
    invariants(small)


def test_segfault_outside_any_region_kills_only_that_process(small, invariants):
    a = small.tasks.spawn("a")
    start = free(small)
    b = small.tasks.spawn("bee")
    small.tasks.fill(b, STACK_TOP - 4 * PAGE, 4 * PAGE, seed=3)
    with pytest.raises(Fault) as info:
        small.tasks.write(b, 0x1000000000, 1)             # a hole far below the mmap area
    assert info.value.errno == 14                         # EFAULT
    assert b not in small.pids()
    with pytest.raises(NoSuchProcess):
        small.tasks.read(b, STACK_TOP - PAGE)
    assert free(small) == start                           # everything of b is back
    assert small.tasks.read(a, STACK_TOP - PAGE) == fill_value(STACK_TOP - PAGE, 1)
    # arch/x86/mm/fault.c show_signal_msg: error 6 = user-mode write to a page not present
    assert logged(small, f"bee[{b}]: segfault").endswith(
        f"bee[{b}]: segfault at 1000000000 ip 0000000000400000 sp 00007fffffffe000 error 6 "
        f"in bee[400000+100000] likely on CPU 0 (core 0, socket 0)")
    invariants(small)


def test_a_read_of_address_zero_segfaults_with_error_4(small, invariants):
    pid = small.tasks.spawn("a")
    with pytest.raises(Fault):
        small.tasks.read(pid, 0)
    assert logged(small, f"a[{pid}]: segfault").endswith(
        f"a[{pid}]: segfault at 0 ip 0000000000400000 sp 00007fffffffe000 error 4 "
        f"in a[400000+100000] likely on CPU 0 (core 0, socket 0)")
    assert small.pids() == [FIRST_PID - 1]
    invariants(small)


def test_a_touch_just_below_the_stack_grows_it(small, invariants):
    pid = small.tasks.spawn("a")
    before = small.meminfo()
    small.tasks.write(pid, 0x7FFFFFFDE000 - PAGE, 4)
    stack = small.proc_view(pid, vmas=True).vmas[-1]
    assert (stack.start, stack.end, stack.path) == (0x7FFFFFFDD000, STACK_TOP, "[stack]")
    assert small.meminfo().committed_as == before.committed_as + 1
    assert free(small) == before.free - 1                 # same PTE table (slot 477)
    assert small.tasks.read(pid, 0x7FFFFFFDD000) == 4
    invariants(small)


def test_a_touch_far_below_the_stack_is_a_segfault_not_growth(small, invariants):
    pid = small.tasks.spawn("a")
    with pytest.raises(Fault):                            # 8 MiB + 1 page below the top: past RLIMIT_STACK
        small.tasks.write(pid, STACK_TOP - (8 << 20) - PAGE, 1)
    assert pid not in small.pids()
    invariants(small)


def test_exit_gives_every_frame_and_charge_back(small, invariants):
    pid = small.tasks.spawn("a")
    a = small.tasks.mmap(pid, 3 << 20, prot=RW)
    small.tasks.fill(pid, a, 3 << 20, seed=9)
    s = small.tasks.mmap(pid, 8 * PAGE, prot=RW, shared=True)
    small.tasks.fill(pid, s, 8 * PAGE, seed=1)
    small.tasks.brk(pid, delta=5 * PAGE)
    small.tasks.fill(pid, 0x540000, 5 * PAGE, seed=2)
    assert free(small) < SMALL_MEMTOTAL - 768
    invariants(small)
    small.tasks.exit(pid)
    mi = small.meminfo()
    assert (mi.free, mi.page_tables, mi.anon_pages, mi.shmem, mi.cached, mi.committed_as) == \
        (SMALL_MEMTOTAL, 0, 0, 0, 0, 0)
    assert small.vmm.tables == {}
    assert logged(small, f"exit: {pid}").endswith(f"exit: {pid} (a) status 0")
    invariants(small)


def test_kill_frees_like_exit_and_kthreadd_cannot_be_killed(small, invariants):
    pid = small.tasks.spawn("a")
    small.tasks.fill(pid, STACK_TOP - 8 * PAGE, 8 * PAGE, seed=0)
    small.tasks.kill(pid)
    assert free(small) == SMALL_MEMTOTAL
    with pytest.raises(InvalidArgument):
        small.tasks.kill(FIRST_PID - 1)
    invariants(small)


def test_a_refused_access_to_a_page_not_present_has_no_protection_bit(small, invariants):
    # x86 sets X86_PF_PROT only when a present page refuses the access; a never
    # touched page of a read-only area, or any PROT_NONE page (its PTE has P
    # clear), faults as "not present": error 6 for a write, 4 for a read.
    pid = small.tasks.spawn("a")
    ro = small.tasks.mmap(pid, PAGE, prot=VM_READ)
    with pytest.raises(Fault):
        small.tasks.write(pid, ro, 1)
    assert " error 6 in a[" in logged(small, "segfault")
    pid = small.tasks.spawn("b")
    none = small.tasks.mmap(pid, PAGE, prot=0)
    with pytest.raises(Fault):
        small.tasks.read(pid, none)
    assert " error 4 in b[" in logged(small, "segfault")
    invariants(small)
