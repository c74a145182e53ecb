"""Page reclaim (mm/vmscan.c): kswapd, direct reclaim, the LRU scan, drop_caches.

Reclaim takes pages from the tail of a node's inactive lists:

    referenced?  the accessed bits of every entry mapping the page (cleared
                 as they are read) and the page's own PG_referenced:
                 - an anonymous page that was referenced is activated;
                 - a file page referenced from an executable mapping, or
                   referenced a second time (PG_referenced already set), or
                   by several processes, is activated; referenced once, it
                   gets PG_referenced and another trip round the inactive list;
                 - otherwise it is reclaimed.
    reclaim      anonymous: a swap slot (add_to_swap), every entry becomes
                 the swap entry (try_to_unmap), the content is written if the
                 page is newer than its slot (zswap first, else the device),
                 the frame is freed. MADV_FREE pages nobody wrote since are
                 simply discarded. File: unmapped, written back if dirty,
                 dropped from the page cache (its shadow keeps the eviction
                 time for refault detection). Shared memory stays (it is
                 not swapped in this model).

The active lists are aged into the inactive ones when the inactive list of
a kind is smaller than its active list (inactive_is_low, ratio 1 below 1 GiB,
sqrt(10 x GiB) above); an active page is deactivated whether or not it was
referenced, except a referenced executable file page.

How much of each kind to scan (get_scan_count): nothing anonymous without
free swap; otherwise the lists at priority p contribute size >> p, anon
weighted by swappiness and file by 200 - swappiness. Priorities go from 12
down to 0 until enough was reclaimed.

kswapd: when a zone falls below its low watermark, reclaim on its node until
every zone is above high. A tick stays bounded: at most KSWAPD_BATCH pages
reclaimed and KSWAPD_SCAN pages looked at (right after a fill every page is
referenced, and one pass would otherwise age the whole LRU in one tick);
kswapd carries on where it stopped on the next tick. After MAX_RECLAIM_RETRIES runs in a row that freed nothing it
leaves the node alone until a direct reclaim succeeds there. Direct reclaim: an allocation that found every zone at min
reclaims SWAP_CLUSTER_MAX pages itself and retries (allocstall, and the
process stalls: PSI), up to MAX_RECLAIM_RETRIES times without progress;
then the OOM killer.
"""
from __future__ import annotations

import math

import numpy as np

from ..pmm.frames import (DIRTY as PG_DIRTY, LAZYFREE, NIL, REFERENCED, SWAPCACHE, TYPE_MASK,
                          PageType)
from ..sysctl import Tunable
from ..pmm.zone import NR_ZONES
from ..stats import VmEvent, ZoneStat
from ..vmm.files import NO_FRAME
from ..vmm.vmm import FaultOom
from .lru import ACTIVE_ANON, ACTIVE_FILE, INACTIVE_ANON, INACTIVE_FILE

SWAP_CLUSTER_MAX = 32
DEF_PRIORITY = 12
MAX_RECLAIM_RETRIES = 16
KSWAPD_BATCH = 2048
KSWAPD_SCAN = 8 * KSWAPD_BATCH
ANON = int(PageType.ANON)
FILE = int(PageType.FILE)

TUNABLES = (
    Tunable("swappiness", 60, 0, 200,
            "anonymous vs file reclaim: 0 file only while it lasts, 100 equal, 200 anon only"),
    Tunable("page-cluster", 3, 0, 10, "swap readahead reads 2^N slots around a swap-in"),
    Tunable("drop_caches", 0, 1, 7, "write 1: drop clean page cache; 2: slab; 3: both "
            "(4: quiet)", write_only=True),
)


class Reclaimer:
    def __init__(self, machine):
        self.m = machine
        self.vmm = machine.vmm
        self.ft = machine.ft
        self.lru = machine.vmm.lru
        self.events = machine.events
        self.kswapd_active = [False] * len(machine.node_zones)
        # Runs in a row that reclaimed nothing; at MAX_RECLAIM_RETRIES kswapd gives the node
        # up until a direct reclaim frees something there (pgdat->kswapd_failures).
        self.kswapd_failures = [0] * len(machine.node_zones)
        # Set by shrink_node when it stopped because its scan budget ran out.
        self.scan_exhausted = False
        self.last_scan = 0

    # ------------------------------------------------------------------
    # the allocation slow path
    # ------------------------------------------------------------------

    def alloc_slow(self, proc, *, node: int, cpu: int, highest: int, mt, ptype,
                   zones: tuple | None = None) -> int:
        """__alloc_pages_slowpath: direct reclaim and retry; then the OOM killer. Returns a
        frame or raises FaultOom. zones restricts the request to a memory policy's nodes
        (MPOL_BIND): reclaim and the OOM killer then act for those nodes alone."""
        vmm = self.vmm
        if vmm.flush is not None:
            vmm.flush()
        pmm = self.m.pmm
        zonelist = zones if zones is not None else pmm.zonelist(node, highest)
        nodes = list(dict.fromkeys(z.node_id for z in zonelist))

        def retry():
            return pmm.try_alloc_page(node=node, cpu=cpu, highest=highest, mt=mt, ptype=ptype,
                                      zones=zones)

        if zonelist:
            zonelist[0].stats[ZoneStat.ALLOCSTALL] += 1
        for _ in range(MAX_RECLAIM_RETRIES if zonelist else 0):
            got = 0
            for n in nodes:
                freed = self.shrink_node(n, SWAP_CLUSTER_MAX, direct=True, highest=highest,
                                         proc=proc)
                if freed:
                    self.kswapd_failures[n] = 0
                got += freed
                if got >= SWAP_CLUSTER_MAX:
                    break
            pfn = retry()
            if pfn is not None:
                return pfn
            if got == 0:
                break
        # out_of_memory: first the OOM notifiers (the balloon deflates), then kill the worst
        # process and try again while victims remain
        balloon = self.m.balloon
        while zonelist and balloon.actual and balloon.deflate_on_oom():
            pfn = retry()
            if pfn is not None:
                return pfn
        oom = self.m.oom
        # CONSTRAINT_MEMORY_POLICY only when the policy leaves out a node with memory
        # (constrained_alloc); binding to all of them is a global OOM.
        with_memory = {z.node_id for z in pmm.zones if z.managed_pages}
        nodemask = tuple(sorted(nodes)) if zones is not None and with_memory - set(nodes) \
            else None
        for _ in range(len(self.m.tasks.procs) + 1):
            victim = oom.choose(nodemask)
            if victim is None:
                line = "Out of memory and no killable processes..."
                self.m.kmsg.log(self.m.clock.uptime_us, line)
                raise FaultOom(None, line)
            if victim is proc or victim is vmm.current:
                raise FaultOom(victim, nodemask=nodemask)   # the caller kills it
            oom.kill(proc, victim, nodemask)
            pfn = retry()
            if pfn is not None:
                return pfn
        raise FaultOom(None)

    # ------------------------------------------------------------------
    # kswapd
    # ------------------------------------------------------------------

    def kswapd(self, tick: int) -> None:
        """The background task: each node below its low watermark is balanced to high."""
        for node, zones in enumerate(self.m.node_zones):
            zones = [z for z in zones if z.managed_pages]
            if not zones or self.kswapd_failures[node] >= MAX_RECLAIM_RETRIES:
                continue
            if not self.kswapd_active[node]:
                if not any(z.free_pages < z.wmark_low for z in zones):
                    continue
                self.kswapd_active[node] = True
                self.events[VmEvent.PAGEOUTRUN] += 1
            budget, scan = KSWAPD_BATCH, KSWAPD_SCAN
            while budget > 0 and scan > 0:
                short = sum(max(0, z.wmark_high - z.free_pages) for z in zones)
                if short == 0:
                    self.kswapd_active[node] = False
                    break
                got = self.shrink_node(node, min(budget, max(short, SWAP_CLUSTER_MAX)),
                                       direct=False, highest=NR_ZONES - 1, proc=None,
                                       max_scan=scan)
                scan -= self.last_scan
                if got == 0:
                    if self.scan_exhausted:
                        break                        # out of time this tick, not of pages
                    self.kswapd_active[node] = False   # nothing reclaimable: sleep
                    self.kswapd_failures[node] += 1
                    break
                self.kswapd_failures[node] = 0
                budget -= got

    # ------------------------------------------------------------------
    # shrinking a node
    # ------------------------------------------------------------------

    def can_swap(self) -> bool:
        return self.m.swap.free_slots() > 0

    def shrink_node(self, node: int, nr_to_reclaim: int, *, direct: bool, highest: int,
                    proc=None, may_swap: bool = True, max_scan: int | None = None) -> int:
        """Reclaim up to nr_to_reclaim pages from node's lists, looking at no more than
        max_scan pages on them (active and inactive) if given. Returns pages reclaimed;
        last_scan is how many pages were looked at and scan_exhausted whether max_scan
        stopped it."""
        lru = self.lru
        swappiness = self.m.sysctl["swappiness"]
        reclaimed = scanned = work = 0
        self.scan_exhausted = False
        room = max_scan if max_scan is not None else -1
        for priority in range(DEF_PRIORITY, -1, -1):
            swap_ok = may_swap and self.can_swap()
            sizes = [lru.size(node, k) for k in range(4)]
            if sizes[INACTIVE_FILE] + sizes[ACTIVE_FILE] == 0 and not swap_ok:
                break
            scan = self._scan_counts(sizes, priority, swappiness, swap_ok)
            for kind, inactive, active in ((0, INACTIVE_ANON, ACTIVE_ANON),
                                           (1, INACTIVE_FILE, ACTIVE_FILE)):
                want = scan[kind]
                if not want:
                    continue
                # Like shrink_lruvec: work in batches and stop once enough is reclaimed.
                left = nr_to_reclaim - reclaimed
                if self._inactive_is_low(sizes[inactive], sizes[active]):
                    n = min(want, max(SWAP_CLUSTER_MAX, 2 * left))
                    if room >= 0:
                        n = min(n, room - work)
                    work += self.shrink_active(node, active, n)
                if room >= 0:
                    want = min(want, room - work)
                got, seen, looked = self.shrink_inactive(node, inactive, want, direct=direct,
                                                         highest=highest, enough=left)
                reclaimed += got
                scanned += seen
                work += looked
                if reclaimed >= nr_to_reclaim or (room >= 0 and work >= room):
                    break
            if reclaimed >= nr_to_reclaim:
                break
            if room >= 0 and work >= room:
                self.scan_exhausted = True
                break
        self.last_scan = work
        if direct and proc is not None:
            self.vmm.psi.stall(proc, scanned * self.vmm.psi.RECLAIM_PAGE_US)
        return reclaimed

    @staticmethod
    def _scan_counts(sizes, priority: int, swappiness: int, swap_ok: bool) -> tuple[int, int]:
        anon = sizes[INACTIVE_ANON] + sizes[ACTIVE_ANON]
        file = sizes[INACTIVE_FILE] + sizes[ACTIVE_FILE]
        if not swap_ok or anon == 0:
            return 0, max(1, file >> priority) if file else 0
        if file == 0:
            return max(1, anon >> priority), 0
        if swappiness == 0 and file >> priority:
            return 0, max(1, file >> priority)
        ap, fp = swappiness, 200 - swappiness
        a = (anon >> priority) * ap // 200
        f = (file >> priority) * fp // 200
        if priority == 0 or (a == 0 and f == 0):
            a = max(a, 1 if ap else 0)
            f = max(f, 1 if fp else 0)
        return a, f

    @staticmethod
    def _inactive_is_low(inactive: int, active: int) -> bool:
        gb = (inactive + active) >> 18
        ratio = int(math.sqrt(10 * gb)) if gb else 1
        return inactive * ratio < active

    def shrink_active(self, node: int, lru_id: int, nr: int) -> int:
        """Age nr pages from the active list's tail onto the inactive list. Returns the
        number of pages looked at."""
        lru, vmm, ft = self.lru, self.vmm, self.ft
        pinned = vmm.pinned
        for k in range(nr):
            pfn = lru.oldest(node, lru_id)
            if pfn == NIL:
                return k
            self.events[VmEvent.PGREFILL] += 1
            if pfn in pinned:
                lru.move(pfn, True)
                continue
            refs, exec_ = vmm.referenced(pfn)
            if refs and exec_ and ft.flags[pfn] & TYPE_MASK == FILE:
                lru.move(pfn, True)                  # executable code keeps its place
                continue
            lru.move(pfn, False)
            self.events[VmEvent.PGDEACTIVATE] += 1
        return max(nr, 0)

    def shrink_inactive(self, node: int, lru_id: int, nr: int, *, direct: bool,
                        highest: int, enough: int | None = None) -> tuple[int, int, int]:
        """Scan up to nr pages from the inactive list's tail, stopping at the end of the
        SWAP_CLUSTER_MAX batch in which `enough` pages were reclaimed. Returns (reclaimed,
        scanned, looked at) where scanned leaves out pages skipped as busy or too high."""
        lru, vmm, ft = self.lru, self.vmm, self.ft
        pinned = vmm.pinned
        file = lru_id == INACTIVE_FILE
        ev = self.events
        reclaimed = scanned = looked = 0
        for k in range(nr):
            if enough is not None and reclaimed >= enough and k % SWAP_CLUSTER_MAX == 0:
                break
            pfn = lru.oldest(node, lru_id)
            if pfn == NIL:
                break
            looked += 1
            if pfn in pinned or ft.pb_zone[pfn >> 9] % NR_ZONES > highest:
                lru.move(pfn, False)                 # busy, or no use to this allocation
                continue
            scanned += 1
            verdict = self._references(pfn, file)
            if verdict == "activate":
                lru.move(pfn, True)
                ev[VmEvent.PGACTIVATE] += 1
                continue
            if verdict == "keep":
                lru.move(pfn, False)
                continue
            if self.reclaim_page(pfn):
                reclaimed += 1
            else:
                lru.move(pfn, True)                  # cannot go now (no swap): activate_locked
                ev[VmEvent.PGACTIVATE] += 1
        who = VmEvent.PGSCAN_DIRECT if direct else VmEvent.PGSCAN_KSWAPD
        ev[who] += scanned
        ev[VmEvent.PGSCAN_FILE if file else VmEvent.PGSCAN_ANON] += scanned
        ev[VmEvent.PGSTEAL_DIRECT if direct else VmEvent.PGSTEAL_KSWAPD] += reclaimed
        ev[VmEvent.PGSTEAL_FILE if file else VmEvent.PGSTEAL_ANON] += reclaimed
        return reclaimed, scanned, looked

    def _references(self, pfn: int, file: bool) -> str:
        """folio_check_references: activate, keep (another trip), or reclaim."""
        ft = self.ft
        refs, exec_ = self.vmm.referenced(pfn)
        had = ft.flags[pfn] & REFERENCED
        ft.flags[pfn] &= ~REFERENCED
        if refs:
            if not file:
                return "activate"
            ft.flags[pfn] |= REFERENCED
            if had or refs > 1 or exec_:
                return "activate"
            return "keep"
        return "reclaim"

    def reclaim_page(self, pfn: int) -> bool:
        """Evict one page from RAM (see the module comment). False if it has to stay."""
        vmm, ft = self.vmm, self.ft
        ptype = ft.flags[pfn] & TYPE_MASK
        if ptype == ANON:
            if ft.flags[pfn] & LAZYFREE and vmm.discard_lazyfree(pfn):
                self.events[VmEvent.PGLAZYFREED] += 1
                vmm.eviction_clock += 1
                return True
            if not ft.flags[pfn] & SWAPCACHE and not vmm.add_to_swap(pfn):
                return False
            vmm.try_to_unmap(pfn)
            if ft.flags[pfn] & PG_DIRTY:
                vmm.swap_writepage(pfn)
            vmm.free_anon_frame(pfn)
        elif ptype == FILE:
            vmm.try_to_unmap(pfn)
            vmm.writeback(pfn)
            vmm.remove_from_cache(pfn, shadow=True)
        else:
            return False                              # shared memory: not swapped here
        vmm.eviction_clock += 1
        return True

    # ------------------------------------------------------------------
    # drop_caches
    # ------------------------------------------------------------------

    def drop_pagecache(self) -> int:
        """Drop every clean, unmapped page-cache page (drop_caches 1). Returns pages dropped."""
        vmm, ft = self.vmm, self.ft
        n = 0
        for f in list(vmm.inodes.values()):
            if f.shmem or not f.nr_cached:
                continue
            for index in np.flatnonzero(f.cache != NO_FRAME).tolist():
                pfn = int(f.cache[index])
                if ft.mapcount[pfn] or ft.flags[pfn] & PG_DIRTY:
                    continue
                vmm.remove_from_cache(pfn)
                n += 1
        return n
