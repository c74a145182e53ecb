"""zswap: a compressed pool in RAM in front of the swap devices (mm/zswap.c).

A page being swapped out gets its swap slot as always; zswap then tries to
keep it compressed in RAM instead of writing it to the device. A later
swap-in finds it there (zswpin, no device read: a minor fault); when the
pool is full, the oldest pages in it are written on to their slots on the
device (zswpwb, and pswpout, since that is when the device is written).

    statistics   stored pages (meminfo Zswapped) and the pool's compressed
                 bytes; the pool lives in real frames taken from the page
                 allocator (meminfo Zswap, what zswap costs in RAM)
    tunables     enabled, max_pool_percent (of RAM, default 20); a store that
                 would pass the limit first writes the oldest pages back
    compression  simulated: a page's compressed size is PAGE / ratio, the
                 ratio being its owner's (each workload has one), varied
                 +-25% by the page's content; a page of zeros is "same
                 filled" and costs nothing; a page that would not shrink
                 is rejected and goes to the device
    LRU          a ring of the slots in the order they were stored (with
                 lazy removal: a slot's zpos says where its live entry is)

The page's value itself stays in the swap area's data array: whether it is
"in the pool" or "on the device" is the slot's zsize. Callers hold the
engine lock.
"""
from __future__ import annotations

from array import array

from ..pmm.frames import KOWNER_ZSWAP, MigrateType, PageType, rmap_word
from ..pmm.zone import ZONE_MOVABLE
from ..stats import VmEvent
from ..units import PAGE_SIZE
from .swap import pack, unpack

DEFAULT_RATIO = 3.0


def compressed_size(value: int, ratio: float) -> int:
    """Bytes a page of this content compresses to (0 for a same-filled page of zeros)."""
    if value == 0:
        return 0
    h = ((value * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) >> 54        # 0..1023
    size = int(PAGE_SIZE / ratio * (0.75 + h / 2048))
    return max(16, size)


class Zswap:
    def __init__(self, swap, pmm, events, total_ram_pages, *, enabled: bool = True,
                 max_pool_percent: int = 20):
        self.swap = swap
        self.pmm = pmm
        self.events = events
        self.total_ram_pages = total_ram_pages      # callable: RAM pages now
        self.enabled = enabled
        self.max_pool_percent = max_pool_percent
        self.stored_pages = 0
        self.same_filled = 0
        self.pool_bytes = 0
        self.frames = array("I")                   # the pool's frames (KERNEL pages)
        self.ring = array("I")                     # stored slots, oldest first (lazy removal)
        self.ring_head = 0
        self.ring_base = 0                         # absolute position of ring[0]
        self.rejected = 0

    # ------------------------------------------------------------------

    def max_pool_bytes(self) -> int:
        return self.total_ram_pages() * self.max_pool_percent // 100 * PAGE_SIZE

    def pool_pages(self) -> int:
        return len(self.frames)

    def store(self, area, off: int, value: int, ratio: float) -> bool:
        """Keep slot off's page (content value) compressed; False: write it to the device."""
        if not self.enabled:
            return False
        size = compressed_size(value, ratio)
        if size >= PAGE_SIZE:
            self.rejected += 1
            return False
        limit = self.max_pool_bytes()
        if self.pool_bytes + size > limit:
            self._shrink(limit - size)            # the oldest go on to the device
            if self.pool_bytes + size > limit:
                self.rejected += 1
                return False
        if not self._fit(self.pool_bytes + size):
            self.rejected += 1
            return False
        self.pool_bytes += size
        self.stored_pages += 1
        if size == 0:
            self.same_filled += 1
        area.zsize[off] = size + 1
        area.in_zswap += 1
        area.zpos[off] = self.ring_base + len(self.ring)
        self.ring.append(pack(area.type, off))
        self._compact()
        self.events[VmEvent.ZSWPOUT] += 1
        return True

    def load(self, area, off: int) -> None:
        """The page is read back (zswpin); the pool lets go of it (an exclusive load)."""
        self.events[VmEvent.ZSWPIN] += 1
        self.invalidate(area, off)

    def invalidate(self, area, off: int) -> None:
        """The slot's page is no longer wanted from the pool."""
        size = area.zsize[off] - 1
        area.zsize[off] = 0
        area.in_zswap -= 1
        self.stored_pages -= 1
        if size == 0:
            self.same_filled -= 1
        self.pool_bytes -= size
        self._fit(self.pool_bytes)

    # ------------------------------------------------------------------

    def _fit(self, nbytes: int) -> bool:
        # Pool frames are movable, as zswap asks zsmalloc for __GFP_HIGHMEM | __GFP_MOVABLE
        # pages (so they may sit in ZONE_MOVABLE, and migrate); taking them as unmovable made
        # every refill steal a pageblock.
        """Hold exactly the frames nbytes needs: take or give back frames. False if none left."""
        need = -(-nbytes // PAGE_SIZE)
        while len(self.frames) < need:
            pfn = self.pmm.try_alloc_page(node=0, cpu=0, highest=ZONE_MOVABLE,
                                          mt=MigrateType.MOVABLE, ptype=PageType.KERNEL)
            if pfn is None:
                return False
            self.pmm.ft.rmap[pfn] = rmap_word(KOWNER_ZSWAP, len(self.frames))   # movable
            self.frames.append(pfn)
        while len(self.frames) > need:
            self.pmm.free_page(self.frames.pop(), cpu=0)
        return True

    def migrate_frame(self, old: int, new: int, index: int) -> None:
        """Page migration moved pool frame old (the index-th) to new."""
        self.frames[index] = new

    def _shrink(self, target: int) -> None:
        """Write the oldest pages on to their device until the pool holds at most target bytes."""
        while self.pool_bytes > max(target, 0):
            found = self._pop_oldest()
            if found is None:
                return
            area, off = found
            self.invalidate(area, off)
            self.events[VmEvent.ZSWPWB] += 1
            self.events[VmEvent.PSWPOUT] += 1
            self.events[VmEvent.PGPGOUT] += PAGE_SIZE // 1024

    def _pop_oldest(self):
        ring = self.ring
        while self.ring_head < len(ring):
            word = ring[self.ring_head]
            pos = self.ring_base + self.ring_head
            self.ring_head += 1
            t, off = unpack(word)
            area = self.swap.areas[t] if t < len(self.swap.areas) else None
            if area is not None and area.zsize[off] and area.zpos[off] == pos:
                return area, off
        return None

    def _compact(self) -> None:
        """Drop the ring's dead prefix and stale entries once they outnumber the live ones."""
        ring = self.ring
        if len(ring) - self.ring_head <= 2 * self.stored_pages + 1024:
            return
        live = array("I")
        base = self.ring_base + len(ring)           # the rebuilt ring starts here
        for k in range(self.ring_head, len(ring)):
            word = ring[k]
            t, off = unpack(word)
            area = self.swap.areas[t] if t < len(self.swap.areas) else None
            if area is not None and area.zsize[off] and area.zpos[off] == self.ring_base + k:
                area.zpos[off] = base + len(live)
                live.append(word)
        self.ring = live
        self.ring_base = base
        self.ring_head = 0
