"""check_invariants: holds on fresh and busy machines, and catches each kind of corruption.

The corruptions below are made by hand on the small machine, whose boot
free lists are known: DMA holds blocks at pfn 0x100 (order 8), 0x200
(order 9) and 0x400, 0x800, 0xc00 (order 10); DMA32 holds 0x3f00 (order 0),
0x3e00 (order 8), 0x3c00 (order 9) and nine order-10 blocks from 0x1800.
"""
import numpy as np
import pytest

from engine.errors import InternalError
from engine.pmm.frames import BUDDY, NIL, PCP, MigrateType, PageType

FREE = int(PageType.FREE)
MOVABLE = int(MigrateType.MOVABLE)


def zone(m, name):
    return next(z for z in m.zones if z.name == name and z.managed_pages)


def broken(invariants, m, *words):
    """Assert that check_invariants fails and that its message contains every word."""
    with pytest.raises(InternalError) as info:
        invariants(m)
    msg = str(info.value)
    for w in words:
        assert w in msg, f"expected {w!r} in the message, got {msg!r}"


def test_fresh_small_and_default_machines_pass(small, default, invariants):
    invariants(small)
    invariants(default)


def test_machine_with_frames_on_lists_stacks_and_in_use_passes(small, invariants):
    runs = small.palloc(count=300)
    small.palloc(count=16, contiguous=True, below=16 << 20, boundary=64 << 10)
    small.pfree(runs[:1])
    assert zone(small, "DMA32").pcp_pages() + zone(small, "DMA").pcp_pages() > 0, \
        "expected some freed frames parked on per-cpu stacks, got none"
    invariants(small)


def test_frame_outside_ram_that_is_not_nopage_is_caught(small, invariants):
    small.ft.flags[0] = PageType.RESERVED          # pfn 0 is the firmware's page, not RAM
    broken(invariants, small, "pfn 0x0", "outside RAM")


def test_head_without_buddy_bit_is_caught(small, invariants):
    small.ft.flags[0x100] = FREE                  # order-8 head of DMA loses BUDDY
    broken(invariants, small, "0x100", "BUDDY")


def test_head_with_wrong_order_is_caught(small, invariants):
    small.ft.flags[0x100] = FREE | BUDDY | (7 << 4)
    broken(invariants, small, "0x100", "order 8", "order 7")


def test_broken_prev_link_is_caught(small, invariants):
    second = small.ft.content[0xc00] & NIL        # the order-10 list: 0xc00 -> ...
    small.ft.content[second] = (0x123 << 32) | (small.ft.content[second] & NIL)
    broken(invariants, small, "prev link", "order 10", f"{second:#x}")


def test_cycle_in_a_free_list_is_caught(small, invariants):
    ft = small.ft
    last = 0xc00
    while ft.content[last] & NIL != NIL:
        last = ft.content[last] & NIL
    ft.content[last] = (ft.content[last] & ~NIL & 0xFFFFFFFFFFFFFFFF) | 0xc00
    broken(invariants, small, "prev link", "0xc00")     # coming back needs a second predecessor


def test_nr_free_that_disagrees_with_the_list_is_caught(small, invariants):
    zone(small, "DMA").nr_free[9 * 6 + MOVABLE] += 1
    broken(invariants, small, "nr_free says 2", "holds 1")


def test_free_pages_that_disagrees_with_the_frames_is_caught(small, invariants):
    zone(small, "DMA32").free_pages -= 1
    broken(invariants, small, "DMA32", "free_pages")


def test_leaked_free_frame_is_caught(small, invariants):
    small.ft.flags[0x1000] = FREE                 # kernel image frame typed FREE, on no list
    broken(invariants, small, "0x1000", "leaked")


def test_allocated_frame_inside_a_free_block_is_caught(small, invariants):
    small.ft.flags[0x401] = PageType.KERNEL      # inside the order-10 block at 0x400
    broken(invariants, small, "0x401", "inside a free block", "KERNEL")


def test_unmerged_buddies_are_caught(small, invariants):
    z = zone(small, "DMA")
    z._del_block(0x400, 10, MOVABLE)
    z._add_block(0x400, 9, MOVABLE)
    z._add_block(0x600, 9, MOVABLE)
    broken(invariants, small, "0x400", "0x600", "not merged")


def test_unmerged_buddies_in_an_isolated_pageblock_are_allowed(small, invariants):
    z = zone(small, "DMA")
    z._del_block(0x400, 10, MOVABLE)
    small.ft.pb_mt[0x400 >> 9] = MigrateType.ISOLATE
    small.ft.pb_mt[0x600 >> 9] = MigrateType.ISOLATE
    z._add_block(0x400, 9, MigrateType.ISOLATE)
    z._add_block(0x600, 9, MigrateType.ISOLATE)
    invariants(small)


def test_block_on_the_wrong_migrate_type_list_is_caught(small, invariants):
    small.ft.pb_mt[0x200 >> 9] = MigrateType.UNMOVABLE    # under the order-9 block at 0x200
    broken(invariants, small, "0x200", "MOVABLE list", "UNMOVABLE")


def test_large_block_spanning_a_pageblock_of_another_type_is_caught(small, invariants):
    small.ft.pb_mt[(0x400 >> 9) + 1] = MigrateType.RECLAIMABLE   # second half of 0x400 order 10
    broken(invariants, small, "0x400", "RECLAIMABLE")


def test_order_7_halves_left_unmerged_are_caught(small, invariants):
    z = zone(small, "DMA")
    z._del_block(0x100, 8, MOVABLE)
    z._add_block(0x100, 7, MOVABLE)
    z._add_block(0x180, 7, MOVABLE)
    broken(invariants, small, "0x100", "0x180", "not merged")


def test_block_starting_off_its_alignment_is_caught(small, invariants):
    z = zone(small, "DMA")
    z._del_block(0x100, 8, MOVABLE)
    z._add_block(0x101, 8, MOVABLE)               # 0x101 is not 256-aligned
    small.ft.flags[0x100] = PageType.KERNEL
    broken(invariants, small, "0x101", "aligned")


def test_kernel_frame_on_a_per_cpu_stack_is_caught(small, invariants):
    (pfn, _), = small.palloc(count=1)
    z = zone(small, "DMA32") if pfn >= 0x1000 else zone(small, "DMA")
    z.pcp[0].stacks[0].append(pfn)
    z.pcp[0].count += 1
    z.free_pages += 1
    broken(invariants, small, f"{pfn:#x}", "FREE|PCP")


def test_frame_on_a_stack_and_in_a_block_is_caught(small, invariants):
    z = zone(small, "DMA")
    small.ft.flags[0x101] = FREE | PCP
    z.pcp[0].stacks[1].append(0x101)
    z.pcp[0].count += 1
    broken(invariants, small, "0x101")


def test_pcp_count_that_disagrees_with_the_stacks_is_caught(small, invariants):
    zone(small, "DMA32").pcp[0].count += 1
    broken(invariants, small, "count says 1", "hold 0")


def test_pcp_flag_on_a_frame_on_no_stack_is_caught(small, invariants):
    (pfn, _), = small.palloc(count=1)
    small.pfree([(pfn, 1)])
    z = next(z for z in small.zones if z.managed_pages and z.pcp[0].count)
    stack = next(s for s in z.pcp[0].stacks if s)
    stack.pop()
    z.pcp[0].count -= 1
    broken(invariants, small, "PCP", "no per-cpu stack")


def test_free_frame_with_a_mapping_is_caught(small, invariants):
    small.ft.mapcount[0x1800] = 1
    broken(invariants, small, "0x1800", "mapcount")


def test_checker_changes_nothing(small, invariants):
    small.palloc(count=100)
    before = (bytes(small.ft.flags), bytes(small.ft.content), small.zoneinfo())
    invariants(small)
    after = (bytes(small.ft.flags), bytes(small.ft.content), small.zoneinfo())
    assert before == after, "check_invariants changed the machine"


def test_default_machine_fragmented_into_many_blocks_passes(default, invariants):
    runs = default.palloc(count=20000, node=1)
    pfns = np.concatenate([np.arange(s, s + n) for s, n in runs])
    default.pfree([(int(p), 1) for p in pfns[::2]])
    invariants(default)


def test_bar_overlapping_another_is_caught(small, invariants):
    bar = small.place_bar(1 << 20)
    window = next(r for r in small.physmap.top if r.kind == "pci" and r.start <= bar.start < r.end)
    clash = type(bar)(bar.start + (1 << 19), bar.start + (3 << 19), "clash", "bar", "uc")
    window.children.append(clash)
    broken(invariants, small, "clash")


def test_bar_outside_a_pci_window_is_caught(small, invariants):
    ram = next(r for r in small.physmap.top if r.name == "System RAM" and r.end > 1 << 24)
    ram.children.append(type(ram)(0x3000000, 0x3100000, "stray", "bar", "uc"))
    ram.children.sort(key=lambda c: c.start)
    broken(invariants, small, "stray", "outside any PCI window")
