"""The hugetlb pool through the mount, on the small machine (one node, 64 MiB).

Files: sys/vm/nr_hugepages and nr_overcommit_hugepages (as /proc/sys/vm),
kernel/mm/hugepages/hugepages-2048kB/ (as /sys/kernel/mm/hugepages) and
devices/system/node/node0/hugepages/hugepages-2048kB/. Figures worked out by hand:

  pages       a pool page is 2048 kB (512 frames): 8 pages are 16384 kB off MemFree, and
              meminfo reads HugePages_Total 8, Free 8, Rsvd 0, Surp 0, Hugetlb 16384 kB;
              MemTotal stays 55300 kB; vmstat nr_hugetlb 8 x 512 = 4096 pages.
  commit      CommitLimit = (13825 - 4096) x 50 / 100 + 32767 swap pages = 4864 + 32767 =
              37631 pages = 150524 kB (158716 kB without the pool: 6912 + 32767 = 39679).
  the most    the small machine has 26 free 2 MiB blocks (DMA 7, DMA32 19, all above their
              low marks when taken): asking 100 gives 26, 53248 kB, one failed request.
  bad writes  -1, text, 2^63 and beyond: EINVAL, the reason in kmsg, nothing changes.
"""
from __future__ import annotations

import errno
import os
import stat

import pytest

H = "kernel/mm/hugepages/hugepages-2048kB"
N0 = "devices/system/node/node0/hugepages/hugepages-2048kB"
MEMTOTAL_KB = 55300
KPF_BUDDY, KPF_LRU = 1 << 10, 1 << 5
KPF_HEAD, KPF_TAIL, KPF_HUGE = 1 << 15, 1 << 16, 1 << 17
SMALL_PFNS = 0x4000                 # frames of the small machine (64 MiB)


def vmstat(m, rel="vmstat") -> dict[str, int]:
    return {k: int(v) for k, v in (ln.split() for ln in m.read(rel).splitlines())}


def number(m, rel) -> int:
    text = m.read(rel)
    assert text.endswith("\n") and text[:-1].isdigit(), f"{rel}: {text!r}"
    return int(text)


@pytest.fixture
def pool(machine):
    """The module's paused small machine; its pool is emptied after each test."""
    try:
        yield machine
    finally:
        machine.write("sys/vm/nr_hugepages", "0\n")
        machine.write("sys/vm/nr_overcommit_hugepages", "0\n")


def test_the_files_and_their_modes(pool):
    m = pool
    assert set(os.listdir(m / "kernel/mm/hugepages")) == {"hugepages-2048kB"}
    assert set(os.listdir(m / H)) == {"nr_hugepages", "free_hugepages", "resv_hugepages",
                                      "surplus_hugepages", "nr_overcommit_hugepages"}
    assert set(os.listdir(m / N0)) == {"nr_hugepages", "free_hugepages", "surplus_hugepages"}
    modes = {"sys/vm/nr_hugepages": 0o644, "sys/vm/nr_overcommit_hugepages": 0o644,
             f"{H}/nr_hugepages": 0o644, f"{H}/nr_overcommit_hugepages": 0o644,
             f"{H}/free_hugepages": 0o444, f"{H}/resv_hugepages": 0o444,
             f"{H}/surplus_hugepages": 0o444, f"{N0}/nr_hugepages": 0o644,
             f"{N0}/free_hugepages": 0o444, f"{N0}/surplus_hugepages": 0o444}
    for rel, mode in modes.items():
        assert stat.S_IMODE(os.stat(m / rel).st_mode) == mode, rel
        assert number(m, rel) == 0, rel
    assert m.write_errno(f"{H}/free_hugepages", "1\n") == errno.EACCES


def test_echo_8_to_nr_hugepages_then_meminfo_exact(pool):
    m = pool
    before = m.meminfo()
    ev = vmstat(m)
    assert (before["HugePages_Total"], before["Hugetlb"], before["CommitLimit"]) == (0, 0, 158716)
    m.write("sys/vm/nr_hugepages", "8\n")           # echo 8 > sys/vm/nr_hugepages
    after = m.meminfo()
    assert after["MemTotal"] == MEMTOTAL_KB
    assert before["MemFree"] - after["MemFree"] == 8 * 2048 == 16384
    assert (after["HugePages_Total"], after["HugePages_Free"], after["HugePages_Rsvd"],
            after["HugePages_Surp"]) == (8, 8, 0, 0)
    assert (after["Hugepagesize"], after["Hugetlb"]) == (2048, 16384)
    assert after["CommitLimit"] == 150524
    lines = m.read("meminfo").splitlines()
    assert "HugePages_Total:       8" in lines and "Hugetlb:           16384 kB" in lines
    now = vmstat(m)
    assert now["nr_hugetlb"] == 4096
    assert now["htlb_buddy_alloc_success"] - ev["htlb_buddy_alloc_success"] == 8
    assert now["htlb_buddy_alloc_fail"] == ev["htlb_buddy_alloc_fail"]
    for rel in ("sys/vm/nr_hugepages", f"{H}/nr_hugepages", f"{H}/free_hugepages",
                f"{N0}/nr_hugepages", f"{N0}/free_hugepages"):
        assert number(m, rel) == 8, rel
    for rel in (f"{H}/resv_hugepages", f"{H}/surplus_hugepages", f"{N0}/surplus_hugepages"):
        assert number(m, rel) == 0, rel
    assert m.kmsg_tail()[0].endswith("HugeTLB: nr_hugepages 0 -> 8 (8 allocated, 0 freed; "
                                     "pool 8 pages, 16384 kB)")

    m.write("sys/vm/nr_hugepages", "0\n")
    gone = m.meminfo()
    assert gone["MemFree"] == before["MemFree"] and gone["HugePages_Total"] == 0
    assert gone["CommitLimit"] == 158716


def test_node_files_and_node_meminfo(pool):
    m = pool
    m.write(f"{N0}/nr_hugepages", "3\n")
    assert number(m, "sys/vm/nr_hugepages") == 3 and number(m, f"{N0}/free_hugepages") == 3
    lines = m.read("devices/system/node/node0/meminfo").splitlines()
    assert lines[-3:] == ["Node 0 HugePages_Total:     3", "Node 0 HugePages_Free:      3",
                          "Node 0 HugePages_Surp:      0"]
    assert vmstat(m, "devices/system/node/node0/vmstat")["nr_hugetlb"] == 3 * 512
    m.write(f"{H}/nr_hugepages", "5\n")
    assert number(m, f"{N0}/nr_hugepages") == 5
    assert m.meminfo()["HugePages_Total"] == 5


def test_overcommit_reads_back_in_both_places(pool):
    m = pool
    m.write("sys/vm/nr_overcommit_hugepages", "7\n")
    assert number(m, f"{H}/nr_overcommit_hugepages") == 7
    m.write(f"{H}/nr_overcommit_hugepages", "2\n")
    assert number(m, "sys/vm/nr_overcommit_hugepages") == 2
    assert number(m, f"{H}/surplus_hugepages") == 0 and m.meminfo()["HugePages_Surp"] == 0


@pytest.mark.parametrize("rel", ["sys/vm/nr_hugepages", f"{H}/nr_hugepages", f"{N0}/nr_hugepages",
                                 "sys/vm/nr_overcommit_hugepages", f"{H}/nr_overcommit_hugepages"])
@pytest.mark.parametrize("bad,why", [("-1\n", "negative"), ("abc\n", "not a decimal count"),
                                     ("2M\n", "not a decimal count"),
                                     ("9223372036854775808\n", "too large"),
                                     ("18446744073709551616\n", "too large")])
def test_bad_writes_are_einval_with_the_reason_in_kmsg(pool, rel, bad, why):
    m = pool
    m.write("sys/vm/nr_hugepages", "2\n")
    m.write("sys/vm/nr_overcommit_hugepages", "1\n")
    before = (m.meminfo(), number(m, "sys/vm/nr_hugepages"),
              number(m, "sys/vm/nr_overcommit_hugepages"))
    assert m.write_errno(rel, bad) == errno.EINVAL
    last = m.kmsg_tail()[0]
    assert f"/{rel}:" in last and why in last, last
    assert (m.meminfo(), number(m, "sys/vm/nr_hugepages"),
            number(m, "sys/vm/nr_overcommit_hugepages")) == before


def test_kpageflags_of_a_pool_page(pool):
    """8 pool pages: exactly 8 x 512 frames carry KPF_HUGE, 8 of them (512-aligned) the head
    bit, the rest the tail bit; none is a buddy or on the LRU; kpagecount 0."""
    m = pool
    m.write("sys/vm/nr_hugepages", "8\n")
    flags = m.u64s("kpageflags", 0, SMALL_PFNS)
    huge = [pfn for pfn, f in enumerate(flags) if f & KPF_HUGE]
    assert len(huge) == 8 * 512
    heads = [pfn for pfn in huge if flags[pfn] & KPF_HEAD]
    assert len(heads) == 8 and all(h % 512 == 0 for h in heads)
    for h in heads:
        assert flags[h] == KPF_HUGE | KPF_HEAD
        assert all(f == KPF_HUGE | KPF_TAIL for f in flags[h + 1:h + 512])
    assert not any(flags[p] & (KPF_BUDDY | KPF_LRU) for p in huge)
    assert not any(c for h in heads for c in m.kpagecount(h, 512))


def test_asking_for_more_than_there_is_succeeds_and_reads_back_the_real_count(small):
    """A fresh machine: 100 asked, 26 reached; the write still succeeds, kmsg has Linux's
    line, htlb_buddy_alloc_success 26 and _fail 1 (also in the balloon's statistics)."""
    m = small
    assert m.write_errno("sys/vm/nr_hugepages", "100\n") == 0
    assert number(m, "sys/vm/nr_hugepages") == 26
    mi = m.meminfo()
    assert (mi["HugePages_Total"], mi["Hugetlb"], mi["MemFree"]) == (26, 53248,
                                                                     MEMTOTAL_KB - 53248)
    assert m.kmsg_tail()[0].endswith("HugeTLB: allocating 100 of page size 2.00 MiB failed.  "
                                     "Only allocated 26 hugepages.")
    ev = vmstat(m)
    assert (ev["htlb_buddy_alloc_success"], ev["htlb_buddy_alloc_fail"]) == (26, 1)
    stats = dict(ln.split() for ln in m.read("devices/virtio/balloon/stats").splitlines())
    assert (stats["hugetlb-allocations"], stats["hugetlb-failures"]) == ("26", "1")
