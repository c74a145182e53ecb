"""A process's memory through the mount: status, statm, stat, smaps_rollup, pte, pagemap, kpagecount.

Every expected value is worked out by hand from the layout of a fresh process
(engine/vmm/mm.py, x86-64 Linux without randomisation) and Linux's definitions:

  text   0x400000-0x500000        1 MiB  r-xp  /usr/bin/NAME   256 pages
  data   0x500000-0x540000      256 KiB  rw-p  /usr/bin/NAME    64 pages
  stack  0x7ffffffde000-0x7ffffffff000 132 KiB  rw-p  [stack]    33 pages;
         exec writes its top page, 0x7fffffffe000: RSS 4 KiB, one minor fault
  mmap   top-down from 0x7ffff7fff000: `mmap 64M` -> 0x7ffff7fff000 - 64 MiB = 0x7ffff3fff000

Page tables of a fresh process (4 levels; VmPTE counts all but the PGD): the
stack's page lies in PUD 0x7f8000000000 (512 GiB), PMD 0x7fffc0000000 (1 GiB)
and PTE table 0x7fffffe00000 (2 MiB): PGD + 3 tables, VmPTE 12 kB; spawn takes
those 4 frames plus the stack page: MemFree - 20 kB.

Writing the low 32 MiB of the 64 MiB mapping, [0x7ffff3fff000, 0x7ffff5fff000):
its first page lies in the 2 MiB block 0x7ffff3e00000 and its last in
0x7ffff5e00000, so it needs (0x7ffff5e00000 - 0x7ffff3e00000) / 2 MiB + 1 = 17 new
PTE tables; both ends are inside the stack's PMD (0x7fffc0000000 <= 0x7ffff3fff000)
and PUD. Tables: 1 PUD + 1 PMD + 18 PTE = 20 -> VmPTE 80 kB; MemFree falls by
8192 data pages + 17 tables = 8209 pages = 32836 kB.
"""
import errno
import os

import pytest

PAGE = 4096
KB = 1024
MMAP_BASE = 0x7FFFF7FFF000
EXEC_PAGE = 0x7FFFFFFFE000
A64 = MMAP_BASE - (64 << 20)                    # 0x7ffff3fff000
HALF = 32 << 20
A1 = MMAP_BASE - (1 << 20)                      # a 1 MiB mapping in a fresh process: 0x7ffff7eff000

TEXT_KB, DATA_KB, STACK_KB = 1024, 256, 132

PM_PRESENT = 1 << 63
PM_EXCLUSIVE = 1 << 56
PM_SOFT_DIRTY = 1 << 55
PM_PFN = (1 << 55) - 1
PTE_PFN = 0x000F_FFFF_FFFF_F000                 # x86-64 PTE address bits 12-51

KPF_MMAP, KPF_ANON, KPF_ZERO_PAGE, KPF_PGTABLE = 1 << 11, 1 << 12, 1 << 24, 1 << 26


def half_written_web(m, name="web"):
    """spawn NAME, mmap 64M, fill its low 32 MiB: the setup of the issue."""
    pid = m.spawn(name)
    assert m.mmap(pid, "64M") == A64
    m.pctl(pid, f"fill {A64:#x} 32M seed=3")
    return pid


def test_fresh_process_has_one_stack_page_and_three_tables(machine):
    free0 = machine.meminfo()["MemFree"]
    pid = machine.spawn("fresh")
    st = machine.status(pid)
    assert (st["VmRSS"], st["RssAnon"], st["RssFile"], st["RssShmem"]) == (4, 4, 0, 0)
    assert st["VmPTE"] == 12
    assert st["VmSize"] == TEXT_KB + DATA_KB + STACK_KB
    assert machine.meminfo()["MemFree"] == free0 - 20
    tables, entries = machine.pte_dump(pid)
    assert [level for level, _ in tables] == ["PGD", "PUD", "PMD", "PTE"]
    assert list(entries) == [EXEC_PAGE]


def test_rss_of_64m_mapping_with_half_written_in_every_file(machine):
    pid = machine.spawn("web")
    free0 = machine.meminfo()["MemFree"]
    assert machine.mmap(pid, "64M") == A64
    assert machine.meminfo()["MemFree"] == free0, "mmap only reserves address space"
    assert machine.status(pid)["VmRSS"] == 4
    machine.pctl(pid, f"fill {A64:#x} 32M seed=3")

    rss_kb = 32 * 1024 + 4
    st = machine.status(pid)
    assert st["VmRSS"] == rss_kb and st["RssAnon"] == rss_kb
    assert st["RssFile"] == 0 and st["RssShmem"] == 0 and st["VmSwap"] == 0
    assert st["VmHWM"] == rss_kb
    assert st["VmSize"] == TEXT_KB + DATA_KB + 65536 + STACK_KB == 66948
    assert st["VmData"] == DATA_KB + 65536, "private writable non-stack VMAs"
    assert st["VmStk"] == STACK_KB and st["VmExe"] == TEXT_KB and st["VmLib"] == 0

    # statm: size resident shared text lib data dt, in pages
    assert machine.read(f"{pid}/statm") == f"{66948 // 4} {rss_kb // 4} 0 256 0 {64 + 16384 + 33} 0\n"

    ro = machine.kb(f"{pid}/smaps_rollup")
    assert ro["Rss"] == ro["Pss"] == ro["Private_Dirty"] == ro["Anonymous"] == rss_kb
    assert ro["Shared_Clean"] == ro["Shared_Dirty"] == ro["Private_Clean"] == 0
    assert ro["Swap"] == 0
    header = machine.read(f"{pid}/smaps_rollup").splitlines()[0]
    assert header == "00400000-7ffffffff000 ---p 00000000 00:00 0".ljust(73) + "[rollup]"

    # stat: field 23 vsize in bytes, field 24 rss in pages, field 10 minflt
    # (one fault per written page plus exec's stack page)
    stat = machine.read(f"{pid}/stat")
    fields = stat[stat.rindex(")") + 2:].split()
    assert len(fields) == 50, "fields 3..52"
    assert int(fields[23 - 3]) == 66948 * KB
    assert int(fields[24 - 3]) == rss_kb // 4
    assert int(fields[10 - 3]) == 8192 + 1

    assert machine.meminfo()["MemFree"] == free0 - (8192 + 17) * 4


def test_vmpte_counts_the_tables_in_the_pte_dump(machine):
    pid = half_written_web(machine)
    tables, _ = machine.pte_dump(pid)
    levels = [level for level, _ in tables]
    assert levels.count("PGD") == 1 and levels.count("PUD") == 1 and levels.count("PMD") == 1
    assert levels.count("PTE") == 17 + 1
    assert machine.status(pid)["VmPTE"] == 4 * (len(tables) - 1) == 80
    flags = {pfn: machine.u64s("kpageflags", pfn)[0] for _, pfn in tables}
    assert all(f & KPF_PGTABLE for f in flags.values()), {hex(p): hex(f) for p, f in flags.items()}
    assert machine.kpagecount(tables[0][1]) == [0], "a table is not mapped by a PTE"


def test_pagemap_agrees_with_the_pte_dump_and_kpagecount(machine):
    pid = half_written_web(machine)
    _, entries = machine.pte_dump(pid)
    present = {va: e for va, e in entries.items() if e[1] == "present"}
    expected_vas = set(range(A64, A64 + HALF, PAGE)) | {EXEC_PAGE}
    assert set(present) == expected_vas
    pfns = [pfn for _, _, pfn in present.values()]
    assert len(set(pfns)) == len(pfns), "every page has its own frame"

    counts = machine.kpagecount(0, max(pfns) + 1)
    for va, (raw, _, pfn) in present.items():
        assert raw & 1 and (raw & PTE_PFN) >> 12 == pfn, f"{va:#x}: raw {raw:#x} vs pfn {pfn:#x}"
        assert counts[pfn] == 1, f"{va:#x}: pfn {pfn:#x} mapcount {counts[pfn]}"
    for va in (A64, EXEC_PAGE):
        flags = machine.u64s("kpageflags", present[va][2])[0]
        assert flags & KPF_ANON and flags & KPF_MMAP, f"{va:#x}: {flags:#x}"

    stack = machine.pagemap(pid, EXEC_PAGE)[0]
    assert stack == PM_PRESENT | PM_EXCLUSIVE | PM_SOFT_DIRTY | present[EXEC_PAGE][2]
    pm = machine.pagemap(pid, A64, 16384)
    for i, e in enumerate(pm):
        va = A64 + i * PAGE
        if va < A64 + HALF:
            pfn = present[va][2]
            assert e == PM_PRESENT | PM_EXCLUSIVE | PM_SOFT_DIRTY | pfn, f"{va:#x}: {e:#x}"
        else:
            # inside a new (soft-dirty) VMA but never touched: bit 55 only
            assert e == PM_SOFT_DIRTY, f"{va:#x}: {e:#x}"
    # holes between VMAs read as 0
    assert machine.pagemap(pid, A64 - PAGE) == [0]
    assert machine.pagemap(pid, 0x540000) == [0]
    # text and data never touched: in a VMA, nothing present
    assert machine.pagemap(pid, 0x400000) == [PM_SOFT_DIRTY]


def test_pagemap_rejects_unaligned_reads(machine):
    pid = machine.spawn("pmalign")
    fd = os.open(machine / f"{pid}/pagemap", os.O_RDONLY)
    try:
        try:
            os.pread(fd, 8, EXEC_PAGE // PAGE * 8 + 3)
        except OSError as e:
            assert e.errno == errno.EINVAL
        else:
            raise AssertionError("an unaligned pagemap read succeeded")
    finally:
        os.close(fd)


def test_fork_shares_every_page_and_a_child_write_copies_one(machine):
    parent = half_written_web(machine)
    mi0 = machine.meminfo()
    child = int(machine.pctl(parent, "fork"))
    assert child in machine.pids()
    mi1 = machine.meminfo()
    # the child's PGD + copies of the parent's PUD, PMD and 18 PTE tables
    assert mi0["MemFree"] - mi1["MemFree"] == 21 * 4
    # dup_mmap charges the accountable (private writable) VMAs: data, the mapping, the stack
    assert mi1["Committed_AS"] - mi0["Committed_AS"] == DATA_KB + 65536 + STACK_KB
    cst = machine.status(child)
    assert cst["PPid"] == parent
    assert cst["VmRSS"] == cst["RssAnon"] == 32772 and cst["VmPTE"] == 80

    _, entries = machine.pte_dump(parent)
    vas = sorted(entries)
    pfns = {va: entries[va][2] for va in vas}
    counts = machine.kpagecount(0, max(pfns.values()) + 1)
    assert all(counts[pfn] == 2 for pfn in pfns.values())
    ppm = machine.pagemap(parent, A64, HALF // PAGE)
    cpm = machine.pagemap(child, A64, HALF // PAGE)
    for i in range(HALF // PAGE):
        pfn = pfns[A64 + i * PAGE]
        assert ppm[i] & PM_PFN == cpm[i] & PM_PFN == pfn
        assert ppm[i] & PM_PRESENT and cpm[i] & PM_PRESENT
        assert not ppm[i] & PM_EXCLUSIVE and not cpm[i] & PM_EXCLUSIVE, "mapped twice"
    ro = machine.kb(f"{parent}/smaps_rollup")
    assert ro["Rss"] == ro["Shared_Dirty"] == 32772 and ro["Private_Dirty"] == 0
    assert ro["Pss"] == 32772 // 2

    machine.pctl(child, f"write {A64:#x} 77")
    mi2 = machine.meminfo()
    assert mi1["MemFree"] - mi2["MemFree"] == 4, "one new frame; the table was copied at fork"
    assert machine.status(child)["VmPTE"] == 80

    assert machine.pctl(child, f"read {A64:#x}") == "77"
    assert machine.pctl(parent, f"verify {A64:#x} 32M seed=3") == "0"
    assert machine.pctl(child, f"verify {A64:#x} 32M seed=3") == "1"
    assert machine.pctl(child, f"verify {A64 + PAGE:#x} {HALF - PAGE} seed=3") == "0"

    old = pfns[A64]
    p_entry, c_entry = machine.pagemap(parent, A64)[0], machine.pagemap(child, A64)[0]
    new = c_entry & PM_PFN
    assert p_entry & PM_PFN == old, "the parent keeps its frame"
    assert new != old and new not in pfns.values()
    assert p_entry & PM_EXCLUSIVE and c_entry & PM_EXCLUSIVE, "each page is mapped once again"
    assert machine.kpagecount(old) == [1] and machine.kpagecount(new) == [1]
    assert machine.pte_dump(child)[1][A64][2] == new
    assert machine.kpagecount(pfns[A64 + PAGE]) == [2], "the other pages are still shared"
    ro = machine.kb(f"{parent}/smaps_rollup")
    assert ro["Private_Dirty"] == 4 and ro["Shared_Dirty"] == 32768
    assert ro["Pss"] == 32768 // 2 + 4

    # a write in the parent copies too, and the child keeps the old value
    machine.pctl(parent, f"write {A64 + PAGE:#x} 88")
    assert machine.meminfo()["MemFree"] == mi2["MemFree"] - 4
    assert machine.pctl(parent, f"read {A64 + PAGE:#x}") == "88"
    assert machine.pctl(child, f"verify {A64 + PAGE:#x} 4K seed=3") == "0"


def test_munmap_of_the_middle_leaves_two_pieces_with_a_hole(machine):
    pid = machine.spawn("mu")
    assert machine.mmap(pid, "1M") == A1
    machine.pctl(pid, f"fill {A1:#x} 1M seed=5")
    free0 = machine.meminfo()["MemFree"]
    machine.pctl(pid, f"munmap {A1 + (256 << 10):#x} 64K")
    assert machine.meminfo()["MemFree"] == free0 + 64, "16 frames back; the PTE table still maps others"
    lines = machine.read(f"{pid}/maps").splitlines()
    assert lines[2:] == [
        "7ffff7eff000-7ffff7f3f000 rw-p 00000000 00:00 0 ",
        "7ffff7f4f000-7ffff7fff000 rw-p 00000000 00:00 0 ",
        "7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0".ljust(73) + "[stack]",
    ]
    assert machine.status(pid)["VmRSS"] == 4 + 1024 - 64
    assert machine.pagemap(pid, A1 + (256 << 10), 16) == [0] * 16, "the hole is outside any VMA"
    assert machine.pctl(pid, f"verify {A1:#x} 256K seed=5") == "0"
    assert machine.pctl(pid, f"verify {A1 + (320 << 10):#x} 704K seed=5") == "0"
    # mapping the hole again merges the three into one VMA, as Linux's vma_merge does
    assert machine.mmap(pid, f"64K addr={A1 + (256 << 10):#x}") == A1 + (256 << 10)
    assert machine.read(f"{pid}/maps").splitlines()[2] == "7ffff7eff000-7ffff7fff000 rw-p 00000000 00:00 0 "


def test_mprotect_of_the_middle_gives_three_lines_for_one_mapping(machine):
    pid = machine.spawn("mp")
    assert machine.mmap(pid, "1M") == A1
    machine.pctl(pid, f"mprotect {A1 + (256 << 10):#x} 64K r")
    lines = machine.read(f"{pid}/maps").splitlines()
    assert lines[2:5] == [
        "7ffff7eff000-7ffff7f3f000 rw-p 00000000 00:00 0 ",
        "7ffff7f3f000-7ffff7f4f000 r--p 00000000 00:00 0 ",
        "7ffff7f4f000-7ffff7fff000 rw-p 00000000 00:00 0 ",
    ]
    sizes = [line.split()[1] for line in machine.read(f"{pid}/smaps").splitlines()
             if line.startswith("Size:")]
    assert sizes == ["1024", "256", "256", "64", "704", "132"]
    machine.pctl(pid, f"mprotect {A1 + (256 << 10):#x} 64K rw")
    assert machine.read(f"{pid}/maps").splitlines()[2] == "7ffff7eff000-7ffff7fff000 rw-p 00000000 00:00 0 "


def test_madvise_dontneed_gives_frames_back_and_reads_zero(machine):
    pid = machine.spawn("md")
    assert machine.mmap(pid, "1M") == A1
    free0 = machine.meminfo()["MemFree"]
    machine.pctl(pid, f"fill {A1:#x} 256K seed=9")
    free1 = machine.meminfo()["MemFree"]
    assert free0 - free1 == 64 * 4 + 4, "64 pages and the PTE table for 0x7ffff7e00000"
    assert machine.status(pid)["VmRSS"] == 4 + 256
    machine.pctl(pid, f"madvise {A1:#x} 256K dontneed")
    assert machine.meminfo()["MemFree"] == free1 + 256, "the table stays, the 64 frames go back"
    assert machine.status(pid)["VmRSS"] == 4
    assert machine.pctl(pid, f"read {A1:#x}") == "0"
    assert machine.pctl(pid, f"read {A1 + (252 << 10):#x}") == "0"
    assert machine.pctl(pid, f"verify {A1:#x} 256K seed=9") == "64"
    # reading maps the shared zero page: no frame, no RSS
    assert machine.meminfo()["MemFree"] == free1 + 256
    assert machine.status(pid)["VmRSS"] == 4
    pm = machine.pagemap(pid, A1)[0]
    assert pm & PM_PRESENT and not pm & PM_EXCLUSIVE
    assert machine.u64s("kpageflags", pm & PM_PFN)[0] & KPF_ZERO_PAGE
    # a write takes a fresh frame again
    machine.pctl(pid, f"write {A1:#x} 5")
    assert machine.meminfo()["MemFree"] == free1 + 252
    assert machine.pctl(pid, f"read {A1:#x}") == "5"


def test_madvise_free_marks_pages_lazyfree_without_freeing_them(machine):
    pid = machine.spawn("mf")
    assert machine.mmap(pid, "1M") == A1
    machine.pctl(pid, f"fill {A1:#x} 256K seed=2")
    free0 = machine.meminfo()["MemFree"]
    machine.pctl(pid, f"madvise {A1:#x} 256K free")
    assert machine.kb(f"{pid}/smaps_rollup")["LazyFree"] == 256
    assert machine.meminfo()["MemFree"] == free0
    assert machine.status(pid)["VmRSS"] == 4 + 256


# oom_score (Linux proc_oom_score and oom_badness), for the half-written process:
#   badness = rss 8193 + swap entries 0 + page-table pages 20 = 8213, plus
#             oom_score_adj * (totalpages / 1000), totalpages = RAM 13825 + swap 32767 = 46592,
#             so adj * 46 (integer division first);
#   oom_score = (1000 + badness * 1000 / totalpages) * 2 / 3, C long division (truncates toward 0).
#   adj 0:     8213000 / 46592 = 176;              (1176 * 2) / 3 = 784
#   adj 500:   8213 + 23000 = 31213 -> 669;        (1669 * 2) / 3 = 1112
#   adj 1000:  8213 + 46000 = 54213 -> 1163;       (2163 * 2) / 3 = 1442
#   adj -1000: never killed: 0
@pytest.mark.parametrize("adj,score", [(0, 784), (500, 1112), (1000, 1442), (-1000, 0)])
def test_oom_score_follows_linux_badness(machine, adj, score):
    pid = half_written_web(machine)
    machine.write(f"{pid}/oom_score_adj", f"{adj}\n")
    assert machine.read(f"{pid}/oom_score_adj") == f"{adj}\n"
    assert machine.read(f"{pid}/oom_score") == f"{score}\n"


def test_oom_score_of_a_negative_badness_truncates_toward_zero(machine):
    # adj -500: 8213 - 23000 = -14787; -14787000 / 46592 = -317 in C; (683 * 2) / 3 = 455
    pid = half_written_web(machine)
    machine.write(f"{pid}/oom_score_adj", "-500\n")
    assert machine.read(f"{pid}/oom_score") == "455\n"
