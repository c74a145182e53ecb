"""Page migration: moving a page's content to another frame under its users (mm/migrate.c).

Memory offlining, soft page offlining and compaction all need a frame emptied
while whatever it holds stays where its users look for it. migrate_page(old,
new) copies the frame's state to a newly allocated frame and repoints every
reference to it:

    ANON         every PTE that maps it (found through the reverse map), and
                 its swap-cache slot if it has one
    FILE, SHMEM  its file's page-cache entry and every PTE mapping it
    KERNEL,      a kernel user that can move its frames (zswap's pool, the
    BALLOON      balloon) is named by the frame's rmap word (KOWNER_* and an
                 index) and told: owner.migrate_frame(old, new, index)

The LRU position, the flags (dirty, referenced, swap cache), the map count,
the reverse-map word and the content go with the page; the per-zone gauges
move from old's zone to new's. Page tables, RESERVED frames, unmovable
kernel allocations (rmap 0) and frames pinned by a fault in progress cannot
move (movable() says which). The caller decides what becomes of old: freed
(compaction), taken offline (hot-remove) or poisoned (soft offline).
"""
from __future__ import annotations

from . import pte as P
from ..pmm.frames import (ACTIVE, DIRTY as PG_DIRTY, LRU, MigrateType, REFERENCED,
                          RMAP_INDEX_BITS, RMAP_INDEX_MASK, SWAPCACHE, TYPE_MASK, PageType)
from ..pmm.zone import NR_ZONES, ZONE_MOVABLE
from ..stats import PageStat, VmEvent

ANON = int(PageType.ANON)
FILE = int(PageType.FILE)
SHMEM = int(PageType.SHMEM)
KERNEL = int(PageType.KERNEL)
BALLOON = int(PageType.BALLOON)
USER = (ANON, FILE, SHMEM)


class MigrateMixin:
    # The host class (Vmm) provides ft, pmm, lru, gauges, inodes, events, pinned,
    # mappings(), slot_of(), and kowners (KOWNER_* -> the kernel user of such frames).

    def movable(self, pfn: int) -> bool:
        """Can migrate_page move this in-use frame?"""
        ptype = self.ft.flags[pfn] & TYPE_MASK
        if pfn in self.pinned:
            return False
        if ptype in USER:
            return True
        if ptype in (KERNEL, BALLOON):
            return (self.ft.rmap[pfn] >> RMAP_INDEX_BITS) in self.kowners
        return False

    def _state_gauges(self, pfn: int) -> list:
        """The gauges that count this frame (besides its LRU list's)."""
        ft = self.ft
        f = ft.flags[pfn]
        ptype = f & TYPE_MASK
        mapped = ft.mapcount[pfn] > 0
        if ptype == ANON:
            out = [PageStat.ANON] if mapped else []
            if f & SWAPCACHE:
                out.append(PageStat.SWAPCACHE)
            return out
        out = [PageStat.FILE]
        if ptype == SHMEM:
            out.append(PageStat.SHMEM)
        if mapped:
            out.append(PageStat.FILE_MAPPED)
        if ptype == FILE and f & PG_DIRTY:
            out.append(PageStat.FILE_DIRTY)
        return out

    def migration_target(self, old: int, *, node: int | None = None) -> int | None:
        """A free frame to move old's page to: on old's node (or node) if it can, never
        below a min watermark, never by reclaim. None if there is none. Every movable page
        may live in ZONE_MOVABLE (zswap's pool pages are __GFP_HIGHMEM | __GFP_MOVABLE)."""
        ft = self.ft
        ptype = ft.flags[old] & TYPE_MASK
        if node is None:
            node = ft.pb_zone[old >> 9] // NR_ZONES
        return self.pmm.try_alloc_page(node=node, cpu=0, highest=ZONE_MOVABLE,
                                       mt=MigrateType.MOVABLE, ptype=PageType(ptype))

    def migrate_page(self, old: int, new: int) -> None:
        """Move the page in frame old to frame new (allocated with old's type, off every
        list). old keeps its type and nothing else: the caller disposes of it."""
        ft = self.ft
        ptype = ft.flags[old] & TYPE_MASK
        maps = self.mappings(old) if ptype in USER else ()    # (a THP is split here)
        f = ft.flags[old]
        word = ft.rmap[old]
        ft.content[new] = ft.content[old]
        ft.rmap[new] = word
        if ptype not in USER:
            ft.flags[new] = f
            ft.rmap[old] = 0
            self.kowners[word >> RMAP_INDEX_BITS].migrate_frame(old, new, word & RMAP_INDEX_MASK)
            self.events[VmEvent.PGMIGRATE_SUCCESS] += 1
            return
        g_old = self.gauges[ft.pb_zone[old >> 9]]
        g_new = self.gauges[ft.pb_zone[new >> 9]]
        for stat in self._state_gauges(old):
            g_old[stat] -= 1
            g_new[stat] += 1
        ft.flags[new] = f & ~(LRU | ACTIVE | REFERENCED)
        ft.mapcount[new] = ft.mapcount[old]
        ft.swp[new] = ft.swp[old]
        for _proc, _va, t, i in maps:
            t[i] = P.with_pfn(t[i], new)          # a PROT_NONE entry keeps its PFN inverted
        if f & SWAPCACHE:
            area, off = self.slot_of(old)
            area.cache[off] = new + 1
        elif ptype != ANON:
            self.inodes[word >> RMAP_INDEX_BITS].cache[word & RMAP_INDEX_MASK] = new
        self.lru.replace(old, new)
        ft.flags[old] = ptype
        ft.mapcount[old] = 0
        ft.rmap[old] = 0
        ft.swp[old] = 0
        self.events[VmEvent.PGMIGRATE_SUCCESS] += 1
