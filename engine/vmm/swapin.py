"""Swap on the VMM's side: the swap cache, the swap-in fault, readahead, swapoff's unuse.

mm/swap_state.c and the swap half of mm/memory.c (do_swap_page):

- A frame in the swap cache holds the page of one swap slot (SWAPCACHE in
  its flags, the slot in the swp column, the frame in the slot's cache
  entry). Reclaim puts a page there before writing it; a swap-in leaves it
  there, clean, so that evicting it again needs no write; readahead and
  prefetch put pages there that no process maps yet. A page leaves the
  cache when it is written to by its only user, when swap is more than half
  full, when reclaim frees it, or when its slot goes.
- do_swap_page: a not-present entry holding a swap entry. The page comes
  from the swap cache (a minor fault), else from zswap or the device (a
  major fault; the device read also reads the neighbouring slots ahead,
  aligned, in a window that adapts to how many read-ahead pages were used
  since the last read: 1 page with no hits unless the slot follows the
  previous one, else hits + 2 rounded up to a power of two, at most
  2^page-cluster, never less than half the previous window
  (swapin_nr_pages). The entry becomes present; the slot
  loses the reference the entry held. A page only this process holds is
  mapped writable (a write fault takes it out of the swap cache at once);
  one that others still hold in their swap entries is mapped read-only, and
  a write copies it (do_wp_page).
- Refaults: every slot keeps the eviction clock of when its page was
  evicted; a page read back within (active lists' size) evictions of that
  was part of the working set and goes straight to the active list
  (mm/workingset.c, simplified to one clock per machine).
"""
from __future__ import annotations

import numpy as np

from . import pte as P
from .vma import PROT_BITS
from ..errors import bug_on
from ..pmm.frames import (DIRTY as PG_DIRTY, RMAP_INDEX_BITS, SWAPCACHE, MigrateType, PageType)
from ..pmm.zone import ZONE_MOVABLE
from ..reclaim.swap import COUNT_MASK, HAS_CACHE, pack, unpack
from ..reclaim.zswap import DEFAULT_RATIO
from ..stats import PageStat, VmEvent

PFN_MASK = P.PFN_MASK
U64 = np.uint64


class SwapInMixin:
    # The host class (Vmm) provides ft, pmm, swap, lru, events, gauges, mms, trace, psi,
    # _alloc(), _pte_bits(), _gauge(), _wp_fault(), leaf_tables(), page_cluster.

    # Readahead's memory (swapin_readahead_hits, prev_offset, last_readahead_pages).
    ra_hits = 0
    ra_prev_off = 0
    ra_last_win = 0

    # --- the swap cache ----------------------------------------------------

    def slot_of(self, pfn: int):
        """(area, offset) of a swap-cache frame's slot."""
        swp_type, off = unpack(self.ft.swp[pfn])
        return self.swap.areas[swp_type], off

    def swapcache_add(self, pfn: int, area, off: int) -> None:
        ft = self.ft
        ft.flags[pfn] |= SWAPCACHE
        ft.swp[pfn] = pack(area.type, off)
        area.cache[off] = pfn + 1
        area.count[off] |= HAS_CACHE
        self._gauge(pfn, PageStat.SWAPCACHE, 1)

    def swapcache_del(self, pfn: int) -> None:
        """The frame leaves the swap cache; its slot goes too if no entry holds it."""
        ft = self.ft
        area, off = self.slot_of(pfn)
        bug_on(area.cache[off] != pfn + 1, "swapcache", f"pfn {pfn:#x} is not slot {off}'s page")
        ft.flags[pfn] &= ~(SWAPCACHE | PG_DIRTY)
        ft.swp[pfn] = 0
        area.cache[off] = 0
        c = area.count[off] & ~HAS_CACHE
        area.count[off] = c
        self._gauge(pfn, PageStat.SWAPCACHE, -1)
        if c == 0:
            self.swap.discard(area, off)

    def free_orphan_cache(self, area, off: int) -> None:
        """No swap entry holds the slot any more: a swap-cache page nobody maps goes, and its
        slot with it (free_swap_and_cache)."""
        pfn = area.cache[off] - 1
        if pfn >= 0 and not self.ft.mapcount[pfn] and pfn not in self.pinned:
            self.free_anon_frame(pfn)

    def free_anon_frame(self, pfn: int) -> None:
        """An anonymous frame no entry maps any more goes back to the allocator."""
        self.lru.delete(pfn)
        if self.ft.flags[pfn] & SWAPCACHE:
            self.swapcache_del(pfn)
        self.pmm.free_page(pfn, cpu=0)

    def release_unmapped_anon(self, pfn: int) -> None:
        """The last entry mapping an anonymous frame went: free it, unless it is in the swap
        cache for other processes that still hold its slot (they will find it there)."""
        ft = self.ft
        if ft.flags[pfn] & SWAPCACHE:
            area, off = self.slot_of(pfn)
            if area.count[off] & COUNT_MASK:
                return
        self.free_anon_frame(pfn)

    # --- do_swap_page ------------------------------------------------------

    def _swap_fault(self, proc, vma, va: int, t, i: int, e: int, write: bool) -> int:
        ft = self.ft
        swp_type, off = P.swp_type(e), P.swp_offset(e)
        bug_on(swp_type >= P.MAX_SWAPFILES or swp_type >= len(self.swap.areas)
               or self.swap.areas[swp_type] is None, "fault",
               f"entry {e:#018x} at {va:#x} names no swap area")
        area = self.swap.areas[swp_type]
        pfn = area.cache[off] - 1
        if pfn >= 0:
            if ft.mapcount[pfn] == 0 and not ft.rmap[pfn]:
                self.events[VmEvent.SWAP_RA_HIT] += 1        # read ahead, now wanted
                self.ra_hits += 1
            proc.minflt += 1
            how = "swapcache"
        else:
            zswapped = area.zsize[off] != 0
            pfn = self._swapin_read(proc, area, off)
            proc.majflt += 1
            self.events[VmEvent.PGMAJFAULT] += 1
            how = "zswap" if zswapped else "major"
            if not zswapped:
                self._readahead(proc, area, off)
        self._map_swapped(proc, va, pfn)
        vma.has_anon = True
        self.swap.put(swp_type, off)
        exclusive = not area.count[off] & COUNT_MASK and ft.mapcount[pfn] == 1
        writable = exclusive and vma.writable
        t[i] = (pfn << 12) | self._pte_bits(vma, writable, write and writable)
        self.trace.fault(proc.pid, va, ("write " if write else "read ") + how)
        if exclusive and (write or self.swap.full()):
            self.swapcache_del(pfn)                 # the slot's copy is stale or wanted back
        if write and not writable:
            return self._wp_fault(proc, vma, va, t, i, t[i])
        return pfn

    def _map_swapped(self, proc, va: int, pfn: int) -> None:
        """A swap entry of proc at va gives way to frame pfn (the caller writes the PTE and
        drops the slot reference): map count, owner, rss and swap counts follow."""
        ft = self.ft
        mm = proc.mm
        if ft.mapcount[pfn] == 0:
            self._gauge(pfn, PageStat.ANON, 1)
        ft.mapcount[pfn] += 1
        ft.rmap[pfn] = (proc.anon_family << RMAP_INDEX_BITS) | (va >> 12)
        mm.rss_anon += 1
        mm.swap_ents -= 1

    def _swapin_read(self, proc, area, off: int) -> int:
        """Read slot off into a new frame in the swap cache (from zswap or the device)."""
        pfn = self._alloc(int(PageType.ANON), proc.cpu, proc.node, proc)
        ft = self.ft
        ft.content[pfn] = area.data[off]
        if area.zsize[off]:
            self.swap.zswap.load(area, off)
            ft.flags[pfn] |= PG_DIRTY                # the pool let go: write it again when evicted
            self.psi.stall(proc, self.psi.ZSWAP_LOAD_US)
        else:
            self.events[VmEvent.PSWPIN] += 1
            self.events[VmEvent.PGPGIN] += 4
            self.psi.stall(proc, self.psi.SWAP_READ_US)
        self.swapcache_add(pfn, area, off)
        self._gauge(pfn, PageStat.WS_REFAULT_ANON, 1)
        active = self._refault_active(area.age[off])
        if active:
            self._gauge(pfn, PageStat.WS_ACTIVATE_ANON, 1)
        self.lru.add(pfn, active)
        return pfn

    def _refault_active(self, evicted_at: int) -> bool:
        """Was the page evicted recently enough to count as part of the working set?"""
        distance = (self.eviction_clock - evicted_at) & 0xFFFFFFFF
        active = sum(g[PageStat.ACTIVE_ANON] + g[PageStat.ACTIVE_FILE] for g in self.gauges)
        return distance <= active

    def ra_window(self, off: int) -> int:
        """swapin_nr_pages: how many slots (a power of two) to read around off."""
        most = 1 << self.page_cluster
        if most <= 1:
            return 1
        hits, self.ra_hits = self.ra_hits, 0
        win = hits + 2
        if hits == 0:
            if abs(off - self.ra_prev_off) != 1:
                win = 1
            self.ra_prev_off = off
        else:
            win = 1 << (max(4, win) - 1).bit_length()
        win = max(min(win, most), self.ra_last_win // 2)
        self.ra_last_win = win
        return win

    def _readahead(self, proc, area, off: int) -> None:
        """swap_cluster_readahead: the in-use slots around off in an aligned window of
        ra_window(off) slots, from free memory only: readahead never reclaims (nor takes a
        zone's last frames above min; kswapd refills what it used)."""
        win = self.ra_window(off)
        if win <= 1:
            return
        zone = self.pmm.zonelist(proc.node, ZONE_MOVABLE)[0]
        start = off & ~(win - 1)
        ft = self.ft
        for s in range(max(1, start), min(area.nr_slots + 1, start + win)):
            if s == off or area.cache[s] or area.zsize[s] or not area.count[s] & COUNT_MASK:
                continue
            if zone.free_pages <= zone.wmark_min + win:
                return
            pfn = self.try_alloc_for(proc)
            if pfn is None:
                return
            ft.content[pfn] = area.data[s]
            self.swapcache_add(pfn, area, s)
            self.lru.add(pfn, False)
            self.events[VmEvent.SWAP_RA] += 1
            self.events[VmEvent.PSWPIN] += 1
            self.events[VmEvent.PGPGIN] += 4

    def prefetch(self, area, off: int) -> bool:
        """Read one swapped page back into the swap cache while memory is free (swap prefetch).
        False if there is no room."""
        zone = self.pmm.zonelist(0, ZONE_MOVABLE)[0]
        if zone.free_pages <= 2 * zone.wmark_high:
            return False
        pfn = self.pmm.try_alloc_page(node=0, cpu=0, highest=ZONE_MOVABLE,
                                      mt=MigrateType.MOVABLE, ptype=PageType.ANON)
        if pfn is None:
            return False
        self.ft.content[pfn] = area.data[off]
        if area.zsize[off]:
            self.swap.zswap.load(area, off)
            self.ft.flags[pfn] |= PG_DIRTY
        else:
            self.events[VmEvent.PSWPIN] += 1
            self.events[VmEvent.PGPGIN] += 4
        self.swapcache_add(pfn, area, off)
        self.lru.add(pfn, False)
        return True

    # --- swapoff -----------------------------------------------------------

    def swap_entries_of(self, swp_type: int) -> list:
        """[(proc, va, table, index)] of every PTE holding a swap entry of that area."""
        out = []
        for fam in self.mms.values():
            for proc in fam:
                mm = proc.mm
                if mm is None or not mm.swap_ents:
                    continue
                for vma in mm.vmas:
                    for t, base, lo, hi in self.leaf_tables(mm, vma.start, vma.end, split=False):
                        view = np.frombuffer(t, dtype=U64)[lo:hi]
                        hit = (view != 0) & ((view & U64(P.P | P.PROTNONE)) == 0) & \
                            ((view >> U64(P.SWP_TYPE_SHIFT)) == U64(swp_type))
                        for k in np.flatnonzero(hit).tolist():
                            i = lo + k
                            out.append((proc, base + (i << 12), t, i))
        return out

    def unuse(self, area) -> int | None:
        """try_to_unuse: bring every page of the area back into RAM and map it where its
        entries are. Frames come only from free memory (no reclaim, so nothing is pushed
        out meanwhile): if they run out, every page read so far is let go and None is
        returned, the area untouched. Otherwise returns pages brought in."""
        ft = self.ft
        entries = self.swap_entries_of(area.type)
        slots = sorted({P.swp_offset(t[i]) for _, _, t, i in entries} |
                       {off for off in range(1, area.nr_slots + 1) if area.cache[off]})
        fresh = []
        for off in slots:
            if area.cache[off]:
                continue
            pfn = self.pmm.try_alloc_page(node=0, cpu=0, highest=ZONE_MOVABLE,
                                          mt=MigrateType.MOVABLE, ptype=PageType.ANON)
            if pfn is None:
                for p in fresh:
                    self.free_anon_frame(p)
                return None
            ft.content[pfn] = area.data[off]
            self.swapcache_add(pfn, area, off)
            self.lru.add(pfn, False)
            fresh.append(pfn)
        # Every page is in RAM: from here nothing can fail.
        for pfn in fresh:
            off = self.slot_of(pfn)[1]
            if area.zsize[off]:
                self.events[VmEvent.ZSWPIN] += 1
            else:
                self.events[VmEvent.PSWPIN] += 1
                self.events[VmEvent.PGPGIN] += 4
        for proc, va, t, i in entries:
            off = P.swp_offset(t[i])
            pfn = area.cache[off] - 1
            vma = proc.mm.find(va)
            self._map_swapped(proc, va, pfn)
            e = ((pfn << 12) | self._pte_bits(vma, False, False)) & ~P.ACCESSED   # unuse_pte: old
            t[i] = e if vma.flags & PROT_BITS else P.make_protnone(e)
            area.count[off] -= 1
        for off in slots:
            pfn = area.cache[off] - 1
            if ft.flags[pfn] & PG_DIRTY:
                ft.flags[pfn] &= ~PG_DIRTY
            self.swapcache_del(pfn)
            if ft.mapcount[pfn] == 0:
                self.free_anon_frame(pfn)
        return len(fresh)

    # --- writing pages out (reclaim's add_to_swap and swap_writepage) -------

    def add_to_swap(self, pfn: int) -> bool:
        """Give an anonymous frame a swap slot (it enters the swap cache, dirty). False if
        every swap area is full (or there is none)."""
        got = self.swap.get_slot()
        if got is None:
            return False
        area, off = got
        self.swapcache_add(pfn, area, off)
        self.ft.flags[pfn] |= PG_DIRTY
        return True

    def swap_writepage(self, pfn: int) -> None:
        """Write a swap-cache frame's content to its slot: into zswap if the pool takes it,
        else to the device."""
        ft = self.ft
        area, off = self.slot_of(pfn)
        value = ft.content[pfn]
        area.data[off] = value
        area.age[off] = self.eviction_clock & 0xFFFFFFFF
        ft.flags[pfn] &= ~PG_DIRTY
        self._gauge(pfn, PageStat.VMSCAN_WRITE, 1)
        if self.swap.zswap is not None and self.swap.zswap.store(area, off, value,
                                                                 self._ratio_of(pfn)):
            return
        self.events[VmEvent.PSWPOUT] += 1
        self.events[VmEvent.PGPGOUT] += 4
        self._gauge(pfn, PageStat.WRITTEN, 1)

    def _ratio_of(self, pfn: int) -> float:
        """The compression ratio of the page's owner (its workload's, else the default)."""
        fam = self.mms.get(self.ft.rmap[pfn] >> RMAP_INDEX_BITS)
        if fam:
            w = fam[0].workload
            if w is not None:
                return w.compress_ratio
        return DEFAULT_RATIO
