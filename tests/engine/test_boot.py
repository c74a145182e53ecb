"""engine/pmm/boot.py: zones, reservations and the boot free lists, worked out by hand.

Small machine (config/small.yaml): RAM 0x1000-0x9f000 (158 pages) and
1M-64M; the kernel keeps the first MiB, an 8 MiB image at 16M and a memmap
of ceil(16286 * 64 / 4096) = 255 pages at the top of RAM.
  DMA   pfn 0x1-0x1000:    present 158 + 3840 = 3998, managed 3840 (0x100-0x1000)
  DMA32 pfn 0x1000-0x4000: present 12288, managed 12288 - 2048 - 255 = 9985
Default machine (config/default.yaml): node 0 is RAM below 2G, node 1 is
2G-0xbffe0000 plus 4G-5G; each node's memmap is ceil(present * 64 / 4096).
"""
import numpy as np

from engine.pmm.frames import PageType


def populated(m):
    return {(z.node_id, z.name): z for z in m.zones if z.present_pages}


def test_small_machine_zones_have_the_hand_computed_spans_and_counts(small):
    got = {k: (z.start_pfn, z.end_pfn, z.present_pages, z.managed_pages, z.free_pages)
           for k, z in populated(small).items()}
    expected = {(0, "DMA"): (0x1, 0x1000, 3998, 3840, 3840),
                (0, "DMA32"): (0x1000, 0x4000, 12288, 9985, 9985)}
    assert got == expected, f"expected {expected}, got {got}"


def test_default_machine_zones_have_the_hand_computed_counts(default):
    memmap0 = -(-(158 + (0x80000 - 0x100)) * 64 // 4096)          # 8191
    memmap1 = -(-((0xbffe0 - 0x80000) + 0x40000) * 64 // 4096)     # 8192
    got = {k: (z.start_pfn, z.end_pfn, z.present_pages, z.managed_pages)
           for k, z in populated(default).items()}
    expected = {(0, "DMA"): (0x1, 0x1000, 3998, 3840),
                (0, "DMA32"): (0x1000, 0x80000, 0x7f000, 0x7f000 - 8192 - memmap0),
                (1, "DMA32"): (0x80000, 0xbffe0, 0x3ffe0, 0x3ffe0),
                (1, "Normal"): (0x100000, 0x140000, 0x40000, 0x40000 - memmap1)}
    assert got == expected, f"expected {expected}, got {got}"


def test_small_machine_frames_are_typed_as_the_physical_map_says(small):
    types = small.ft.flags_np() & 0xF
    expected = np.full(0x4000, PageType.NOPAGE, dtype=np.uint16)
    expected[0x1:0x9f] = PageType.RESERVED            # RAM under the low-memory reserve
    expected[0x100:0x1000] = PageType.FREE
    expected[0x1000:0x1800] = PageType.RESERVED       # kernel image 16M-24M
    expected[0x1800:0x3f01] = PageType.FREE
    expected[0x3f01:0x4000] = PageType.RESERVED       # memmap, 255 pages at the top
    bad = np.flatnonzero(types != expected)
    assert bad.size == 0, (f"pfn {int(bad[0]):#x}: expected type {int(expected[bad[0]])}, "
                           f"got {int(types[bad[0]])}")


def test_small_machine_boot_buddyinfo_holds_maximal_aligned_blocks(small):
    z = populated(small)
    # DMA 0x100-0x1000: 0x100 (order 8), 0x200 (order 9), three order-10 blocks
    # DMA32 0x1800-0x3f01: nine order-10 blocks, 0x3c00 (9), 0x3e00 (8), 0x3f00 (0)
    dma = z[(0, "DMA")].free_blocks_by_order()
    dma32 = z[(0, "DMA32")].free_blocks_by_order()
    assert dma == [0] * 8 + [1, 1, 3], f"DMA: expected 1 x 8, 1 x 9, 3 x 10, got {dma}"
    assert dma32 == [1] + [0] * 7 + [1, 1, 9], f"DMA32: expected 1 x 0, 1 x 8, 1 x 9, 9 x 10, got {dma32}"


def test_boot_reservations_are_listed_with_the_memmap_at_the_top_of_each_node(default):
    got = [(r.start_pfn, r.end_pfn, r.what) for r in default.reservations]
    expected = [(0, 0x100, "low memory"), (0x1000, 0x3000, "kernel image"),
                (0x80000 - 8191, 0x80000, "memmap node 0"), (0x140000 - 8192, 0x140000, "memmap node 1")]
    assert got == expected, f"expected {expected}, got {got}"
    assert default.memmap_pages == 8191 + 8192


def test_fresh_machines_meet_every_invariant(small, default, invariants):
    invariants(small)
    invariants(default)


def test_meminfo_of_a_fresh_machine_counts_managed_and_free_pages(small, default):
    for m, total in ((small, 3840 + 9985), (default, 3840 + 503809 + 262112 + 253952)):
        mi = m.meminfo()
        assert (mi.total, mi.free) == (total, total), f"expected MemTotal = MemFree = {total}, got {mi}"
