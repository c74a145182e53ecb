"""Transparent huge pages through the mount, on the small machine (paused, one node):
kernel/mm/transparent_hugepage/{enabled,hpage_pmd_size}, the `madvise ADDR LEN hugepage`
verb of <pid>/ctl, and what shows the huge pages: meminfo and node meminfo AnonHugePages,
vmstat thp_* and nr_anon_transparent_hugepages, <pid>/smaps (AnonHugePages, THPeligible,
VmFlags hg/nh), smaps_rollup, status VmPTE, pagemap and kpageflags.

Figures worked out by hand:

  8 MiB       a fresh process's first `mmap 8M` is [0x7ffff77ff000, 0x7ffff7fff000)
              (0x7ffff7fff000 is mmap's top-down start). The 2 MiB-aligned regions wholly
              inside: 0x7ffff7800000, 0x7ffff7a00000, 0x7ffff7c00000 (0x7ffff7e00000 +
              2 MiB passes the end): 3 THPs, 3 x 2048 = 6144 kB AnonHugePages. The other
              512 pages (1 at 0x7ffff77ff000, 511 from 0x7ffff7e00000) are 4 KiB pages
              under 2 new PTE tables; with a deposited table per THP VmPTE grows by
              (2 + 3) x 4 = 20 kB.
  kpageflags  bit 22 THP on all 3 x 512 frames; bit 15 COMPOUND_HEAD on each THP's first
              frame (512-aligned), bit 16 COMPOUND_TAIL on the 511 others.
  split       munmap of 1 MiB inside one THP splits it (thp_split_pmd +1): AnonHugePages
              drops 2048 kB though only 1024 kB are unmapped.
"""
from __future__ import annotations

import errno
import os
import stat

import pytest

T = "kernel/mm/transparent_hugepage"
PAGE = 4096
MIB = 1 << 20
HPAGE = 2 * MIB
A8 = 0x7FFFF77FF000                   # the first mmap 8M of a fresh process
END8 = A8 + 8 * MIB
R8 = [0x7FFFF7800000, 0x7FFFF7A00000, 0x7FFFF7C00000]
PM_PRESENT = 1 << 63
PM_PFN = (1 << 55) - 1
KPF_ANON, KPF_HEAD, KPF_TAIL, KPF_THP = 1 << 12, 1 << 15, 1 << 16, 1 << 22


def regions(start: int, end: int) -> list[int]:
    first = (start + HPAGE - 1) // HPAGE * HPAGE
    return list(range(first, end - HPAGE + 1, HPAGE))


assert regions(A8, END8) == R8


def vmstat(m) -> dict[str, int]:
    return {k: int(v) for k, v in (ln.split() for ln in m.read("vmstat").splitlines())}


def smaps(m, pid) -> dict[int, dict[str, object]]:
    """VMA start -> its smaps fields (numbers; VmFlags as a list of words)."""
    out: dict[int, dict[str, object]] = {}
    cur = None
    for line in m.read(f"{pid}/smaps").splitlines():
        first = line.split(" ", 1)[0]
        if "-" in first and ":" not in first:
            cur = out.setdefault(int(first.split("-")[0], 16), {})
            continue
        key, _, rest = line.partition(":")
        if key == "VmFlags":
            cur[key] = rest.split()
        else:
            cur[key] = int(rest.split()[0])
    return out


def node_meminfo(m, node=0) -> dict[str, int]:
    out = {}
    for line in m.read(f"devices/system/node/node{node}/meminfo").splitlines():
        words = line.split()                  # Node 0 Key: N [kB]
        out[words[2].rstrip(":")] = int(words[3])
    return out


def pfns(m, pid, va, pages) -> list[int]:
    ents = m.pagemap(pid, va, pages)
    assert all(e & PM_PRESENT for e in ents), f"{va:#x}+{pages} pages: not all present"
    return [e & PM_PFN for e in ents]


def kflags(m, pfn_list) -> list[int]:
    return [m.u64s("kpageflags", p)[0] for p in pfn_list]


@pytest.fixture
def thp(machine):
    """The module's paused small machine; the THP mode goes back to madvise after each test."""
    try:
        yield machine
    finally:
        machine.write(f"{T}/enabled", "madvise\n")


def spawn_8m(m, advice: str | None = "hugepage", name="thp") -> int:
    pid = m.spawn(name)
    assert m.mmap(pid, "8M") == A8
    if advice:
        assert m.pctl(pid, f"madvise {A8:#x} 8M {advice}") == ""
    return pid


# ---------------------------------------------------------------------------
# the files
# ---------------------------------------------------------------------------

def test_the_directory_and_its_modes(thp):
    m = thp
    assert sorted(os.listdir(m / T)) == ["enabled", "hpage_pmd_size"]
    assert stat.S_IMODE(os.stat(m / f"{T}/enabled").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(m / f"{T}/hpage_pmd_size").st_mode) == 0o444


def test_enabled_reads_the_three_modes_with_madvise_in_brackets(thp):
    assert thp.read(f"{T}/enabled") == "always [madvise] never\n"


def test_hpage_pmd_size_is_2_mib_in_bytes(thp):
    assert thp.read(f"{T}/hpage_pmd_size") == "2097152\n"
    assert thp.write_errno(f"{T}/hpage_pmd_size", "4096\n") == errno.EACCES
    assert thp.read(f"{T}/hpage_pmd_size") == "2097152\n"


@pytest.mark.parametrize("mode,shown", [
    ("always", "[always] madvise never\n"),
    ("never", "always madvise [never]\n"),
    ("madvise", "always [madvise] never\n"),
])
def test_each_mode_written_is_read_back(thp, mode, shown):
    m = thp
    assert m.write_errno(f"{T}/enabled", mode + "\n") == 0
    assert m.read(f"{T}/enabled") == shown
    # echo -n works as well
    assert m.write_errno(f"{T}/enabled", mode) == 0
    assert m.read(f"{T}/enabled") == shown


@pytest.mark.parametrize("bad", ["sometimes\n", "[always]\n", "always never\n", "ALWAYS\n",
                                 "\n", "defer\n", "1\n"])
def test_a_bad_mode_is_einval_and_changes_nothing(thp, bad):
    m = thp
    m.write(f"{T}/enabled", "never\n")
    assert m.write_errno(f"{T}/enabled", bad) == errno.EINVAL
    assert m.read(f"{T}/enabled") == "always madvise [never]\n"
    assert "transparent_hugepage/enabled" in m.kmsg_tail(1)[0]


# ---------------------------------------------------------------------------
# Done means: an 8 MiB mapping with madvise hugepage, filled
# ---------------------------------------------------------------------------

def test_madvise_hugepage_then_fill_shows_three_thps_everywhere(thp):
    m = thp
    mi0, ev0, nmi0 = m.meminfo(), vmstat(m), node_meminfo(m)
    pid = spawn_8m(m)
    pte0 = m.status(pid)["VmPTE"]
    s = smaps(m, pid)[A8]
    assert s["THPeligible"] == 1 and "hg" in s["VmFlags"]
    assert s["AnonHugePages"] == 0

    assert m.pctl(pid, f"fill {A8:#x} 8M seed=3") == ""

    mi, ev = m.meminfo(), vmstat(m)
    assert mi["AnonHugePages"] - mi0["AnonHugePages"] == 3 * 2048 == 6144
    assert node_meminfo(m)["AnonHugePages"] - nmi0["AnonHugePages"] == 6144
    assert ev["thp_fault_alloc"] - ev0["thp_fault_alloc"] == 3
    assert ev["thp_fault_fallback"] == ev0["thp_fault_fallback"]
    assert ev["nr_anon_transparent_hugepages"] - ev0["nr_anon_transparent_hugepages"] == 3
    assert ev["thp_split_pmd"] == ev0["thp_split_pmd"]
    s = smaps(m, pid)[A8]
    assert (s["Size"], s["Rss"], s["Anonymous"], s["AnonHugePages"]) == (8192, 8192, 8192, 6144)
    assert s["THPeligible"] == 1 and "hg" in s["VmFlags"]
    assert m.kb(f"{pid}/smaps_rollup")["AnonHugePages"] == 6144
    st = m.status(pid)
    assert st["RssAnon"] == 8192 + 4                   # and the stack page
    assert st["VmPTE"] - pte0 == (2 + 3) * 4

    # pagemap -> kpageflags: one head per 512 frames, the head 512-aligned
    got = pfns(m, pid, A8, 2048)
    flags = kflags(m, got)
    by_va = dict(zip(range(A8, END8, PAGE), zip(got, flags)))
    for r in R8:
        head, hflags = by_va[r]
        assert head % 512 == 0, f"THP at {r:#x}: head pfn {head:#x}"
        assert hflags & KPF_THP and hflags & KPF_HEAD and not hflags & KPF_TAIL
        for k in range(1, 512):
            pfn, f = by_va[r + k * PAGE]
            assert pfn == head + k
            assert f & KPF_THP and f & KPF_TAIL and not f & KPF_HEAD, f"{r + k * PAGE:#x}"
    assert sum(1 for f in flags if f & KPF_THP) == 3 * 512
    assert sum(1 for f in flags if f & KPF_HEAD) == 3
    assert sum(1 for f in flags if f & KPF_TAIL) == 3 * 511
    # the 4 KiB pages at both ends are ordinary anonymous pages
    for va in (A8, END8 - PAGE):
        assert by_va[va][1] & KPF_ANON and not by_va[va][1] & (KPF_THP | KPF_HEAD | KPF_TAIL)
    assert m.kpagecount(by_va[R8[0]][0], 512) == [1] * 512
    assert m.pctl(pid, f"verify {A8:#x} 8M seed=3") == "0"


def test_munmap_of_part_of_a_thp_splits_it_and_anon_huge_pages_drops_2048_kb(thp):
    m = thp
    pid = spawn_8m(m)
    m.pctl(pid, f"fill {A8:#x} 8M seed=4")
    mi0, ev0 = m.meminfo(), vmstat(m)
    free0 = mi0["MemFree"]

    assert m.pctl(pid, f"munmap {R8[0]:#x} 1M") == ""        # half of the first THP

    mi, ev = m.meminfo(), vmstat(m)
    assert ev["thp_split_pmd"] - ev0["thp_split_pmd"] == 1
    assert ev["thp_split_page"] - ev0["thp_split_page"] == 1
    assert ev["nr_anon_transparent_hugepages"] - ev0["nr_anon_transparent_hugepages"] == -1
    assert mi0["AnonHugePages"] - mi["AnonHugePages"] == 2048
    assert mi["MemFree"] - free0 == 1024                      # only the unmapped half
    assert sum(v["AnonHugePages"] for v in smaps(m, pid).values()) == 2 * 2048
    # the kept half: the same frames, no longer THP
    kept = pfns(m, pid, R8[0] + MIB, 256)
    assert kept == list(range(kept[0], kept[0] + 256)) and kept[0] % 512 == 256
    assert not any(f & (KPF_THP | KPF_HEAD | KPF_TAIL) for f in kflags(m, kept))

    # across the two others: both split, 4096 kB less
    assert m.pctl(pid, f"munmap {R8[1] + MIB:#x} 2M") == ""
    ev2, mi2 = vmstat(m), m.meminfo()
    assert ev2["thp_split_pmd"] - ev["thp_split_pmd"] == 2
    assert mi["AnonHugePages"] - mi2["AnonHugePages"] == 4096
    assert mi2["AnonHugePages"] == mi0["AnonHugePages"] - 3 * 2048
    for lo, hi in ((A8, R8[0]), (R8[0] + MIB, R8[1] + MIB), (R8[2] + MIB, END8)):
        assert m.pctl(pid, f"verify {lo:#x} {hi - lo} seed=4") == "0"


def test_munmap_of_a_whole_thp_frees_2048_kb_and_splits_nothing(thp):
    m = thp
    pid = spawn_8m(m)
    m.pctl(pid, f"fill {A8:#x} 8M seed=5")
    mi0, ev0 = m.meminfo(), vmstat(m)
    assert m.pctl(pid, f"munmap {R8[1]:#x} 2M") == ""
    mi, ev = m.meminfo(), vmstat(m)
    assert ev["thp_split_pmd"] == ev0["thp_split_pmd"]
    assert mi0["AnonHugePages"] - mi["AnonHugePages"] == 2048
    assert mi["MemFree"] - mi0["MemFree"] == 2048 + 4         # and the deposited table


def test_without_madvise_the_mapping_gets_no_thp_and_thpeligible_0(thp):
    m = thp
    ev0, mi0 = vmstat(m), m.meminfo()
    pid = spawn_8m(m, advice=None)
    m.pctl(pid, f"fill {A8:#x} 8M seed=1")
    s = smaps(m, pid)[A8]
    assert s["THPeligible"] == 0 and "hg" not in s["VmFlags"] and s["AnonHugePages"] == 0
    assert vmstat(m)["thp_fault_alloc"] == ev0["thp_fault_alloc"]
    assert m.meminfo()["AnonHugePages"] == mi0["AnonHugePages"]


def test_mode_always_written_to_the_file_needs_no_madvise(thp):
    m = thp
    m.write(f"{T}/enabled", "always\n")
    ev0 = vmstat(m)
    pid = spawn_8m(m, advice=None)
    assert smaps(m, pid)[A8]["THPeligible"] == 1
    m.pctl(pid, f"fill {A8:#x} 8M seed=1")
    assert vmstat(m)["thp_fault_alloc"] - ev0["thp_fault_alloc"] == 3
    assert smaps(m, pid)[A8]["AnonHugePages"] == 6144


def test_mode_never_written_to_the_file_overrides_madvise(thp):
    m = thp
    m.write(f"{T}/enabled", "never\n")
    ev0 = vmstat(m)
    pid = spawn_8m(m)
    s = smaps(m, pid)[A8]
    assert s["THPeligible"] == 0 and "hg" in s["VmFlags"]
    m.pctl(pid, f"fill {A8:#x} 8M seed=1")
    assert vmstat(m)["thp_fault_alloc"] == ev0["thp_fault_alloc"]
    assert smaps(m, pid)[A8]["AnonHugePages"] == 0


def test_nohugepage_through_the_ctl_shows_nh_and_overrides_always(thp):
    m = thp
    m.write(f"{T}/enabled", "always\n")
    ev0 = vmstat(m)
    pid = spawn_8m(m, advice="nohugepage")
    s = smaps(m, pid)[A8]
    assert s["THPeligible"] == 0 and "nh" in s["VmFlags"] and "hg" not in s["VmFlags"]
    m.pctl(pid, f"fill {A8:#x} 8M seed=1")
    assert vmstat(m)["thp_fault_alloc"] == ev0["thp_fault_alloc"]


def test_a_bad_advice_is_einval(thp):
    m = thp
    pid = spawn_8m(m, advice=None)
    code, why = m.rejected(f"madvise {A8:#x} 8M hugepages", f"{pid}/ctl")
    assert code == errno.EINVAL and "unknown advice" in why
    assert "hg" not in smaps(m, pid)[A8]["VmFlags"]
