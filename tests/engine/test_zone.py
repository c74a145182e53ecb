"""engine/pmm/zone.py and the single-page path of allocator.py: buddy split and merge,
per-cpu free-page stacks, free_page/try_alloc_page round trips.

Boot free lists of the small machine (see test_boot.py): DMA32 holds one
order-0 block, one of order 8, one of order 9 and nine of order 10, all
MOVABLE; DMA holds one of order 8, one of order 9 and three of order 10.
"""
import numpy as np

from engine.pmm.frames import PCP, MigrateType, PageType
from engine.pmm.zone import ZONE_DMA, ZONE_NORMAL


def zone(m, name, node=0):
    return next(z for z in m.zones if z.name == name and z.node_id == node)


def buddyinfo(m):
    return {(z.node_id, z.name): tuple(z.free_blocks_by_order()) for z in m.zones if z.present_pages}


def drain_all(m):
    for z in m.zones:
        z.drain_pcp()


def test_try_alloc_then_free_page_restores_every_free_count(small, invariants):
    z = zone(small, "DMA32")
    before = (z.free_pages, small.meminfo().free)
    pfn = small.pmm.try_alloc_page(node=0, cpu=0)
    assert pfn is not None, "expected a frame from a fresh machine, got None"
    assert (z.free_pages, small.meminfo().free) == (before[0] - 1, before[1] - 1)
    invariants(small)
    small.pmm.free_page(pfn, cpu=0)
    assert (z.free_pages, small.meminfo().free) == before, \
        f"expected free counts {before} after the round trip, got {(z.free_pages, small.meminfo().free)}"
    invariants(small)


def test_allocated_frame_is_kernel_typed_with_content_zero(small, invariants):
    pfn = small.pmm.try_alloc_page(node=0, cpu=0)
    assert small.ft.type_of(pfn) == PageType.KERNEL, f"expected KERNEL, got {small.ft.type_of(pfn)!r}"
    assert small.ft.content[pfn] == 0, f"expected content 0, got {small.ft.content[pfn]:#x}"
    invariants(small)


def test_freed_frame_handed_out_again_reads_zero(small, invariants):
    pfn = small.pmm.try_alloc_page(node=0, cpu=0)
    small.ft.content[pfn] = 0xDEADBEEF
    small.pmm.free_page(pfn, cpu=0)
    again = small.pmm.try_alloc_page(node=0, cpu=0)
    assert again == pfn, f"expected the per-cpu stack to hand back {pfn:#x} (LIFO), got {again:#x}"
    assert small.ft.content[again] == 0, f"expected content 0, got {small.ft.content[again]:#x}"
    invariants(small)


def test_freed_frames_handed_out_by_palloc_read_zero(small, invariants):
    runs = small.palloc(count=64)
    for start, n in runs:
        for p in range(start, start + n):
            small.ft.content[p] = 0x1000 + p
    small.pfree(runs)
    again = small.palloc(count=64)
    for start, n in again:
        got = small.ft.content_np()[start:start + n]
        assert not got.any(), f"expected zeroed frames at {start:#x}+{n}, got {got[got != 0][:4]}"
    invariants(small)


def test_unmovable_page_from_a_movable_only_zone_steals_the_largest_block(small, invariants):
    # The DMA32 zone has no Unmovable block: the request steals an order-10 block,
    # keeps one frame and leaves one block of each order 0..9 behind.
    small.pmm.try_alloc_page(node=0, cpu=0, mt=MigrateType.UNMOVABLE)
    got = buddyinfo(small)[(0, "DMA32")]
    expected = (1 + 1, 1, 1, 1, 1, 1, 1, 1, 1 + 1, 1 + 1, 9 - 1)
    assert got == expected, f"expected {expected}, got {got}"
    z = zone(small, "DMA32")
    unmovable = [z.free_blocks(o, MigrateType.UNMOVABLE) for o in range(11)]
    assert unmovable == [1] * 10 + [0], f"expected the split halves on Unmovable lists, got {unmovable}"
    invariants(small)


def test_movable_page_takes_the_smallest_block_of_its_own_type(small, invariants):
    pfn = small.pmm.try_alloc_page(node=0, cpu=0, mt=MigrateType.MOVABLE, ptype=PageType.KERNEL)
    assert pfn == 0x3F00, f"expected the lone order-0 block 0x3f00, got {pfn:#x}"
    got = buddyinfo(small)[(0, "DMA32")]
    assert got == (0,) + (0,) * 7 + (1, 1, 9), f"expected no order-0 block left, got {got}"
    invariants(small)


def test_single_pages_come_from_the_highest_allowed_zone_first(small, invariants):
    pfn = small.pmm.try_alloc_page(node=0, cpu=0, highest=ZONE_NORMAL)
    assert pfn >= 0x1000, f"expected a DMA32 frame (pfn >= 0x1000), got {pfn:#x}"
    dma = small.pmm.try_alloc_page(node=0, cpu=0, highest=ZONE_DMA)
    assert dma < 0x1000, f"expected a DMA frame (pfn < 0x1000), got {dma:#x}"
    invariants(small)


def test_freeing_everything_merges_back_to_the_boot_buddyinfo(small, invariants):
    boot = buddyinfo(small)
    runs = small.palloc(count=5000)
    runs += small.palloc(count=300, contiguous=True)
    runs += small.palloc(count=16, contiguous=True, below=16 << 20, boundary=64 << 10)
    runs += small.palloc(count=7, below=8 << 20)
    pfns = np.concatenate([np.arange(s, s + n) for s, n in runs])
    np.random.default_rng(7).shuffle(pfns)
    for chunk in np.array_split(pfns, 13):        # free in scattered order, several pfree calls
        small.pfree([(int(p), 1) for p in chunk])
    invariants(small)
    drain_all(small)
    invariants(small)
    assert buddyinfo(small) == boot, f"expected the boot buddyinfo {boot}, got {buddyinfo(small)}"


def test_freeing_everything_on_the_default_machine_merges_back(default, invariants):
    boot = buddyinfo(default)
    runs = default.palloc(count=3000, node=1) + default.palloc(count=3000, node=0)
    runs += default.palloc(count=600, contiguous=True, zone="DMA")
    default.pfree(runs)
    drain_all(default)
    invariants(default)
    assert buddyinfo(default) == boot, f"expected the boot buddyinfo {boot}, got {buddyinfo(default)}"


def test_per_cpu_stack_never_holds_more_than_its_high_mark(small, invariants):
    z = zone(small, "DMA32")
    pcp = z.pcp[0]
    runs = small.palloc(count=2 * pcp.high, zone="DMA32")
    small.pfree(runs)
    assert 0 < pcp.count <= pcp.high, f"expected 1..{pcp.high} frames on the stack, got {pcp.count}"
    stacked = sum(len(s) for s in pcp.stacks)
    flagged = int(np.count_nonzero(small.ft.flags_np()[z.start_pfn:z.end_pfn] & PCP))
    assert stacked == flagged == pcp.count, f"expected {pcp.count} frames stacked and flagged, " \
                                            f"got {stacked} stacked, {flagged} flagged"
    invariants(small)


def test_empty_per_cpu_stack_refills_one_batch_from_the_buddy_lists(default, invariants):
    z = zone(default, "DMA32", node=0)
    pcp = z.pcp[0]
    default.pmm.try_alloc_page(node=0, cpu=0)
    assert pcp.count == pcp.batch - 1, f"expected batch - 1 = {pcp.batch - 1} frames left, got {pcp.count}"
    assert z.free_pages == z.managed_pages - 1
    invariants(default)


def test_draining_the_stacks_keeps_the_free_count(small, invariants):
    runs = small.palloc(count=150)
    small.pfree(runs)
    before = [z.free_pages for z in small.zones]
    drain_all(small)
    assert [z.free_pages for z in small.zones] == before
    assert all(z.pcp_pages() == 0 for z in small.zones)
    invariants(small)


def test_zone_at_its_min_watermark_gives_no_single_page(small, invariants):
    z = zone(small, "DMA")
    taken = []
    while True:
        pfn = small.pmm.try_alloc_page(node=0, cpu=0, highest=ZONE_DMA)
        if pfn is None:
            break
        taken.append(pfn)
    assert z.free_pages == z.wmark_min, f"expected free == min == {z.wmark_min}, got {z.free_pages}"
    assert len(taken) == z.managed_pages - z.wmark_min
    invariants(small)
