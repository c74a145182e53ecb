"""The hugetlb pool (engine/pmm/hugetlb.py): 2 MiB pages reserved at run time.

Figures worked out by hand from the machine descriptions:

  small     13825 pages managed: DMA 3840 (pfns 0x100-0xfff free: an order-8 block at
            0x100, then 2 MiB blocks 0x200, 0x400, ..., 0xe00: 7 of them) and DMA32 9985
            (0x1800-0x3f00 free: 2 MiB blocks 0x1800 ... 0x3c00: 19, then 256 + 1 frames).
            A pool page is a Normal-or-below request: the zonelist is DMA32, then DMA.
            It needs free - 512 + 1 > low + lowmem_reserve[Normal]: DMA32 low 211, reserve
            0, so free >= 723; DMA low 81 + 39, so free >= 632. DMA32 takes its 19th at
            9985 - 18 x 512 = 769 free, DMA its 7th at 768: all 26 blocks can go, leaving
            MemFree 13825 - 26 x 512 = 513 pages.
  commit    CommitLimit = (MemTotal - pool frames) x 50 / 100 + SwapTotal. small: swap
            32767 pages (128 MiB less the header); no pool: 13825 x 50 // 100 + 32767 =
            6912 + 32767 = 39679; 8 pages (4096 frames): 9729 x 50 // 100 = 4864, + 32767
            = 37631. default: 1023713 pages, swap 262143: no pool 511856 + 262143 = 773999;
            8 pages: 1019617 x 50 // 100 = 509808, + 262143 = 771951.
  nodes     default: node 0 (DMA, DMA32) and node 1 (DMA32, Normal). Pages go to nodes in
            turn starting at node 0; each stays on its node (node 1's first from Normal,
            pfn >= 0x100000). 8 pages: 4 + 4. Shrinking to 3 frees node 0, 1, 0, 1, 0:
            1 + 2. Growing to 5: node 0, then node 1: 2 + 3.
  balloon   with 8 pool pages (all in DMA32) a Movable request stops at DMA32 169 free
            and DMA 65 + 39: the balloon gets (9985 - 4096 - 169) + (3840 - 104) = 5720 +
            3736 = 9456 pages (13552 on the idle machine, less the 4096 pool frames).

Each scenario ends with check_invariants (its _check_hugetlb: the HUGETLB frames are
exactly the pool's blocks).
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from engine.errors import Busy, InternalError, InvalidArgument
from engine.pmm.frames import PageType
from engine.vmm import pte as P
from vmm_common import MIB, PAGE, RW, SMALL_MEMTOTAL, event, kcount, ptes

KPF_BUDDY, KPF_HEAD, KPF_TAIL, KPF_HUGE = 1 << 10, 1 << 15, 1 << 16, 1 << 17
HUGETLB = int(PageType.HUGETLB)
SMALL_MOST = 26                     # 2 MiB blocks the small machine can give, see above


def kmsg(m):
    return [re.sub(r"^\[\s*[\d.]+\] ", "", line) for line in m.kmsg_lines()]


def heads(m) -> list[int]:
    return sorted(p for f in m.hugetlb.free_lists for p in f)


def kflags(m, pfn) -> int:
    return int.from_bytes(m.kpageflags(int(pfn), 1), "little")


def counts(m) -> tuple:
    v = m.hugetlb_view()
    return v["nr"], v["free"], tuple(n["nr"] for n in v["nodes"])


# ---------------------------------------------------------------------------
# grow and shrink
# ---------------------------------------------------------------------------

def test_grow_and_shrink_exact_counts_and_memfree(small, invariants):
    """8 pages: MemFree 13825 - 4096 = 9729, MemTotal unchanged, meminfo's hugetlb block
    8/8/0/0, Hugetlb 16384 kB, nr_hugetlb 4096; down to 3: 13825 - 1536 = 12289; to 0:
    every frame back and merged (buddyinfo as at boot)."""
    m = small
    boot = [z.free_blocks_by_order() for z in m.zones]
    min_free = m.sysctl["min_free_kbytes"]
    assert m.hugetlb_set(8) == 8
    mi = m.meminfo()
    assert (mi.total, mi.free) == (SMALL_MEMTOTAL, SMALL_MEMTOTAL - 8 * 512) == (13825, 9729)
    assert (mi.hugepages_total, mi.hugepages_free, mi.hugepages_rsvd, mi.hugepages_surp) == (
        8, 8, 0, 0)
    assert (mi.hugepage_size_kb, mi.hugetlb_kb) == (2048, 16384)
    assert event(m, "nr_hugetlb") == 4096
    assert event(m, "htlb_buddy_alloc_success") == 8 and event(m, "htlb_buddy_alloc_fail") == 0
    assert m.sysctl["min_free_kbytes"] == min_free
    assert m.hugetlb_view() == {"page_kb": 2048, "nr": 8, "free": 8, "resv": 0, "surplus": 0,
                                "overcommit": 0, "nodes": [{"nr": 8, "free": 8, "surplus": 0}]}
    assert kmsg(m)[-1] == ("HugeTLB: nr_hugepages 0 -> 8 (8 allocated, 0 freed; pool 8 pages, "
                           "16384 kB)")
    invariants(m)

    assert m.hugetlb_set(3) == 3
    mi = m.meminfo()
    assert (mi.free, mi.hugepages_total, mi.hugetlb_kb) == (12289, 3, 6144)
    assert event(m, "htlb_buddy_alloc_success") == 8, "shrinking allocates nothing"
    invariants(m)

    assert m.hugetlb_set(3) == 3, "the same count again changes nothing"
    assert m.hugetlb_set(0) == 0
    mi = m.meminfo()
    assert (mi.free, mi.hugepages_total, mi.hugetlb_kb) == (SMALL_MEMTOTAL, 0, 0)
    assert [z.free_blocks_by_order() for z in m.zones] == boot
    assert (flags := m.ft.flags_np() & 0xF)[flags == HUGETLB].size == 0
    invariants(m)


def test_asking_for_more_than_memory_allows_grows_as_far_as_it_can(small, invariants):
    """30 asked, 26 blocks exist: the pool stops at 26 (no error), MemFree 513, one failed
    buddy request (htlb_buddy_alloc_fail 1) and Linux's line in kmsg. No zone has the
    free frames for a block, so there is no compaction (compact_stall 0)."""
    m = small
    assert m.hugetlb_set(30) == SMALL_MOST
    assert counts(m) == (26, 26, (26,))
    assert m.meminfo().free == 13825 - 26 * 512 == 513
    assert event(m, "htlb_buddy_alloc_success") == 26
    assert event(m, "htlb_buddy_alloc_fail") == 1
    assert event(m, "compact_stall") == 0
    assert kmsg(m)[-1] == ("HugeTLB: allocating 30 of page size 2.00 MiB failed.  Only "
                           "allocated 26 hugepages.")
    # 19 from DMA32 first (0x1800-0x3dff), then the 7 of DMA (0x200-0xfff)
    assert heads(m) == list(range(0x200, 0x1000, 0x200)) + list(range(0x1800, 0x3e00, 0x200))
    invariants(m)
    assert m.hugetlb_set(1 << 40) == 26, "a huge request just fails once more"
    assert event(m, "htlb_buddy_alloc_fail") == 2
    invariants(m)


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True, None, 1 << 63])
def test_a_bad_count_is_refused_and_changes_nothing(small, invariants, bad):
    m = small
    m.hugetlb_set(2)
    before = (counts(m), m.meminfo())
    with pytest.raises(InvalidArgument):
        m.hugetlb_set(bad)
    with pytest.raises(InvalidArgument):
        m.hugetlb_set_overcommit(bad)
    assert (counts(m), m.meminfo()) == before
    assert m.hugetlb_view()["overcommit"] == 0
    invariants(m)


@pytest.mark.parametrize("node", [1, -1, 0.0, True])
def test_a_node_that_does_not_exist_is_refused(small, node):
    with pytest.raises(InvalidArgument, match="nodes 0-0"):
        small.hugetlb_set(1, node=node)
    assert counts(small) == (0, 0, (0,))


def test_overcommit_is_kept_and_shown_but_no_surplus_page_is_made(small, invariants):
    m = small
    m.hugetlb_set_overcommit(5)
    assert m.hugetlb_view()["overcommit"] == 5
    assert kmsg(m)[-1] == "HugeTLB: nr_overcommit_hugepages = 5"
    assert m.hugetlb_set(30) == 26
    v = m.hugetlb_view()
    assert (v["nr"], v["surplus"], m.meminfo().hugepages_surp) == (26, 0, 0)
    invariants(m)


# ---------------------------------------------------------------------------
# accounting: CommitLimit, kpageflags
# ---------------------------------------------------------------------------

def test_commit_limit_leaves_the_pool_out(small, default):
    assert small.meminfo().commit_limit == small.commit_limit() == 39679
    small.hugetlb_set(8)
    assert small.meminfo().commit_limit == small.commit_limit() == 37631
    assert small.meminfo().total == SMALL_MEMTOTAL
    small.sysctl_write("overcommit_kbytes", "40000")    # kbytes mode: the pool is not counted
    assert small.commit_limit() == 10000 + 32767
    assert default.meminfo().commit_limit == 773999
    default.hugetlb_set(8)
    assert default.meminfo().commit_limit == default.commit_limit() == 771951


def test_pool_frames_read_huge_head_and_tail_in_kpageflags(small, invariants):
    """Every frame of a pool page: KPF_HUGE; the 512-aligned head COMPOUND_HEAD, the 511
    others COMPOUND_TAIL; never BUDDY; kpagecount 0. Freed, the head is a buddy again."""
    m = small
    m.hugetlb_set(2)
    for head in heads(m):
        flags = np.frombuffer(m.kpageflags(head, 512), dtype=np.uint64)
        assert int(flags[0]) == KPF_HUGE | KPF_HEAD
        assert (flags[1:] == KPF_HUGE | KPF_TAIL).all()
        assert not (np.frombuffer(m.kpagecount(head, 512), dtype=np.uint64)).any()
        assert kcount(m, head) == 0
    first, last = heads(m)[0], heads(m)[-1]
    assert not kflags(m, first - 1) & KPF_HUGE and not kflags(m, last + 512) & KPF_HUGE
    m.hugetlb_set(0)
    freed = np.frombuffer(m.kpageflags(first, 512), dtype=np.uint64)
    assert not (freed & np.uint64(KPF_HUGE | KPF_HEAD | KPF_TAIL)).any()
    invariants(m)


# ---------------------------------------------------------------------------
# NUMA: nodes in turn, each request on its own node
# ---------------------------------------------------------------------------

def test_nodes_take_turns_and_each_page_stays_on_its_node(default, invariants):
    m = default
    free0, free1 = m.meminfo(0).free, m.meminfo(1).free
    assert m.hugetlb_set(8) == 8
    assert counts(m) == (8, 8, (4, 4))
    assert (m.meminfo(0).free, m.meminfo(1).free) == (free0 - 2048, free1 - 2048)
    assert m.meminfo().free == free0 + free1 - 4096
    for node in (0, 1):
        mi = m.meminfo(node)
        assert (mi.hugepages_total, mi.hugepages_free, mi.hugepages_surp) == (4, 4, 0)
        assert dict(m.node_stats(node))["nr_hugetlb"] == 2048
    zone_of = m.pmm.zone_of
    assert all(zone_of(p).node_id == 0 and zone_of(p).name == "DMA32"
               for p in m.hugetlb.free_lists[0])
    assert all(zone_of(p).node_id == 1 and zone_of(p).name == "Normal" and p >= 0x100000
               for p in m.hugetlb.free_lists[1])
    invariants(m)

    assert m.hugetlb_set(3) == 3
    assert counts(m) == (3, 3, (1, 2))
    assert m.hugetlb_set(5) == 5
    assert counts(m) == (5, 5, (2, 3))
    invariants(m)


def test_a_node_write_changes_that_node_only(default, invariants):
    """node1 := 6 with node 0 holding 2: the target is 6 + 2 = 8, all of it on node 1;
    node0 := 0 frees node 0's only."""
    m = default
    m.hugetlb_set(4)
    assert counts(m) == (4, 4, (2, 2))
    assert m.hugetlb_set(6, node=1) == 6
    assert counts(m) == (8, 8, (2, 6))
    assert m.hugetlb_set(0, node=0) == 0
    assert counts(m) == (6, 6, (0, 6))
    assert kmsg(m)[-1] == ("HugeTLB: node0 nr_hugepages 2 -> 0 (0 allocated, 2 freed; pool 6 "
                           "pages, 12288 kB)")
    invariants(m)


def test_a_node_short_of_memory_stops_and_the_other_goes_on(default, invariants):
    """Node 0 can give only so many: asking node 0 for far more stops there with its own
    kmsg line; the global count then still grows on node 1."""
    m = default
    got = m.hugetlb_set(100_000, node=0)
    assert 0 < got < 100_000 and counts(m) == (got, got, (got, 0))
    assert kmsg(m)[-1] == (f"HugeTLB: allocating 100000 of page size 2.00 MiB failed node0.  "
                           f"Only allocated {got} hugepages.")
    assert event(m, "htlb_buddy_alloc_fail") == 1
    assert m.hugetlb_set(got + 10) == got + 10
    assert counts(m)[2] == (got, 10), "node 0 has no more: the rest comes from node 1"
    assert event(m, "htlb_buddy_alloc_fail") == 2, "node 0 was asked once in that write"
    invariants(m)


# ---------------------------------------------------------------------------
# fragmentation and compaction
# ---------------------------------------------------------------------------

def test_when_every_block_is_pinned_compaction_cannot_help_and_the_pool_stays_empty(
        small, invariants):
    """One unmovable kernel page in every 2 MiB block: 0x1800 ... 0x3e00 in DMA32 (20,
    0x3e00 being the order-8 block) and 0x200 ... 0xe00 in DMA (7): 27 pallocs. Then no
    free block exists; both zones have the free pages, so they are compacted (one
    compact_stall, each zone a compact_fail), nothing can move, and the request fails:
    the pool stays at 0, htlb_buddy_alloc_fail 1, MemFree 13825 - 27."""
    m = small
    pins = []
    while any(z.has_free_block(9) for z in m.zones):
        [(pfn, n)] = m.palloc(align=2 * MIB)
        pins.append(pfn)
    assert len(pins) == 27
    assert pins == list(range(0x1800, 0x4000, 0x200)) + list(range(0x200, 0x1000, 0x200))
    stall, fail = event(m, "compact_stall"), event(m, "compact_fail")
    assert m.hugetlb_set(4) == 0
    assert counts(m) == (0, 0, (0,))
    assert event(m, "htlb_buddy_alloc_fail") == 1 and event(m, "htlb_buddy_alloc_success") == 0
    assert event(m, "compact_stall") - stall == 1
    assert event(m, "compact_fail") - fail == 2
    assert m.meminfo().free == SMALL_MEMTOTAL - 27
    assert kmsg(m)[-1] == ("HugeTLB: allocating 4 of page size 2.00 MiB failed.  Only "
                           "allocated 0 hugepages.")
    invariants(m)
    m.pfree([(p, 1) for p in pins])
    assert m.hugetlb_set(4) == 4, "unpinned, the blocks are whole again"
    invariants(m)


def test_compaction_makes_a_block_out_of_scattered_free_memory(small, invariants):
    """DMA is taken by palloc down to its min mark (3840 - 65 = 3775 pages); a process fills
    9600 pages (DMA32 is left with fewer than 512 free: no whole block), then gives back all
    but one page in every 2 MiB block it touched. Free memory is plentiful but in pieces:
    the first buddy request fails, compaction moves the kept pages up (pgmigrate_success),
    and the retry succeeds: one pool page, htlb_buddy_alloc_success 1, fail 0. The kept
    pages keep their values."""
    m = small
    m.palloc(count=3775, zone="DMA")
    pid = m.tasks.spawn("frag")
    a = m.tasks.mmap(pid, 9600 * PAGE, prot=RW)
    m.tasks.fill(pid, a, 9600 * PAGE, seed=7)
    assert not any(z.has_free_block(9) for z in m.zones)
    ents = {va: e for va, e in ptes(m, pid).items() if a <= va < a + 9600 * PAGE}
    keep = {}
    for va in sorted(ents):
        keep.setdefault(P.pfn_of(ents[va]) >> 9, va)
    kept = sorted(keep.values())
    start = a
    for va in kept + [a + 9600 * PAGE]:
        if va > start:
            m.tasks.madvise(pid, start, va - start, "dontneed")
        start = va + PAGE
    values = {va: int(m.ft.content[P.pfn_of(ptes(m, pid)[va])]) for va in kept}
    assert len(kept) >= 19
    for z in m.zones:
        z.drain_pcp()
    assert not any(z.has_free_block(9) for z in m.zones), "every block holds a kept page"
    moved = event(m, "pgmigrate_success")
    invariants(m)

    assert m.hugetlb_set(1) == 1
    assert event(m, "htlb_buddy_alloc_success") == 1 and event(m, "htlb_buddy_alloc_fail") == 0
    assert event(m, "compact_stall") == 1
    assert event(m, "pgmigrate_success") > moved
    now = ptes(m, pid)
    assert {va: int(m.ft.content[P.pfn_of(now[va])]) for va in kept} == values
    invariants(m)


# ---------------------------------------------------------------------------
# nobody else takes or moves pool pages
# ---------------------------------------------------------------------------

def test_compaction_and_the_balloon_leave_the_pool_alone(small, invariants):
    m = small
    m.hugetlb_set(8)
    held = heads(m)
    m.sysctl_write("compact_memory", "1")
    assert heads(m) == held
    m.balloon_set_target(20000)
    m.step(6)
    assert m.balloon.actual == 9456
    assert heads(m) == held and counts(m) == (8, 8, (8,))
    flags = m.ft.flags_np() & 0xF
    assert all((flags[h:h + 512] == HUGETLB).all() for h in held)
    invariants(m)


def test_page_offlining_refuses_pool_pages(small, invariants):
    m = small
    m.hugetlb_set(1)
    [head] = heads(m)
    with pytest.raises(Busy, match="HUGETLB: Ignored"):
        m.offline_page((head + 3) << 12, hard=True)
    with pytest.raises(Busy, match="non-movable"):
        m.offline_page((head + 3) << 12, hard=False)
    assert heads(m) == [head] and m.meminfo().hardware_corrupted == 0
    invariants(m)


def test_offlining_a_block_holding_a_pool_page_is_busy_and_changes_nothing(small, invariants):
    """Block 32 (4 GiB) probed and onlined as Normal: it comes first in a Normal request's
    zonelist, so both pool pages go there (its top: 0x107c00, 0x107e00). Offlining it is
    EBUSY and nothing changes; with the pool empty it goes offline."""
    m = small
    assert m.memory_probe(4 << 30) == 32
    m.memory_block_set(32, "online_kernel")
    assert m.hugetlb_set(2) == 2
    assert all(0x100000 <= h < 0x108000 for h in heads(m))
    before = (heads(m), m.meminfo(), m.meminfo(0))
    with pytest.raises(Busy, match="cannot be migrated"):
        m.memory_block_set(32, "offline")
    assert (heads(m), m.meminfo(), m.meminfo(0)) == before
    assert m.memory_block_view(32)["online"]
    invariants(m)
    m.hugetlb_set(0)
    m.memory_block_set(32, "offline")
    assert not m.memory_block_view(32)["online"]
    invariants(m)


# ---------------------------------------------------------------------------
# the invariant itself
# ---------------------------------------------------------------------------

def test_the_invariant_checker_catches_a_broken_pool(small, invariants):
    m = small
    m.hugetlb_set(2)
    invariants(m)
    h = heads(m)[0]
    ft = m.ft
    saved = ft.flags[h + 7]
    ft.flags[h + 7] = int(PageType.KERNEL)
    with pytest.raises(InternalError, match="hugetlb"):
        invariants(m)
    ft.flags[h + 7] = saved
    ft.mapcount[h] = 1
    with pytest.raises(InternalError, match="hugetlb"):
        invariants(m)
    ft.mapcount[h] = 0
    m.hugetlb.nr_node[0] += 1
    with pytest.raises(InternalError, match="hugetlb"):
        invariants(m)
    m.hugetlb.nr_node[0] -= 1
    invariants(m)
