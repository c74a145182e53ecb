"""Zone: one zone of one node — its buddy free lists and its per-cpu free-page stacks.

A zone hands out frames in two ways, as Linux's page_alloc.c does:
- single pages through per-cpu free-page stacks (PerCpuPages): O(1) push and
  pop; an empty stack is refilled with `batch` pages from the buddy lists, a
  stack grown past `high` gives `batch` pages back;
- blocks of 2^order frames through buddy free lists, one per (order, migrate
  type). Freeing a block merges it with its free buddy as far as it can, so
  the lists always hold maximal blocks and `buddyinfo` is real.

Invariant: a free block sits on the list of its pageblock's migrate type
(frames.pb_mt), and a block of order >= PAGEBLOCK_ORDER spans pageblocks of
one type. The zone counts every free frame it holds, in the buddy lists or on
a per-cpu stack, in `free_pages`. Callers hold the engine lock.
"""
from __future__ import annotations

from array import array

from .frames import (BUDDY, MAX_ORDER, NIL, NR_MIGRATE, NR_ORDERS, ORDER_MASK, ORDER_SHIFT,
                     PAGEBLOCK_ORDER, PAGEBLOCK_PAGES, PCP, POISON, FrameTable, MigrateType,
                     PageType)
from ..errors import bug_on
from ..stats import zone_counters

ZONE_NAMES = ("DMA", "DMA32", "Normal", "Movable", "Device")
NR_ZONES = len(ZONE_NAMES)
ZONE_DMA, ZONE_DMA32, ZONE_NORMAL, ZONE_MOVABLE, ZONE_DEVICE = range(NR_ZONES)

NR_PCP_TYPES = 3        # per-cpu stacks exist for Unmovable, Movable, Reclaimable
FREE = int(PageType.FREE)

# Which other lists a request may take from when its own is empty (Linux fallbacks[]).
FALLBACKS = {
    MigrateType.UNMOVABLE: (MigrateType.RECLAIMABLE, MigrateType.MOVABLE),
    MigrateType.MOVABLE: (MigrateType.RECLAIMABLE, MigrateType.UNMOVABLE),
    MigrateType.RECLAIMABLE: (MigrateType.UNMOVABLE, MigrateType.MOVABLE),
}


class PerCpuPages:
    """One CPU's free-page stacks for one zone (Linux's per_cpu_pages)."""

    def __init__(self, cpu: int):
        self.cpu = cpu
        self.stacks = [array("I") for _ in range(NR_PCP_TYPES)]   # LIFO of pfns, hot on top
        self.count = 0            # frames on all stacks
        self.high = 0             # drain back to the buddy lists above this
        self.batch = 1            # frames moved per refill or drain
        self.high_min = 0
        self.high_max = 0


class Zone:
    def __init__(self, ft: FrameTable, node_id: int, zone_idx: int, start_pfn: int, end_pfn: int,
                 cpus: tuple[int, ...]):
        self.ft = ft
        self.node_id = node_id
        self.idx = zone_idx
        self.name = ZONE_NAMES[zone_idx]
        self.zid = node_id * NR_ZONES + zone_idx       # global zone id (frames.pb_zone)
        self.start_pfn = start_pfn                      # span [start_pfn, end_pfn), holes included
        self.end_pfn = end_pfn
        self.present_pages = 0                          # RAM frames inside the span
        self.managed_pages = 0                          # present minus what the kernel reserved
        self.free_pages = 0                             # buddy + per-cpu stacks
        # buddy free lists: index order * NR_MIGRATE + mt
        self.head = array("I", [NIL]) * (NR_ORDERS * NR_MIGRATE)
        self.nr_free = array("Q", [0]) * (NR_ORDERS * NR_MIGRATE)   # blocks per list
        self.pcp = {cpu: PerCpuPages(cpu) for cpu in cpus}
        # watermarks (pages) and lowmem protection, set by pmm.watermarks
        self.wmark_min = self.wmark_low = self.wmark_high = self.wmark_promo = 0
        self.lowmem_reserve = [0] * NR_ZONES
        self.stats = zone_counters()                    # ZoneStat events

    @property
    def spanned_pages(self) -> int:
        return self.end_pfn - self.start_pfn

    @property
    def populated(self) -> bool:
        return self.present_pages > 0

    def __repr__(self) -> str:
        return f"<Zone node{self.node_id}/{self.name} {self.start_pfn:#x}-{self.end_pfn:#x}>"

    # ------------------------------------------------------------------
    # buddy free lists (links threaded through content[]: prev << 32 | next)
    # ------------------------------------------------------------------

    def _add_block(self, pfn: int, order: int, mt: int) -> None:
        ft = self.ft
        li = order * NR_MIGRATE + mt
        old = self.head[li]
        ft.content[pfn] = (NIL << 32) | old
        if old != NIL:
            ft.content[old] = (pfn << 32) | (ft.content[old] & NIL)
        self.head[li] = pfn
        self.nr_free[li] += 1
        ft.flags[pfn] = FREE | BUDDY | (order << ORDER_SHIFT)

    def _del_block(self, pfn: int, order: int, mt: int) -> None:
        ft = self.ft
        li = order * NR_MIGRATE + mt
        links = ft.content[pfn]
        prev, nxt = links >> 32, links & NIL
        if prev == NIL:
            bug_on(self.head[li] != pfn, "Zone._del_block", f"pfn {pfn:#x} not on list {order}/{mt}")
            self.head[li] = nxt
        else:
            ft.content[prev] = (ft.content[prev] & ~NIL & 0xFFFFFFFFFFFFFFFF) | nxt
        if nxt != NIL:
            ft.content[nxt] = (prev << 32) | (ft.content[nxt] & NIL)
        self.nr_free[li] -= 1
        ft.flags[pfn] = FREE
        ft.content[pfn] = POISON

    def _expand(self, pfn: int, low: int, high: int, mt: int) -> None:
        """Put the upper halves of block (pfn, high) back, keeping (pfn, low)."""
        while high > low:
            high -= 1
            self._add_block(pfn + (1 << high), high, mt)

    def free_block(self, pfn: int, order: int) -> None:
        """Give a block back to the buddy lists, merging with free buddies (__free_one_page).

        The frames must already be FREE (not on a per-cpu stack).
        """
        ft = self.ft
        flags = ft.flags
        pb_mt = ft.pb_mt
        mt = pb_mt[pfn >> PAGEBLOCK_ORDER]
        start, end = self.start_pfn, self.end_pfn
        while order < MAX_ORDER:
            buddy = pfn ^ (1 << order)
            if buddy < start or buddy >= end:
                break
            bf = flags[buddy]
            if not (bf & BUDDY) or (bf & ORDER_MASK) >> ORDER_SHIFT != order:
                break
            buddy_mt = pb_mt[buddy >> PAGEBLOCK_ORDER]
            if buddy_mt == MigrateType.ISOLATE or mt == MigrateType.ISOLATE:
                break
            self._del_block(buddy, order, buddy_mt)
            if order >= PAGEBLOCK_ORDER and buddy_mt != mt:
                self._set_pageblocks(buddy, order, mt)   # the merged block is one type
            pfn &= buddy
            order += 1
        self._add_block(pfn, order, mt)

    def _set_pageblocks(self, pfn: int, order: int, mt: int) -> None:
        first = pfn >> PAGEBLOCK_ORDER
        n = max(1, (1 << order) >> PAGEBLOCK_ORDER)
        for pb in range(first, first + n):
            self.ft.pb_mt[pb] = mt

    def _rmqueue_smallest(self, order: int, mt: int) -> int | None:
        head = self.head
        for current in range(order, NR_ORDERS):
            pfn = head[current * NR_MIGRATE + mt]
            if pfn != NIL:
                self._del_block(pfn, current, mt)
                self._expand(pfn, order, current, mt)
                return pfn
        return None

    def _rmqueue_fallback(self, order: int, mt: int) -> int | None:
        """Take from another migrate type's lists, largest block first (__rmqueue_fallback).

        A large enough steal claims the whole pageblock for the requesting type,
        which is how Linux keeps unmovable allocations bunched together.
        """
        for current in range(MAX_ORDER, order - 1, -1):
            for fmt in FALLBACKS[MigrateType(mt)]:
                pfn = self.head[current * NR_MIGRATE + fmt]
                if pfn == NIL:
                    continue
                if current >= PAGEBLOCK_ORDER:
                    self._del_block(pfn, current, fmt)
                    self._set_pageblocks(pfn, current, mt)
                    self._expand(pfn, order, current, mt)
                    return pfn
                if (current >= PAGEBLOCK_ORDER // 2 or mt != MigrateType.MOVABLE) \
                        and self._try_claim_pageblock(pfn, mt):
                    return self._rmqueue_smallest(order, mt)
                self._del_block(pfn, current, fmt)
                self._expand(pfn, order, current, fmt)
                return pfn
        return None

    def _try_claim_pageblock(self, pfn: int, mt: int) -> bool:
        """Retype the pageblock holding pfn if at least half of it is free, moving its free blocks."""
        ft = self.ft
        pb_start = pfn & ~(PAGEBLOCK_PAGES - 1)
        blocks = []
        p = pb_start
        while p < pb_start + PAGEBLOCK_PAGES:
            f = ft.flags[p]
            if f & BUDDY:
                order = (f & ORDER_MASK) >> ORDER_SHIFT
                blocks.append((p, order))
                p += 1 << order
            else:
                p += 1
        if sum(1 << o for _, o in blocks) < PAGEBLOCK_PAGES // 2:
            return False
        old = ft.pb_mt[pb_start >> PAGEBLOCK_ORDER]
        for p, order in blocks:
            self._del_block(p, order, old)
        ft.pb_mt[pb_start >> PAGEBLOCK_ORDER] = mt
        for p, order in blocks:
            self._add_block(p, order, mt)
        return True

    def rmqueue(self, order: int, mt: int) -> int | None:
        """Take a block of 2^order frames off the buddy lists; None if there is none."""
        pfn = self._rmqueue_smallest(order, mt)
        if pfn is None:
            pfn = self._rmqueue_fallback(order, mt)
        return pfn

    def has_free_block(self, order: int) -> bool:
        nr_free = self.nr_free
        return any(nr_free[o * NR_MIGRATE + mt] for o in range(order, NR_ORDERS)
                   for mt in range(NR_MIGRATE) if mt != MigrateType.ISOLATE)

    # ------------------------------------------------------------------
    # per-cpu free-page stacks
    # ------------------------------------------------------------------

    def pcp_alloc(self, cpu: int, mt: int) -> int | None:
        """Pop one free frame off this CPU's stack, refilling it from the buddy lists."""
        pcp = self.pcp[cpu]
        stack = pcp.stacks[mt]
        if not stack:
            flags = self.ft.flags
            for _ in range(pcp.batch):
                pfn = self.rmqueue(0, mt)
                if pfn is None:
                    break
                flags[pfn] = FREE | PCP
                stack.append(pfn)
            pcp.count += len(stack)
            if not stack:
                return None
        pfn = stack.pop()
        pcp.count -= 1
        return pfn

    def pcp_free(self, cpu: int, pfn: int) -> None:
        """Push a freed frame on this CPU's stack; past `high`, give a batch back."""
        pcp = self.pcp[cpu]
        mt = self.ft.pb_mt[pfn >> PAGEBLOCK_ORDER]
        if mt >= NR_PCP_TYPES:                      # isolated or special: straight to buddy
            self.ft.flags[pfn] = FREE
            self.free_block(pfn, 0)
            return
        self.ft.flags[pfn] = FREE | PCP
        pcp.stacks[mt].append(pfn)
        pcp.count += 1
        if pcp.count > pcp.high:
            self._pcp_drain(pcp, pcp.batch)

    def _pcp_drain(self, pcp: PerCpuPages, nr: int) -> None:
        """Give up to nr frames back to the buddy lists, coldest (bottom of stack) first."""
        flags = self.ft.flags
        while nr > 0 and pcp.count:
            for stack in pcp.stacks:
                if not stack or nr == 0:
                    continue
                take = min(nr, len(stack))
                cold = stack[:take]
                del stack[:take]
                pcp.count -= take
                nr -= take
                for pfn in cold:
                    flags[pfn] = FREE
                    self.free_block(pfn, 0)

    def drain_pcp(self) -> None:
        """Empty every CPU's stacks into the buddy lists (drain_all_pages)."""
        for pcp in self.pcp.values():
            self._pcp_drain(pcp, pcp.count)

    # ------------------------------------------------------------------
    # ranges (constrained allocator, boot)
    # ------------------------------------------------------------------

    def block_containing(self, pfn: int) -> tuple[int, int]:
        """(head, order) of the buddy block holding free frame pfn."""
        flags = self.ft.flags
        for order in range(NR_ORDERS):
            h = pfn & ~((1 << order) - 1)
            f = flags[h]
            if f & BUDDY:
                o = (f & ORDER_MASK) >> ORDER_SHIFT
                if pfn < h + (1 << o):
                    return h, o
        bug_on(True, "Zone.block_containing", f"pfn {pfn:#x} is in no free block")

    def take_range(self, start: int, end: int) -> None:
        """Take the free frames [start, end) off the buddy lists (per-cpu stacks drained first).

        Blocks that stick out of the range are split and their outside parts go back.
        """
        p = start
        while p < end:
            head, order = self.block_containing(p)
            mt = self.ft.pb_mt[head >> PAGEBLOCK_ORDER]
            self._del_block(head, order, mt)
            block_end = head + (1 << order)
            self._free_span(head, start, mt)
            self._free_span(end, block_end, mt)
            p = block_end
        self.free_pages -= end - start

    def _free_span(self, start: int, end: int, mt: int) -> None:
        """Put [start, end) on the lists as maximal aligned blocks, without merging."""
        p = start
        while p < end:
            order = min(MAX_ORDER, (p & -p).bit_length() - 1 if p else MAX_ORDER)
            while p + (1 << order) > end:
                order -= 1
            self._add_block(p, order, mt)
            p += 1 << order

    def add_free_span(self, start: int, end: int) -> None:
        """Boot and hot-add: hand [start, end) to the buddy lists as maximal aligned blocks."""
        p = start
        while p < end:
            order = MAX_ORDER if p == 0 else min(MAX_ORDER, (p & -p).bit_length() - 1)
            while p + (1 << order) > end:
                order -= 1
            self.free_block(p, order)
            p += 1 << order
        self.free_pages += end - start

    # ------------------------------------------------------------------
    # views
    # ------------------------------------------------------------------

    def free_blocks_by_order(self) -> list[int]:
        """Free blocks per order, all migrate types (buddyinfo)."""
        return [sum(self.nr_free[o * NR_MIGRATE + mt] for mt in range(NR_MIGRATE))
                for o in range(NR_ORDERS)]

    def free_blocks(self, order: int, mt: int) -> int:
        return self.nr_free[order * NR_MIGRATE + mt]

    def pcp_pages(self) -> int:
        return sum(p.count for p in self.pcp.values())
