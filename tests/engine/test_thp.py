"""Transparent huge pages for anonymous memory (engine/vmm/thp.py), frame by frame.

Figures worked out by hand:

  16 MiB      a fresh process's first mmap of 16 MiB is [0x7ffff6fff000, 0x7ffff7fff000)
              (MMAP_BASE - 16 MiB). The 2 MiB-aligned regions wholly inside it start at
              0x7ffff7000000 (the first boundary above the start) and go up to
              0x7ffff7c00000 (0x7ffff7e00000 + 2 MiB passes the end): 7 of them. The rest
              is 1 page below 0x7ffff7000000 (in the 2 MiB block 0x7ffff6e00000) and
              511 pages from 0x7ffff7e00000: 512 pages mapped 4 KiB at a time, each of
              the two blocks with a new PTE table (the PMD above them already maps the
              stack). A fill is therefore 7 THP faults + 512 ordinary faults = 519
              faults, 4096 resident pages, 7 x 512 = 3584 pages AnonHugePages
              (14336 kB), 2 PTE tables + 7 deposited ones = 9 more page-table pages.
  a THP       512 frames, the head 512-aligned, mapped with consecutive PFNs; split, it
              stays where it is, as 512 ordinary pages under the deposited table.
  small       config/small.yaml: 64 MiB, one node, 128 MiB of swap behind zswap.
  default     config/default.yaml: node 0 owns pfns 0-0x7ffff, node 1 pfns
              0x80000-0x13ffff.

Default mode is `madvise`: only VMAs given MADV_HUGEPAGE get huge pages.
"""
from __future__ import annotations

import numpy as np
import pytest

from engine.errors import Fault, InvalidArgument
from engine.pmm.frames import TYPE_MASK, PageType
from engine.vmm import pte as P
from engine.vmm.vma import VM_READ
from vmm_common import FIRST_PID, MIB, MMAP_BASE, PAGE, RW, free, kcount, ptes

HPAGE = 2 * MIB
NR = 512
A16 = MMAP_BASE - 16 * MIB                     # 0x7ffff6fff000
END16 = A16 + 16 * MIB


def regions(start: int, end: int) -> list[int]:
    """The 2 MiB-aligned regions wholly inside [start, end)."""
    first = (start + HPAGE - 1) // HPAGE * HPAGE
    return list(range(first, end - HPAGE + 1, HPAGE))


R16 = regions(A16, END16)
assert A16 == 0x7FFFF6FFF000
assert R16 == [0x7FFFF7000000 + k * HPAGE for k in range(7)]
THPS_16M = 7
SMALL_PAGES_16M = 4096 - THPS_16M * NR         # 512: 1 page below, 511 above
DEFAULT_NODES = {0: (0x0, 0x80000), 1: (0x80000, 0x140000)}

KPF_BUDDY, KPF_ANON, KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL, KPF_THP = 10, 12, 15, 16, 22
PM_PRESENT = 1 << 63
PM_PFN = (1 << 55) - 1


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def ev(m) -> dict[str, int]:
    return dict(m.vmstat())


THP_EVENTS = ("thp_fault_alloc", "thp_fault_fallback", "thp_split_pmd", "thp_split_page",
              "nr_anon_transparent_hugepages")


def thp_events(m) -> dict[str, int]:
    d = ev(m)
    return {k: d[k] for k in THP_EVENTS}


def grew(after: dict, before: dict) -> dict:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def pmd_entry(m, pid, va) -> int:
    """va's PMD entry, walked from the PGD by hand (0 if a level above is missing)."""
    tables = m.vmm.tables
    t = tables[m.tasks.procs[pid].mm.pgd]
    for shift in (39, 30):
        e = t[(va >> shift) & 511]
        if not e & P.P:
            return 0
        t = tables[(e & P.PFN_MASK) >> 12]
    return t[(va >> 21) & 511]


def huge_pmds(m, pid, start=A16, end=END16) -> dict[int, int]:
    """region va -> head pfn of every PMD in [start, end) mapping a huge page (PSE)."""
    out = {}
    for va in range(start & ~(HPAGE - 1), end, HPAGE):
        e = pmd_entry(m, pid, va)
        if e & P.P and e & P.PSE:
            out[va] = (e & P.PFN_MASK) >> 12
    return out


def pagemap_pfns(m, pid, va, pages) -> list[int]:
    raw = np.frombuffer(m.pagemap(pid, va // PAGE, pages), dtype=np.uint64)
    assert all(int(x) & PM_PRESENT for x in raw), f"a page of {va:#x}+{pages} is not present"
    return [int(x) & PM_PFN for x in raw]


def kflags(m, pfn, count) -> list[int]:
    return [int(x) for x in np.frombuffer(m.kpageflags(pfn, count), dtype=np.uint64)]


def bit(word, b) -> bool:
    return bool(word >> b & 1)


def anon_huge_kb(m, node=None) -> int:
    return m.meminfo(node).anon_huge * PAGE // 1024


def vma_at(m, pid, va):
    return next(v for v in m.proc_view(pid, vmas=True, stats=True).vmas if v.start <= va < v.end)


def thp_proc(m, size=16 * MIB, seed=1, name="thp", advise=True):
    """A process with one fresh mapping of size bytes, given MADV_HUGEPAGE (advise) and
    filled with seed's values: (pid, start)."""
    pid = m.tasks.spawn(name)
    a = m.tasks.mmap(pid, size, prot=RW)
    if advise:
        assert m.tasks.madvise(pid, a, size, "hugepage") == 0
    m.tasks.fill(pid, a, size, seed=seed)
    return pid, a


def all_intact(m, pid, seed=1, start=A16, end=END16, holes=()) -> None:
    """Every page of [start, end) outside the holes [lo, hi) reads seed's values."""
    cuts = sorted(holes)
    at = start
    for lo, hi in cuts + [(end, end)]:
        if lo > at:
            assert m.tasks.verify(pid, at, lo - at, seed=seed) == 0, f"{at:#x}-{lo:#x}"
        at = max(at, hi)


def no_free_block_of_order_9(m) -> bool:
    return all(sum(z.free_blocks_by_order()[9:]) == 0 for z in m.zones if z.managed_pages)


# ---------------------------------------------------------------------------
# the policy: madvise (default), always, never, nohugepage, limit
# ---------------------------------------------------------------------------

def test_default_mode_is_madvise_and_a_plain_mapping_gets_no_thp(small, invariants):
    m = small
    assert m.thp_enabled() == "madvise"
    pid = m.tasks.spawn("plain")
    proc = m.tasks.procs[pid]
    a = m.tasks.mmap(pid, 16 * MIB, prot=RW)
    assert a == A16
    assert not vma_at(m, pid, a).thp_eligible
    e0, flt = thp_events(m), proc.minflt
    m.tasks.fill(pid, a, 16 * MIB, seed=1)
    assert grew(thp_events(m), e0) == {}
    assert proc.minflt - flt == 4096
    assert huge_pmds(m, pid) == {}
    assert m.meminfo().anon_huge == 0 and vma_at(m, pid, a).stats.anon_huge == 0
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0
    invariants(m)


def test_madvise_hugepage_maps_every_aligned_2mib_region_as_one_thp(small, invariants):
    m = small
    pid = m.tasks.spawn("thp")
    proc = m.tasks.procs[pid]
    a = m.tasks.mmap(pid, 16 * MIB, prot=RW)
    assert a == A16
    assert m.tasks.madvise(pid, a, 16 * MIB, "hugepage") == 0
    v = vma_at(m, pid, a)
    assert (v.start, v.end) == (A16, END16) and "hg" in v.vmflags.split() and v.thp_eligible
    e0, flt, pgf = thp_events(m), proc.minflt, ev(m)["pgfault"]
    free0, pt0, rss0 = free(m), proc.mm.pt_pages, m.proc_view(pid).rss_anon

    m.tasks.fill(pid, a, 16 * MIB, seed=1)

    assert grew(thp_events(m), e0) == {"thp_fault_alloc": THPS_16M,
                                       "nr_anon_transparent_hugepages": THPS_16M}
    # one fault per THP, one per 4 KiB page outside them
    assert proc.minflt - flt == THPS_16M + SMALL_PAGES_16M == 519
    assert ev(m)["pgfault"] - pgf == 519
    # every page resident, counted page by page
    assert m.proc_view(pid).rss_anon - rss0 == 4096
    assert m.proc_view(pid).hiwater_rss == m.proc_view(pid).rss
    # 2 PTE tables for the edges, one deposited table per THP
    assert proc.mm.pt_pages - pt0 == 2 + THPS_16M
    assert m.proc_view(pid).pt_bytes == proc.mm.pt_pages * PAGE
    assert free0 - free(m) == 4096 + 2 + THPS_16M
    # AnonHugePages: meminfo, node meminfo, smaps of the VMA
    assert anon_huge_kb(m) == THPS_16M * 2048 == 14336
    assert anon_huge_kb(m, 0) == 14336
    assert vma_at(m, pid, a).stats.anon_huge == THPS_16M * HPAGE
    assert vma_at(m, pid, a).stats.rss == 16 * MIB

    heads = huge_pmds(m, pid)
    assert sorted(heads) == R16
    for va, head in heads.items():
        assert head % NR == 0, f"THP at {va:#x}: head pfn {head:#x} is not 512-aligned"
        # pagemap: 512 consecutive frames from the head
        assert pagemap_pfns(m, pid, va, NR) == list(range(head, head + NR))
        # kpageflags: THP on all, one head then 511 tails; each frame mapped once
        fl = kflags(m, head, NR)
        assert all(bit(f, KPF_THP) and bit(f, KPF_ANON) for f in fl)
        assert [bit(f, KPF_COMPOUND_HEAD) for f in fl] == [True] + [False] * 511
        assert [bit(f, KPF_COMPOUND_TAIL) for f in fl] == [False] + [True] * 511
        assert all(kcount(m, p) == 1 for p in (head, head + 1, head + 511))
    assert len(set(heads.values())) == THPS_16M
    # the PTE view stands for each huge PMD with its 512 entries, consecutive pfns
    ents = ptes(m, pid)
    for va, head in heads.items():
        got = [P.pfn_of(ents[va + k * PAGE]) for k in range(NR)]
        assert got == list(range(head, head + NR))
    # ... and lists a deposited table per THP
    deposited = [(va, pfn) for name, va, pfn in m.pte_dump(pid).tables if "deposited" in name]
    assert sorted(va for va, _ in deposited) == R16
    assert all(m.ft.flags[pfn] & TYPE_MASK == PageType.PAGETABLE for _, pfn in deposited)
    # the edges are ordinary pages
    for va in (A16, END16 - PAGE):
        f = kflags(m, pagemap_pfns(m, pid, va, 1)[0], 1)[0]
        assert bit(f, KPF_ANON) and not bit(f, KPF_THP)

    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0
    invariants(m)


def test_values_written_into_subpages_of_a_thp_are_kept_apart(small, invariants):
    m = small
    pid, a = thp_proc(m)
    r = R16[3]
    for k, value in ((0, 11), (1, 22), (255, 33), (511, 44)):
        m.tasks.write(pid, r + k * PAGE, value)
    assert [m.tasks.read(pid, r + k * PAGE) for k in (0, 1, 255, 511)] == [11, 22, 33, 44]
    assert huge_pmds(m, pid)[r] % NR == 0, "writes through a writable THP need no split"
    assert ev(m)["thp_split_pmd"] == 0
    all_intact(m, pid, holes=[(r, r + PAGE), (r + PAGE, r + 2 * PAGE),
                              (r + 255 * PAGE, r + 256 * PAGE), (r + 511 * PAGE, r + NR * PAGE)])
    invariants(m)


def test_mode_always_maps_thps_without_madvise(small, invariants):
    m = small
    m.thp_set_enabled("always")
    assert m.thp_enabled() == "always"
    pid, a = thp_proc(m, advise=False)
    v = vma_at(m, pid, a)
    assert "hg" not in v.vmflags.split() and v.thp_eligible
    assert sorted(huge_pmds(m, pid)) == R16
    assert ev(m)["thp_fault_alloc"] == THPS_16M
    assert anon_huge_kb(m) == 14336
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0
    invariants(m)


def test_mode_never_maps_none_even_with_madvise(small, invariants):
    m = small
    m.thp_set_enabled("never")
    pid, a = thp_proc(m)
    v = vma_at(m, pid, a)
    assert "hg" in v.vmflags.split() and not v.thp_eligible
    assert huge_pmds(m, pid) == {}
    assert grew(thp_events(m), dict.fromkeys(THP_EVENTS, 0)) == {}
    assert m.meminfo().anon_huge == 0
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0
    invariants(m)


def test_nohugepage_overrides_always(small, invariants):
    m = small
    m.thp_set_enabled("always")
    pid = m.tasks.spawn("nh")
    a = m.tasks.mmap(pid, 16 * MIB, prot=RW)
    assert m.tasks.madvise(pid, a, 16 * MIB, "nohugepage") == 0
    v = vma_at(m, pid, a)
    assert "nh" in v.vmflags.split() and not v.thp_eligible
    m.tasks.fill(pid, a, 16 * MIB, seed=1)
    assert huge_pmds(m, pid) == {} and ev(m)["thp_fault_alloc"] == 0
    # hugepage given afterwards replaces it
    assert m.tasks.madvise(pid, a, 16 * MIB, "hugepage") == 0
    flags = vma_at(m, pid, a).vmflags.split()
    assert "hg" in flags and "nh" not in flags
    invariants(m)


def test_nohugepage_on_part_of_a_mapping_keeps_that_part_small(small, invariants):
    """hugepage on the whole 16 MiB, then nohugepage on [R16[2], R16[4]): those two regions
    fault 4 KiB pages, the other five are THPs."""
    m = small
    pid = m.tasks.spawn("mix")
    a = m.tasks.mmap(pid, 16 * MIB, prot=RW)
    m.tasks.madvise(pid, a, 16 * MIB, "hugepage")
    m.tasks.madvise(pid, R16[2], 2 * HPAGE, "nohugepage")
    m.tasks.fill(pid, a, 16 * MIB, seed=1)
    assert sorted(huge_pmds(m, pid)) == [r for r in R16 if r not in (R16[2], R16[3])]
    assert ev(m)["thp_fault_alloc"] == 5
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0
    invariants(m)


def test_switching_the_mode_leaves_mapped_thps_alone(small, invariants):
    m = small
    pid, a = thp_proc(m)
    m.thp_set_enabled("never")
    assert sorted(huge_pmds(m, pid)) == R16
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0
    b = m.tasks.mmap(pid, 4 * MIB, prot=RW)
    m.tasks.madvise(pid, b, 4 * MIB, "hugepage")
    m.tasks.fill(pid, b, 4 * MIB, seed=2)
    assert huge_pmds(m, pid, b, b + 4 * MIB) == {}
    invariants(m)


@pytest.mark.parametrize("bad", ["", "sometimes", "Always", "always madvise", "[madvise]"])
def test_a_bad_mode_is_invalid_and_changes_nothing(small, bad):
    m = small
    with pytest.raises(InvalidArgument):
        m.thp_set_enabled(bad)
    assert m.thp_enabled() == "madvise"


def test_a_read_fault_maps_a_thp_too(small, invariants):
    m = small
    pid = m.tasks.spawn("reader")
    a = m.tasks.mmap(pid, 16 * MIB, prot=RW)
    m.tasks.madvise(pid, a, 16 * MIB, "hugepage")
    m.tasks.touch(pid, a, 16 * MIB, write=False)
    assert sorted(huge_pmds(m, pid)) == R16
    assert ev(m)["thp_fault_alloc"] == THPS_16M
    assert m.tasks.read(pid, R16[0] + 5 * PAGE) == 0
    # and a later write goes through the same huge page, without a split
    head = huge_pmds(m, pid)[R16[0]]
    m.tasks.write(pid, R16[0] + 5 * PAGE, 99)
    assert pagemap_pfns(m, pid, R16[0] + 5 * PAGE, 1) == [head + 5]
    assert m.tasks.read(pid, R16[0] + 5 * PAGE) == 99
    assert ev(m)["thp_split_pmd"] == 0
    invariants(m)


def test_a_process_with_a_resident_set_limit_gets_no_thp(small, invariants):
    m = small
    pid = m.tasks.spawn("limited")
    m.tasks.limit(pid, 8192)
    a = m.tasks.mmap(pid, 16 * MIB, prot=RW)
    m.tasks.madvise(pid, a, 16 * MIB, "hugepage")
    assert not vma_at(m, pid, a).thp_eligible
    m.tasks.fill(pid, a, 16 * MIB, seed=1)
    assert huge_pmds(m, pid) == {} and ev(m)["thp_fault_alloc"] == 0
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0
    invariants(m)


def test_a_limit_given_later_splits_the_thps_and_evicts_down_to_it(small, invariants):
    m = small
    pid, a = thp_proc(m)
    before = ev(m)
    evicted = m.tasks.limit(pid, 1024)
    after = ev(m)
    assert huge_pmds(m, pid) == {}
    assert after["thp_split_pmd"] - before["thp_split_pmd"] == THPS_16M
    assert after["nr_anon_transparent_hugepages"] == 0 and m.meminfo().anon_huge == 0
    assert evicted > 0 and m.tasks.procs[pid].mm.rss <= 1024
    invariants(m)
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0
    invariants(m)


def test_a_read_only_mapping_gets_read_only_thps_and_a_write_is_refused(small, invariants):
    m = small
    pid = m.tasks.spawn("ro")
    a = m.tasks.mmap(pid, 16 * MIB, prot=VM_READ)
    m.tasks.madvise(pid, a, 16 * MIB, "hugepage")
    m.tasks.touch(pid, a, 16 * MIB, write=False)
    assert sorted(huge_pmds(m, pid)) == R16
    for r in R16:
        e = pmd_entry(m, pid, r)
        assert not e & P.RW, f"the huge PMD at {r:#x} is writable in an r-- mapping"
    assert m.tasks.read(pid, R16[2] + 9 * PAGE) == 0
    invariants(m)
    with pytest.raises(Fault):
        m.tasks.write(pid, R16[2] + 9 * PAGE, 1)
    assert pid not in m.tasks.procs
    assert m.meminfo().anon_huge == 0
    invariants(m)


def test_mmap_populate_maps_thps_in_mode_always(small, invariants):
    """mmap 4M populate: [0x7ffff7bff000, 0x7ffff7fff000) holds one aligned region,
    0x7ffff7c00000."""
    m = small
    m.thp_set_enabled("always")
    pid = m.tasks.spawn("pop")
    a = m.tasks.mmap(pid, 4 * MIB, prot=RW, populate=True)
    assert a == MMAP_BASE - 4 * MIB
    assert regions(a, a + 4 * MIB) == [0x7FFFF7C00000]
    assert sorted(huge_pmds(m, pid, a, a + 4 * MIB)) == [0x7FFFF7C00000]
    assert m.proc_view(pid).rss_anon == 1024 + 1      # and the stack page
    invariants(m)


def test_file_and_shared_mappings_never_get_thps(small, invariants):
    m = small
    m.thp_set_enabled("always")
    pid = m.tasks.spawn("files")
    path = m.tasks.create_file("/data", 16 * MIB)
    f = m.tasks.mmap(pid, 16 * MIB, prot=RW, file=path)
    sh = m.tasks.mmap(pid, 16 * MIB, prot=RW, shared=True)
    for a in (f, sh):
        m.tasks.madvise(pid, a, 16 * MIB, "hugepage")
        assert not vma_at(m, pid, a).thp_eligible
        m.tasks.fill(pid, a, 16 * MIB, seed=1)
        assert huge_pmds(m, pid, a, a + 16 * MIB) == {}
        assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0
    assert ev(m)["thp_fault_alloc"] == 0
    invariants(m)


def test_the_heap_gets_thps_in_mode_always_and_a_brk_shrink_splits_the_cut_one(
        small, invariants):
    """The heap of a fresh process starts at 0x540000; 8 MiB more end it at 0xd40000, the
    aligned regions wholly inside are 0x600000, 0x800000 and 0xa00000. Shrinking the
    break to 0xb00000 cuts the last in half."""
    m = small
    m.thp_set_enabled("always")
    pid = m.tasks.spawn("heap")
    mm = m.tasks.procs[pid].mm
    start = mm.start_brk
    assert start == 0x540000
    assert m.tasks.brk(pid, delta=8 * MIB) == 0xD40000
    m.tasks.fill(pid, start, 8 * MIB, seed=3)
    assert sorted(huge_pmds(m, pid, start, 0xD40000)) == [0x600000, 0x800000, 0xA00000]
    e0, free0 = thp_events(m), free(m)
    assert m.tasks.brk(pid, new=0xB00000) == 0xB00000
    assert grew(thp_events(m), e0) == {"thp_split_pmd": 1, "thp_split_page": 1,
                                       "nr_anon_transparent_hugepages": -1}
    # the pages above the break: 1 MiB of the split THP and 0xc00000-0xd40000 (320 pages,
    # with their PTE table)
    assert free(m) - free0 == 256 + 320 + 1
    assert sorted(huge_pmds(m, pid, start, 0xD40000)) == [0x600000, 0x800000]
    invariants(m)
    assert m.tasks.verify(pid, start, 0xB00000 - start, seed=3) == 0


def test_the_replay_path_access_many_faults_thps_too(small, invariants):
    """access_many (what a replayed trace runs) goes through the same huge faults: pages
    touched in any order, one THP per region touched."""
    m = small
    pid = m.tasks.spawn("replay")
    proc = m.tasks.procs[pid]
    a = m.tasks.mmap(pid, 16 * MIB, prot=RW)
    m.tasks.madvise(pid, a, 16 * MIB, "hugepage")
    vas = [R16[4] + 300 * PAGE, R16[1] + 5 * PAGE, R16[4] + 2 * PAGE, A16, R16[1]]
    flt = proc.minflt
    with m.mu:
        m.vmm.access_many(proc, vas, [True, False, True, True, False])
    assert sorted(huge_pmds(m, pid)) == [R16[1], R16[4]]
    assert proc.minflt - flt == 3                    # two THPs and the page at A16
    assert ev(m)["thp_fault_alloc"] == 2
    invariants(m)


def test_a_forked_child_gets_its_own_thp_where_the_parent_had_none(small, invariants):
    m = small
    parent = m.tasks.spawn("parent")
    a = m.tasks.mmap(parent, 16 * MIB, prot=RW)
    m.tasks.madvise(parent, a, 16 * MIB, "hugepage")
    m.tasks.fill(parent, R16[0], HPAGE, seed=1)      # one THP; fork splits it
    child = m.tasks.fork(parent)
    assert huge_pmds(m, parent) == {} and ev(m)["thp_split_pmd"] == 1
    m.tasks.fill(child, R16[3], HPAGE, seed=2)
    assert sorted(huge_pmds(m, child)) == [R16[3]] and huge_pmds(m, parent) == {}
    assert m.tasks.read(parent, R16[3]) == 0
    assert m.tasks.verify(parent, R16[0], HPAGE, seed=1) == 0
    assert m.tasks.verify(child, R16[0], HPAGE, seed=1) == 0
    assert m.tasks.verify(child, R16[3], HPAGE, seed=2) == 0
    invariants(m)


# ---------------------------------------------------------------------------
# munmap, madvise dontneed, mprotect
# ---------------------------------------------------------------------------

def test_munmap_of_part_of_a_thp_splits_it_and_keeps_the_other_pages(small, invariants):
    m = small
    pid, a = thp_proc(m)
    r = R16[0]
    head = huge_pmds(m, pid)[r]
    dep = dict((va, pfn) for name, va, pfn in m.pte_dump(pid).tables if "deposited" in name)[r]
    e0, free0, pt0 = thp_events(m), free(m), m.tasks.procs[pid].mm.pt_pages
    rss0 = m.proc_view(pid).rss_anon

    m.tasks.munmap(pid, r, MIB)                     # the first half of the first THP

    assert grew(thp_events(m), e0) == {"thp_split_pmd": 1, "thp_split_page": 1,
                                       "nr_anon_transparent_hugepages": -1}
    assert anon_huge_kb(m) == (THPS_16M - 1) * 2048
    assert free(m) - free0 == 256                   # the unmapped half, page by page
    assert m.proc_view(pid).rss_anon == rss0 - 256
    # the deposited table now maps the other half, and the page-table count is unchanged
    assert m.tasks.procs[pid].mm.pt_pages == pt0
    e = pmd_entry(m, pid, r)
    assert e & P.P and not e & P.PSE and (e & P.PFN_MASK) >> 12 == dep
    # the kept half stays in its frames, now ordinary pages
    assert pagemap_pfns(m, pid, r + MIB, 256) == list(range(head + 256, head + NR))
    fl = kflags(m, head, NR)
    assert not any(bit(f, KPF_THP) or bit(f, KPF_COMPOUND_HEAD) or bit(f, KPF_COMPOUND_TAIL)
                   for f in fl)
    assert all(m.ft.flags[p] & TYPE_MASK == PageType.FREE for p in range(head, head + 256))
    assert sorted(huge_pmds(m, pid)) == R16[1:]
    invariants(m)
    all_intact(m, pid, holes=[(r, r + MIB)])
    invariants(m)


def test_munmap_of_a_whole_thp_frees_its_512_frames_at_once(small, invariants):
    m = small
    pid, a = thp_proc(m)
    r = R16[1]
    head = huge_pmds(m, pid)[r]
    e0, free0, pt0 = thp_events(m), free(m), m.tasks.procs[pid].mm.pt_pages

    m.tasks.munmap(pid, r, HPAGE)

    assert grew(thp_events(m), e0) == {"nr_anon_transparent_hugepages": -1}
    assert free(m) - free0 == NR + 1                # the block and its deposited table
    assert m.tasks.procs[pid].mm.pt_pages == pt0 - 1
    assert anon_huge_kb(m) == (THPS_16M - 1) * 2048
    assert pmd_entry(m, pid, r) == 0
    assert all(m.ft.flags[p] & TYPE_MASK == PageType.FREE for p in range(head, head + NR))
    # handed back whole, straight to the buddy lists: a free block of order 9 or more
    blk, order = m.pmm.zone_of(head).block_containing(head)
    assert order >= 9 and blk <= head and head + NR <= blk + (1 << order)
    assert bit(kflags(m, blk, 1)[0], KPF_BUDDY)
    invariants(m)
    all_intact(m, pid, holes=[(r, r + HPAGE)])
    invariants(m)


def test_dontneed_of_a_whole_thp_drops_it_and_the_next_touch_maps_a_new_one(small, invariants):
    m = small
    pid, a = thp_proc(m)
    r = R16[2]
    e0, free0 = thp_events(m), free(m)
    m.tasks.madvise(pid, r, HPAGE, "dontneed")
    assert grew(thp_events(m), e0) == {"nr_anon_transparent_hugepages": -1}
    assert free(m) - free0 == NR + 1
    assert pmd_entry(m, pid, r) == 0
    invariants(m)
    # the region is still mapped and still hugepage: it reads zero through a new THP
    assert m.tasks.read(pid, r + 7 * PAGE) == 0
    assert grew(thp_events(m), e0) == {"thp_fault_alloc": 1}
    assert r in huge_pmds(m, pid)
    all_intact(m, pid, holes=[(r, r + HPAGE)])
    invariants(m)


def test_dontneed_of_part_of_a_thp_splits_it(small, invariants):
    m = small
    pid, a = thp_proc(m)
    r = R16[2]
    lo, hi = r + PAGE, r + 17 * PAGE                # 16 pages inside the THP
    e0, free0 = thp_events(m), free(m)
    m.tasks.madvise(pid, lo, hi - lo, "dontneed")
    assert grew(thp_events(m), e0) == {"thp_split_pmd": 1, "thp_split_page": 1,
                                       "nr_anon_transparent_hugepages": -1}
    assert free(m) - free0 == 16
    assert r not in huge_pmds(m, pid)
    assert m.tasks.read(pid, lo) == 0 and m.tasks.read(pid, hi - PAGE) == 0
    invariants(m)
    # touching the hole again faults 4 KiB pages: a PTE table is there now
    m.tasks.fill(pid, lo, hi - lo, seed=1)
    assert ev(m)["thp_fault_alloc"] == THPS_16M and r not in huge_pmds(m, pid)
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0
    invariants(m)


def test_mprotect_of_part_of_a_thp_splits_it(small, invariants):
    m = small
    pid, a = thp_proc(m)
    r = R16[3]
    head = huge_pmds(m, pid)[r]
    e0 = thp_events(m)
    m.tasks.mprotect(pid, r, PAGE, VM_READ)
    assert grew(thp_events(m), e0) == {"thp_split_pmd": 1, "thp_split_page": 1,
                                       "nr_anon_transparent_hugepages": -1}
    assert sorted(huge_pmds(m, pid)) == [x for x in R16 if x != r]
    assert pagemap_pfns(m, pid, r, NR) == list(range(head, head + NR)), "split in place"
    v = vma_at(m, pid, r)
    assert (v.start, v.end, v.perms) == (r, r + PAGE, "r--p")
    invariants(m)
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0
    # the read-only page is read-only now: a write is a segfault
    with pytest.raises(Fault):
        m.tasks.write(pid, r, 5)
    assert pid not in m.tasks.procs
    invariants(m)


def test_mprotect_of_part_of_a_thp_keeps_every_value(small, invariants):
    m = small
    pid, a = thp_proc(m)
    r = R16[3]
    m.tasks.mprotect(pid, r + 100 * PAGE, 10 * PAGE, VM_READ)
    assert ev(m)["thp_split_pmd"] == 1
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0
    # back to rw: the VMAs merge again; the split region stays 4 KiB pages
    m.tasks.mprotect(pid, r + 100 * PAGE, 10 * PAGE, RW)
    m.tasks.fill(pid, a, 16 * MIB, seed=2)
    assert m.tasks.verify(pid, a, 16 * MIB, seed=2) == 0
    assert sorted(huge_pmds(m, pid)) == [x for x in R16 if x != r]
    invariants(m)


def test_munmap_across_two_thps_splits_both(small, invariants):
    m = small
    pid, a = thp_proc(m)
    lo, hi = R16[1] + MIB, R16[2] + MIB             # the top half of one, the bottom of the next
    e0, free0 = thp_events(m), free(m)
    m.tasks.munmap(pid, lo, hi - lo)
    assert grew(thp_events(m), e0) == {"thp_split_pmd": 2, "thp_split_page": 2,
                                       "nr_anon_transparent_hugepages": -2}
    assert free(m) - free0 == 512
    assert sorted(huge_pmds(m, pid)) == [R16[0]] + R16[3:]
    invariants(m)
    all_intact(m, pid, holes=[(lo, hi)])
    invariants(m)


def test_munmap_of_a_whole_mapping_frees_every_thp_without_a_split(small, invariants):
    m = small
    pid = m.tasks.spawn("p")
    free0 = free(m)
    a = m.tasks.mmap(pid, 16 * MIB, prot=RW)
    m.tasks.madvise(pid, a, 16 * MIB, "hugepage")
    m.tasks.fill(pid, a, 16 * MIB, seed=1)
    e0 = thp_events(m)
    m.tasks.munmap(pid, a, 16 * MIB)
    assert grew(thp_events(m), e0) == {"nr_anon_transparent_hugepages": -THPS_16M}
    assert free(m) == free0
    invariants(m)


def test_mprotect_next_to_thps_splits_none(small, invariants):
    """mprotect of the page at A16 (below the first THP) and back cuts and merges the VMA
    only at 4 KiB pages outside every huge page: nothing to split."""
    m = small
    pid, a = thp_proc(m)
    m.tasks.mprotect(pid, A16, PAGE, VM_READ)
    m.tasks.mprotect(pid, END16 - PAGE, PAGE, VM_READ)
    assert ev(m)["thp_split_pmd"] == 0 and sorted(huge_pmds(m, pid)) == R16
    invariants(m)
    m.tasks.mprotect(pid, A16, PAGE, RW)
    m.tasks.mprotect(pid, END16 - PAGE, PAGE, RW)
    v = vma_at(m, pid, A16)
    assert (v.start, v.end) == (A16, END16), "merged back into one VMA"
    assert ev(m)["thp_split_pmd"] == 0 and v.stats.anon_huge == THPS_16M * HPAGE
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0
    invariants(m)


def test_mprotect_of_the_whole_mapping_splits_every_thp(small, invariants):
    """Linux changes a whole huge PMD's protection in place (change_huge_pmd); here, as the
    spec says, every page-table walk that changes entries splits it."""
    m = small
    pid, a = thp_proc(m)
    e0 = thp_events(m)
    m.tasks.mprotect(pid, a, 16 * MIB, VM_READ)
    assert grew(thp_events(m), e0) == {"thp_split_pmd": THPS_16M, "thp_split_page": THPS_16M,
                                       "nr_anon_transparent_hugepages": -THPS_16M}
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0
    m.tasks.mprotect(pid, a, 16 * MIB, RW)
    m.tasks.fill(pid, a, 16 * MIB, seed=4)
    assert m.tasks.verify(pid, a, 16 * MIB, seed=4) == 0
    invariants(m)


def test_prot_none_on_part_of_a_thp_and_back_keeps_its_values(small, invariants):
    m = small
    pid, a = thp_proc(m)
    r = R16[5]
    m.tasks.mprotect(pid, r + 8 * PAGE, 8 * PAGE, 0)
    assert ev(m)["thp_split_pmd"] == 1
    invariants(m)
    m.tasks.mprotect(pid, r + 8 * PAGE, 8 * PAGE, RW)
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0
    invariants(m)


def test_madvise_free_on_a_thp_splits_it_and_marks_its_pages_lazy(small, invariants):
    m = small
    pid, a = thp_proc(m)
    r = R16[0]
    e0 = thp_events(m)
    m.tasks.madvise(pid, r, HPAGE, "free")
    assert grew(thp_events(m), e0) == {"thp_split_pmd": 1, "thp_split_page": 1,
                                       "nr_anon_transparent_hugepages": -1}
    assert vma_at(m, pid, r).stats.lazyfree == HPAGE
    invariants(m)
    all_intact(m, pid, holes=[(r, r + HPAGE)])


def test_nohugepage_on_an_unaligned_part_of_a_thp_splits_it(small, invariants):
    """Mode always, so the mapping needs no advice; nohugepage on 4 KiB inside a THP cuts
    the VMA there: no huge page may straddle the edges, so that one is split."""
    m = small
    m.thp_set_enabled("always")
    pid, a = thp_proc(m, advise=False)
    r = R16[6]
    e0 = thp_events(m)
    m.tasks.madvise(pid, r + 3 * PAGE, PAGE, "nohugepage")
    assert grew(thp_events(m), e0) == {"thp_split_pmd": 1, "thp_split_page": 1,
                                       "nr_anon_transparent_hugepages": -1}
    assert sorted(huge_pmds(m, pid)) == R16[:6]
    assert "nh" in vma_at(m, pid, r + 3 * PAGE).vmflags.split()
    invariants(m)
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0


def test_hugepage_on_an_aligned_range_of_mapped_thps_splits_nothing(small, invariants):
    m = small
    m.thp_set_enabled("always")
    pid, a = thp_proc(m, advise=False)
    e0 = thp_events(m)
    m.tasks.madvise(pid, R16[1], 2 * HPAGE, "hugepage")
    assert grew(thp_events(m), e0) == {}
    assert sorted(huge_pmds(m, pid)) == R16
    invariants(m)


# ---------------------------------------------------------------------------
# fork
# ---------------------------------------------------------------------------

def test_fork_splits_the_parents_thps_and_copy_on_write_keeps_both_sides(small, invariants):
    m = small
    parent, a = thp_proc(m)
    heads = huge_pmds(m, parent)
    e0 = thp_events(m)
    child = m.tasks.fork(parent)
    assert grew(thp_events(m), e0) == {"thp_split_pmd": THPS_16M, "thp_split_page": THPS_16M,
                                       "nr_anon_transparent_hugepages": -THPS_16M}
    assert huge_pmds(m, parent) == {} and huge_pmds(m, child) == {}
    assert m.meminfo().anon_huge == 0
    # both map the same frames, each twice
    for r, head in heads.items():
        assert pagemap_pfns(m, parent, r, NR) == list(range(head, head + NR))
        assert pagemap_pfns(m, child, r, NR) == list(range(head, head + NR))
        assert kcount(m, head) == 2 and kcount(m, head + 511) == 2
    invariants(m)
    m.tasks.fill(child, a, 16 * MIB, seed=2)
    assert m.tasks.verify(parent, a, 16 * MIB, seed=1) == 0
    assert m.tasks.verify(child, a, 16 * MIB, seed=2) == 0
    # the child inherits the hugepage advice: a new region of its own gets a THP again
    assert "hg" in vma_at(m, child, a).vmflags.split()
    assert huge_pmds(m, child) == {}, "the copies went to 4 KiB pages under the split tables"
    invariants(m)
    m.tasks.fill(parent, a, 16 * MIB, seed=3)
    assert m.tasks.verify(parent, a, 16 * MIB, seed=3) == 0
    assert m.tasks.verify(child, a, 16 * MIB, seed=2) == 0
    invariants(m)


# ---------------------------------------------------------------------------
# reclaim, migration, compaction
# ---------------------------------------------------------------------------

def test_reclaim_under_pressure_splits_thps_and_swaps_them_out_intact(small, invariants):
    m = small
    pid, a = thp_proc(m)
    assert len(huge_pmds(m, pid)) == THPS_16M
    hog = m.tasks.spawn("hog")
    b = m.tasks.mmap(hog, 64 * MIB, prot=RW)       # RAM is 64 MiB: the THPs must go
    m.tasks.fill(hog, b, 64 * MIB, seed=2)
    d = ev(m)
    assert d["thp_split_pmd"] >= 1
    assert d["thp_split_pmd"] == d["thp_split_page"]
    mm = m.tasks.procs[pid].mm
    assert mm.swap_ents > 0
    assert len(huge_pmds(m, pid)) == THPS_16M - d["thp_split_pmd"]
    assert d["nr_anon_transparent_hugepages"] == m.meminfo().anon_huge // NR == \
        THPS_16M - d["thp_split_pmd"]
    invariants(m)
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0
    invariants(m)
    assert m.tasks.verify(hog, b, 64 * MIB, seed=2) == 0
    invariants(m)


BLOCK_PAGES = 32768                             # a 128 MiB memory block


def test_offlining_a_block_holding_thps_splits_and_migrates_them_intact(small, invariants):
    m = small
    pid = m.tasks.spawn("p")
    i = m.memory_probe(4 << 30)
    m.memory_block_set(i, "online_movable")
    lo, hi = i * BLOCK_PAGES, (i + 1) * BLOCK_PAGES
    a = m.tasks.mmap(pid, 16 * MIB, prot=RW)
    m.tasks.madvise(pid, a, 16 * MIB, "hugepage")
    m.tasks.fill(pid, a, 16 * MIB, seed=5)
    heads = huge_pmds(m, pid)
    assert sorted(heads) == R16
    assert all(lo <= h < hi for h in heads.values()), "the THPs come from the Movable block"
    e0, mig = thp_events(m), ev(m)["pgmigrate_success"]
    m.memory_block_set(i, "offline")
    assert grew(thp_events(m), e0) == {"thp_split_pmd": THPS_16M, "thp_split_page": THPS_16M,
                                       "nr_anon_transparent_hugepages": -THPS_16M}
    assert ev(m)["pgmigrate_success"] - mig == 4096
    assert huge_pmds(m, pid) == {}
    assert not any(lo <= p < hi for p in pagemap_pfns(m, pid, a, 4096))
    invariants(m)
    assert m.tasks.verify(pid, a, 16 * MIB, seed=5) == 0
    invariants(m)


def test_an_offline_refused_for_want_of_room_splits_nothing(small, invariants):
    """80 MiB with hugepage in a Movable block: 20480 pages, below 4 GiB about 12700 free
    frames. The offline is refused (EBUSY) before anything moves, and no THP is split."""
    from engine.errors import Busy
    m = small
    pid = m.tasks.spawn("p")
    i = m.memory_probe(4 << 30)
    m.memory_block_set(i, "online_movable")
    a = m.tasks.mmap(pid, 80 * MIB, prot=RW)
    m.tasks.madvise(pid, a, 80 * MIB, "hugepage")
    m.tasks.fill(pid, a, 80 * MIB, seed=2)
    heads = huge_pmds(m, pid, a, a + 80 * MIB)
    assert len(heads) == len(regions(a, a + 80 * MIB)) == 39
    tables = {k: bytes(v) for k, v in m.vmm.tables.items()}
    e0 = thp_events(m)
    with pytest.raises(Busy, match="20480 pages to migrate"):
        m.memory_block_set(i, "offline")
    assert grew(thp_events(m), e0) == {}
    assert huge_pmds(m, pid, a, a + 80 * MIB) == heads
    assert {k: bytes(v) for k, v in m.vmm.tables.items()} == tables
    invariants(m)


def test_a_soft_offline_refused_for_want_of_a_free_frame_splits_nothing(small, invariants):
    from engine.errors import Busy
    m = small
    pid, a = thp_proc(m)
    heads = huge_pmds(m, pid)
    zs = [z for z in m.zones if z.managed_pages]
    m.palloc(count=sum(z.free_pages - z.wmark_min - z.lowmem_reserve[2] for z in zs))
    e0 = thp_events(m)
    with pytest.raises(Busy, match="no free frame"):
        m.offline_page((heads[R16[0]] + 3) << 12, hard=False)
    assert grew(thp_events(m), e0) == {} and huge_pmds(m, pid) == heads
    assert heads[R16[0]] + 3 not in m.poisoned
    invariants(m)


def test_soft_offline_of_a_thp_subpage_splits_it_and_moves_that_page(small, invariants):
    m = small
    pid, a = thp_proc(m)
    r = R16[4]
    head = huge_pmds(m, pid)[r]
    victim = head + 37
    e0 = thp_events(m)
    m.offline_page(victim << 12, hard=False)
    assert grew(thp_events(m), e0) == {"thp_split_pmd": 1, "thp_split_page": 1,
                                       "nr_anon_transparent_hugepages": -1}
    assert victim in m.poisoned
    got = pagemap_pfns(m, pid, r, NR)
    assert got[37] != victim
    assert got[:37] + got[38:] == [p for p in range(head, head + NR) if p != victim]
    assert sorted(huge_pmds(m, pid)) == [x for x in R16 if x != r]
    invariants(m)
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0
    invariants(m)


def test_compaction_never_moves_a_thps_frames(small, invariants):
    m = small
    m.sysctl_write("compaction_proactiveness", "0")
    pid, a = thp_proc(m)
    heads = huge_pmds(m, pid)
    # another process leaves every other page of 24 MiB free: much to compact
    holes = m.tasks.spawn("holes")
    b = m.tasks.mmap(holes, 24 * MIB, prot=RW)
    m.tasks.fill(holes, b, 24 * MIB, seed=9)
    for k in range(0, 24 * MIB // PAGE, 2):
        m.tasks.madvise(holes, b + k * PAGE, PAGE, "dontneed")
    e0, mig = thp_events(m), ev(m)["pgmigrate_success"]
    m.sysctl_write("compact_memory", "1")
    assert ev(m)["pgmigrate_success"] > mig, "compaction moved other pages"
    assert grew(thp_events(m), e0) == {}
    assert huge_pmds(m, pid) == heads
    for r, head in heads.items():
        assert pagemap_pfns(m, pid, r, NR) == list(range(head, head + NR))
        assert all(bit(f, KPF_THP) for f in kflags(m, head, NR))
    invariants(m)
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0
    for k in range(1, 24 * MIB // PAGE, 64):
        assert m.tasks.verify(holes, b + k * PAGE, PAGE, seed=9) == 0
    invariants(m)


def test_soft_offline_of_a_thp_head_splits_it_and_moves_the_head(small, invariants):
    m = small
    pid, a = thp_proc(m)
    r = R16[0]
    head = huge_pmds(m, pid)[r]
    m.offline_page(head << 12, hard=False)
    assert ev(m)["thp_split_pmd"] == 1 and head in m.poisoned
    got = pagemap_pfns(m, pid, r, NR)
    assert got[0] != head and got[1:] == list(range(head + 1, head + NR))
    invariants(m)
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0


def test_hard_offline_of_a_thp_subpage_kills_the_owner_and_frees_the_rest(small, invariants):
    m = small
    free0 = free(m)
    pid, a = thp_proc(m)
    head = huge_pmds(m, pid)[R16[2]]
    killed = m.memfail.hard_offline(head + 100)
    assert killed == [pid] and pid not in m.tasks.procs
    assert head + 100 in m.poisoned
    assert free(m) == free0 - 1, "everything back but the poisoned frame"
    assert m.meminfo().anon_huge == 0 and ev(m)["nr_anon_transparent_hugepages"] == 0
    assert m.ft.flags[head + 100] & TYPE_MASK == PageType.HWPOISON
    assert all(m.ft.flags[p] & TYPE_MASK == PageType.FREE
               for p in range(head, head + NR) if p != head + 100)
    invariants(m)


# ---------------------------------------------------------------------------
# fallback: no free 2 MiB block
# ---------------------------------------------------------------------------

def fragment_all(m) -> list[tuple[int, int]]:
    """A driver takes every frame it can (one by one), then gives back every other one:
    about half of memory free, none of it in a block of two pages. Returns its runs."""
    mi = m.meminfo()
    zs = [z for z in m.zones if z.managed_pages]
    count = sum(z.free_pages - z.wmark_min for z in zs) - 64
    runs = m.palloc(count=count)
    pfns = sorted(p for s, n in runs for p in range(s, s + n))
    m.pfree([(p, 1) for p in pfns[::2]])
    assert free(m) > mi.free // 3
    return [(p, 1) for p in pfns[1::2]]


def test_without_a_free_2mib_block_faults_fall_back_to_4k_pages(small, invariants):
    m = small
    pid = m.tasks.spawn("fb")
    a = m.tasks.mmap(pid, 16 * MIB, prot=RW)
    m.tasks.madvise(pid, a, 16 * MIB, "hugepage")
    held = fragment_all(m)
    assert no_free_block_of_order_9(m)
    e0, flt, free0 = thp_events(m), m.tasks.procs[pid].minflt, free(m)
    m.tasks.fill(pid, a, 16 * MIB, seed=1)
    assert grew(thp_events(m), e0) == {"thp_fault_fallback": THPS_16M}
    assert huge_pmds(m, pid) == {} and m.meminfo().anon_huge == 0
    assert m.tasks.procs[pid].minflt - flt == 4096, "a fault per 4 KiB page"
    assert free0 - free(m) == 4096 + 2 + THPS_16M   # 9 PTE tables, nothing deposited
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0
    invariants(m)
    # once the driver lets go, blocks merge and the next hugepage mapping gets THPs
    m.pfree(held)
    b = m.tasks.mmap(pid, 4 * MIB, prot=RW)
    m.tasks.madvise(pid, b, 4 * MIB, "hugepage")
    m.tasks.fill(pid, b, 4 * MIB, seed=2)
    assert len(huge_pmds(m, pid, b, b + 4 * MIB)) == len(regions(b, b + 4 * MIB)) >= 1
    invariants(m)


@pytest.mark.parametrize("slack,thp", [(511, False), (512, True)])
def test_a_thp_needs_a_free_2mib_block_that_leaves_the_zone_above_its_low_mark(
        small, invariants, slack, thp):
    """A driver takes everything above the min marks; then one aligned 2 MiB block of DMA32
    is given back and DMA32's free pages set to low + slack. __zone_watermark_ok for order 9:
    free - 511 > low, so 511 above low is one short (fallback, though the block is free)
    and 512 is enough. DMA, left at min + its protection, can give no block."""
    m = small
    pid = m.tasks.spawn("wm")
    a = m.tasks.mmap(pid, 16 * MIB, prot=RW)
    m.tasks.madvise(pid, a, 16 * MIB, "hugepage")
    zs = [z for z in m.zones if z.managed_pages]
    runs = m.palloc(count=sum(z.free_pages - z.wmark_min - z.lowmem_reserve[2] for z in zs))
    held = {p for s, n in runs for p in range(s, s + n)}
    dma32 = next(z for z in zs if z.name == "DMA32")
    blk = next(b for b in range(-(-dma32.start_pfn // NR) * NR, dma32.end_pfn - NR + 1, NR)
               if all(p in held for p in range(b, b + NR)))
    m.pfree([(blk, NR)])
    want = dma32.wmark_low + slack
    assert dma32.free_pages < want
    singles = sorted(p for p in held if dma32.start_pfn <= p < dma32.end_pfn
                     and not blk <= p < blk + NR)
    m.pfree([(p, 1) for p in singles[:want - dma32.free_pages]])
    for z in zs:
        z.drain_pcp()
    assert dma32.free_pages == want
    assert dma32.free_blocks_by_order()[9] >= 1
    e0 = thp_events(m)
    m.tasks.write(pid, R16[0], 5)
    if thp:
        assert grew(thp_events(m), e0) == {"thp_fault_alloc": 1,
                                           "nr_anon_transparent_hugepages": 1}
        assert huge_pmds(m, pid) == {R16[0]: blk}
    else:
        assert grew(thp_events(m), e0) == {"thp_fault_fallback": 1}
        assert huge_pmds(m, pid) == {}
    assert m.tasks.read(pid, R16[0]) == 5
    invariants(m)


# ---------------------------------------------------------------------------
# exit
# ---------------------------------------------------------------------------

def test_exit_gives_back_every_frame(small, invariants):
    m = small
    free0 = free(m)
    pid, a = thp_proc(m)
    m.tasks.munmap(pid, R16[0], MIB)                 # one split THP among whole ones
    assert free(m) < free0 - 4096 + 256
    m.tasks.exit(pid)
    assert free(m) == free0
    assert m.meminfo().anon_huge == 0 and ev(m)["nr_anon_transparent_hugepages"] == 0
    invariants(m)


# ---------------------------------------------------------------------------
# NUMA
# ---------------------------------------------------------------------------

def node_of(pfn: int) -> int:
    return next(n for n, (lo, hi) in DEFAULT_NODES.items() if lo <= pfn < hi)


def test_a_bind_policy_puts_the_thps_on_the_bound_node(default, invariants):
    m = default
    pid = m.tasks.spawn("bound")
    assert pid == FIRST_PID and m.tasks.procs[pid].cpu in m.config.nodes[0].cpus
    assert m.tasks.set_mempolicy(pid, "bind", "1") == "bind:1"
    a = m.tasks.mmap(pid, 16 * MIB, prot=RW)
    assert a == A16
    m.tasks.madvise(pid, a, 16 * MIB, "hugepage")
    m.tasks.fill(pid, a, 16 * MIB, seed=1)
    heads = huge_pmds(m, pid)
    assert sorted(heads) == R16
    assert {node_of(h) for h in heads.values()} == {1}
    assert {node_of(p) for p in pagemap_pfns(m, pid, a, 4096)} == {1}
    assert anon_huge_kb(m, 1) == 14336 and anon_huge_kb(m, 0) == 0
    view = {v.start: v for v in m.numa_maps(pid)}[a]
    assert view.nodes == ((1, 4096),) and view.anon == 4096
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0
    invariants(m)


def test_a_bind_policy_puts_the_deposited_page_tables_on_the_bound_node_too(default, invariants):
    m = default
    pid = m.tasks.spawn("bound")
    assert m.tasks.procs[pid].cpu in m.config.nodes[0].cpus
    m.tasks.set_mempolicy(pid, "bind", "1")
    a = m.tasks.mmap(pid, 16 * MIB, prot=RW)
    m.tasks.madvise(pid, a, 16 * MIB, "hugepage")
    hit0 = sum(dict(z.counters)["numa_hit"] for z in m.zoneinfo() if z.node == 0)
    m.tasks.fill(pid, a, 16 * MIB, seed=1)
    deposited = [pfn for name, va, pfn in m.pte_dump(pid).tables if "deposited" in name]
    assert len(deposited) == THPS_16M
    assert {node_of(p) for p in deposited} == {1}
    assert sum(dict(z.counters)["numa_hit"] for z in m.zoneinfo() if z.node == 0) == hit0, \
        "a process bound to node 1 allocated on node 0"
    invariants(m)


def test_interleave_places_each_thp_by_its_2mib_index(default, invariants):
    m = default
    pid = m.tasks.spawn("il")
    m.tasks.set_mempolicy(pid, "interleave", "0-1")
    a = m.tasks.mmap(pid, 16 * MIB, prot=RW)
    m.tasks.madvise(pid, a, 16 * MIB, "hugepage")
    m.tasks.fill(pid, a, 16 * MIB, seed=1)
    heads = huge_pmds(m, pid)
    assert sorted(heads) == R16
    assert {r: node_of(h) for r, h in heads.items()} == {r: (r >> 21) % 2 for r in R16}
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0
    invariants(m)
