"""FrameTable: per-frame state of the whole physical address space, in arrays.

Owns the columns below, indexed by pfn, for every pfn from 0 to max_pfn
(holes included, marked NOPAGE, like Linux's flat memmap). Nothing here is
one Python object per frame. Bytes per frame: flags 2 + content 8 + mapcount 2
+ rmap 8 + swp 4 + LRU links 8 = 32, half the 64 of Linux's struct page.

    flags[pfn]    u16   bits 0-3  PageType (what the frame is)
                        bits 4-7  buddy order with BUDDY; on the frames of an anonymous
                                  transparent huge page mapped by a PMD: 9 on its head
                                  (THP_HEAD), 15 on each of its 511 tails (THP_TAIL)
                        bit  8    BUDDY: head of a free block on a buddy free list
                        bit  9    PCP: a free frame sitting on a per-cpu free-page stack
                        bit  10   DIRTY: a page-cache frame newer than its file (PG_dirty)
                        bit  11   LAZYFREE: an anonymous frame given up by MADV_FREE;
                                  discardable while no PTE maps it dirty
                        bit  12   LRU: on one of its node's LRU lists (PG_lru)
                        bit  13   ACTIVE: on the active rather than the inactive list
                        bit  14   REFERENCED: seen referenced once by reclaim (PG_referenced)
                        bit  15   SWAPCACHE: in the swap cache; swp[pfn] names its slot
                                  (an anonymous frame with DIRTY set is newer than its slot)
    content[pfn]  u64   the simulated content value of the frame (one 64-bit
                        word stands for the page). A free frame has no content
                        to keep: a BUDDY head stores its free-list links here
                        (prev << 32 | next, NIL = 0xffffffff), as xv6's kalloc
                        threads its free list through the free pages; other
                        free frames hold POISON once freed (0 from boot).
    mapcount[pfn] u16   page-table mappings of the frame (kpagecount); 0 when free or kernel-owned
                        (the shared zero page is never counted, as in Linux)
    swp[pfn]      u32   the swap slot of a SWAPCACHE frame: type << 27 | offset (folio->swap)
    lru_prev/next u32   the frame's neighbours on its LRU list (NIL at the ends): the
                        lists are threaded through these two columns (list_head lru)
    rmap[pfn]     u64   who owns an in-use user frame, for the reverse map (Linux's
                        page->mapping and page->index in one word): owner << 36 | index.
                        ANON: owner = the anon family (a process and its forks),
                        index = virtual page number; FILE/SHMEM: owner = the file's
                        inode number, index = page of the file; a KERNEL or BALLOON
                        frame whose kernel user can move it (zswap's pool, the
                        balloon): owner = that user's KOWNER number, index = the
                        frame's place in its table. 0 otherwise (an unmovable frame).

A hugetlb pool page (PageType HUGETLB) is 512 frames of one naturally aligned
order-9 block, every frame typed HUGETLB with mapcount 0, rmap 0 and no other
flag bit; its head is the 512-aligned frame (pmm/hugetlb.py keeps the heads).

Per-pageblock columns (one entry per 512 frames) live here too:
    pb_zone[pb]   u8    global zone id of the pageblock (node * NR_ZONES + zone index)
    pb_mt[pb]     u8    migrate type of the pageblock (MigrateType)
"""
from __future__ import annotations

from array import array
from enum import IntEnum

import numpy as np

MAX_ORDER = 10                     # orders 0..10, 11 columns in buddyinfo (Linux MAX_PAGE_ORDER)
NR_ORDERS = MAX_ORDER + 1
PAGEBLOCK_ORDER = 9                # 512 frames = 2 MiB
PAGEBLOCK_PAGES = 1 << PAGEBLOCK_ORDER

NIL = 0xFFFFFFFF                   # "no frame" in free-list links
POISON = 0x6B6B6B6B6B6B6B6B        # content of a freed frame (slab's POISON_FREE byte)

TYPE_MASK = 0x000F
ORDER_SHIFT = 4
ORDER_MASK = 0x00F0
BUDDY = 0x0100
PCP = 0x0200
DIRTY = 0x0400
LAZYFREE = 0x0800
LRU = 0x1000
ACTIVE = 0x2000
REFERENCED = 0x4000
SWAPCACHE = 0x8000
THP_HEAD = 9 << ORDER_SHIFT        # order bits of an in-use frame: head of a PMD-mapped THP
THP_TAIL = 15 << ORDER_SHIFT       # ... one of its tails
HPAGE_PMD_ORDER = 9
HPAGE_PMD_NR = 1 << HPAGE_PMD_ORDER


class PageType(IntEnum):
    NOPAGE = 0      # no RAM at this pfn (hole, MMIO, ROM)
    RESERVED = 1    # RAM the kernel kept at boot: low memory, kernel image, memmap
    FREE = 2        # free: in a buddy block or on a per-cpu stack
    KERNEL = 3      # handed out to a kernel user (palloc: a driver's buffer); unmovable
    ANON = 4        # a process's private anonymous page (mapped by mapcount PTEs)
    FILE = 5        # page cache of a simulated file (kept after unmap until the file goes)
    SHMEM = 6       # page cache of shared anonymous memory (tmpfs-like; Shmem in meminfo)
    PAGETABLE = 7   # one page of a process's page tables (512 entries)
    OFFLINE = 8     # RAM of a memory block that is offline (hot-added or offlined): no zone's
    BALLOON = 9     # taken by the balloon driver and given to the host (PG_offline)
    HWPOISON = 10   # a frame found faulty (hard_offline_page): never handed out again
    HUGETLB = 11    # a frame of a hugetlb pool page (pmm/hugetlb.py): an order-9 block,
                    # allocated (not free), unmapped, on no LRU list, never migrated


class MigrateType(IntEnum):
    UNMOVABLE = 0
    MOVABLE = 1
    RECLAIMABLE = 2
    HIGHATOMIC = 3
    CMA = 4
    ISOLATE = 5


MIGRATE_NAMES = ("Unmovable", "Movable", "Reclaimable", "HighAtomic", "CMA", "Isolate")
NR_MIGRATE = len(MIGRATE_NAMES)


class FrameTable:
    """The per-frame columns for pfns [0, max_pfn)."""

    def __init__(self, max_pfn: int):
        if max_pfn >= NIL:
            raise ValueError(f"FrameTable: {max_pfn} frames do not fit 32-bit frame links")
        self.max_pfn = max_pfn
        # array(typecode, bytes(n)) is a calloc'd source copied once: fast and compact.
        self.flags = array("H", bytes(2 * max_pfn))          # all NOPAGE
        self.content = array("Q", bytes(8 * max_pfn))
        self.mapcount = array("H", bytes(2 * max_pfn))
        self.rmap = array("Q", bytes(8 * max_pfn))
        self.swp = array("I", bytes(4 * max_pfn))
        self.lru_prev = array("I", b"\xff" * (4 * max_pfn))
        self.lru_next = array("I", b"\xff" * (4 * max_pfn))
        nr_pb = -(-max_pfn // PAGEBLOCK_PAGES)
        self.pb_zone = bytearray(nr_pb)
        self.pb_mt = bytearray([MigrateType.MOVABLE]) * nr_pb

    # --- vectorised views (for the rare slow paths: boot, constrained scans, renders)

    def flags_np(self) -> np.ndarray:
        return np.frombuffer(self.flags, dtype=np.uint16)

    def content_np(self) -> np.ndarray:
        return np.frombuffer(self.content, dtype=np.uint64)

    def mapcount_np(self) -> np.ndarray:
        return np.frombuffer(self.mapcount, dtype=np.uint16)

    def rmap_np(self) -> np.ndarray:
        return np.frombuffer(self.rmap, dtype=np.uint64)

    def pb_zone_np(self) -> np.ndarray:
        return np.frombuffer(self.pb_zone, dtype=np.uint8)

    def grow(self, max_pfn: int) -> None:
        """Hot-add: cover pfns up to max_pfn (the new frames NOPAGE). The columns grow in
        place, so references to them stay good."""
        extra = max_pfn - self.max_pfn
        if extra <= 0:
            return
        if max_pfn >= NIL:
            raise ValueError(f"FrameTable: {max_pfn} frames do not fit 32-bit frame links")
        for col, fill in ((self.flags, 0), (self.content, 0), (self.mapcount, 0),
                          (self.rmap, 0), (self.swp, 0), (self.lru_prev, 0xFF),
                          (self.lru_next, 0xFF)):
            col.frombytes(bytes([fill]) * (col.itemsize * extra))
        nr_pb = -(-max_pfn // PAGEBLOCK_PAGES)
        more = nr_pb - len(self.pb_zone)
        self.pb_zone.extend(bytes(more))
        self.pb_mt.extend(bytes([MigrateType.MOVABLE]) * more)
        self.max_pfn = max_pfn

    def set_type_range(self, start: int, end: int, ptype: PageType) -> None:
        """Boot-time: stamp [start, end) with a type, clearing other flag bits."""
        self.flags_np()[start:end] = int(ptype)

    def type_of(self, pfn: int) -> PageType:
        return PageType(self.flags[pfn] & TYPE_MASK)

    def host_bytes(self) -> int:
        """Host memory held by the columns (what a frame costs the simulator)."""
        cols = (self.flags, self.content, self.mapcount, self.rmap, self.swp, self.lru_prev,
                self.lru_next)
        return sum(c.itemsize * len(c) for c in cols) + len(self.pb_zone) + len(self.pb_mt)


RMAP_INDEX_BITS = 36
RMAP_INDEX_MASK = (1 << RMAP_INDEX_BITS) - 1


# Kernel users whose frames can be migrated (the owner part of a KERNEL or BALLOON frame's rmap).
KOWNER_ZSWAP = 1
KOWNER_BALLOON = 2


def rmap_word(owner: int, index: int) -> int:
    return (owner << RMAP_INDEX_BITS) | index
