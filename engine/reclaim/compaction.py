"""Memory compaction: moving pages to build free 2 MiB blocks (mm/compaction.c).

Two scanners walk a zone's movable pageblocks from opposite ends: the
migrate scanner from the bottom up, finding pages in use that can move; the
free scanner from the top down, taking free frames off the buddy lists. Each
page found below is migrated (vmm.migrate_page: page tables, swap cache and
page cache follow) into a free frame from above, and its old frame is freed,
where it merges with its free neighbours. When the scanners meet, the bottom
of the zone is free memory in large blocks: buddyinfo shows it.

    compact_memory   (sys/vm, write 1) compacts every zone to the end
    kcompactd        every 500 ms, a node whose fragmentation score (the
                     share of its free memory that is not in blocks of 2 MiB
                     and up, weighted by zone size) is above 100 -
                     compaction_proactiveness + 10 is compacted, at most
                     KCOMPACTD_BATCH pages a run, until the score is down to
                     100 - compaction_proactiveness (proactive compaction);
                     compaction_proactiveness 0 turns it off

vmstat: compact_migrate_scanned, compact_free_scanned (pages the scanners
looked at), compact_isolated (pages taken by either), pgmigrate_success,
compact_success / compact_fail (a run that did / did not leave a free block
of pageblock order), compact_daemon_wake and compact_daemon_*_scanned for
kcompactd's share.
"""
from __future__ import annotations

import numpy as np

from ..pmm.frames import (ORDER_MASK, THP_HEAD, NR_MIGRATE, NR_ORDERS, PAGEBLOCK_ORDER, PAGEBLOCK_PAGES, PCP,
                          TYPE_MASK, MigrateType, PageType)
from ..stats import VmEvent
from ..sysctl import Tunable
from ..units import mask_runs, runs_of

FREE = int(PageType.FREE)
MOVABLE_TYPES = np.array([int(PageType.ANON), int(PageType.FILE), int(PageType.SHMEM),
                          int(PageType.KERNEL), int(PageType.BALLOON)], dtype=np.uint16)
KCOMPACTD_PERIOD_MS = 500
KCOMPACTD_BATCH = 4096

TUNABLES = (
    Tunable("compact_memory", 0, 1, 1, "write 1: compact every zone now", write_only=True),
    Tunable("compaction_proactiveness", 20, 0, 100,
            "how hard kcompactd keeps free memory in 2 MiB blocks: 0 off, 100 as hard as it can"),
)


def fragmentation_score(z) -> int:
    """extfrag_for_order(zone, pageblock order): percent of free memory in smaller blocks."""
    if not z.free_pages:
        return 0
    big = sum(z.nr_free[o * NR_MIGRATE + mt] << o for o in range(PAGEBLOCK_ORDER, NR_ORDERS)
              for mt in range(NR_MIGRATE))
    return max(0, (z.free_pages - big) * 100 // z.free_pages)


def node_score(zones) -> int:
    present = sum(z.present_pages for z in zones)
    if not present:
        return 0
    return sum(fragmentation_score(z) * z.present_pages for z in zones) // present


class Compactor:
    def __init__(self, machine):
        self.m = machine
        self.vmm = machine.vmm
        self.ft = machine.ft
        self.events = machine.events
        self._last_run_us = 0

    def compact_zone(self, z, budget: int | None = None, *, daemon: bool = False) -> int:
        """Run both scanners over zone z until they meet (or budget pages have moved).
        Returns the pages migrated."""
        ft, vmm, pmm, ev = self.ft, self.vmm, self.m.pmm, self.events
        if not z.managed_pages:
            return 0
        flags = ft.flags_np()
        pb_zone = np.frombuffer(ft.pb_zone, dtype=np.uint8)
        pb_mt = np.frombuffer(ft.pb_mt, dtype=np.uint8)
        lo, hi = z.start_pfn >> PAGEBLOCK_ORDER, -(-z.end_pfn >> PAGEBLOCK_ORDER)
        ok = (pb_zone[lo:hi] == z.zid) & (pb_mt[lo:hi] == MigrateType.MOVABLE)
        z.drain_pcp()
        mig, top = lo, hi - 1
        spare: list[int] = []
        moved = scanned_m = scanned_f = isolated = 0
        stop = False
        while mig < top and not stop:
            if not ok[mig - lo]:
                mig += 1
                continue
            s = mig << PAGEBLOCK_ORDER
            if flags[s] & ORDER_MASK == THP_HEAD and flags[s] & TYPE_MASK == PageType.ANON:
                mig += 1                             # a THP fills the block: nothing to gain
                continue
            scanned_m += PAGEBLOCK_PAGES
            types = flags[s:s + PAGEBLOCK_PAGES] & TYPE_MASK
            for old in (np.flatnonzero(np.isin(types, MOVABLE_TYPES)) + s).tolist():
                if budget is not None and moved >= budget:
                    stop = True
                    break
                if not vmm.movable(old):
                    continue
                while not spare and mig < top:      # the free scanner takes the next block down
                    if ok[top - lo]:
                        fs = top << PAGEBLOCK_ORDER
                        scanned_f += PAGEBLOCK_PAGES
                        f = flags[fs:fs + PAGEBLOCK_PAGES]
                        mask = ((f & TYPE_MASK) == FREE) & ((f & PCP) == 0)
                        free = np.flatnonzero(mask) + fs
                        for start, count in mask_runs(mask, fs):
                            z.take_range(start, start + count)
                        spare = free[::-1].tolist()
                        isolated += len(spare)
                    top -= 1
                if not spare:
                    stop = True                      # the scanners met
                    break
                new = spare.pop()
                ft.flags[new] = ft.flags[old] & TYPE_MASK
                ft.mapcount[new] = 0
                vmm.migrate_page(old, new)
                pmm.free_page(old, cpu=0)
                moved += 1
                isolated += 1
            mig += 1
        for start, count in runs_of(spare):
            flags[start:start + count] = FREE       # isolated but not used: back to the lists
            z.add_free_span(start, start + count)
        z.drain_pcp()
        ev[VmEvent.COMPACT_MIGRATE_SCANNED] += scanned_m
        ev[VmEvent.COMPACT_FREE_SCANNED] += scanned_f
        ev[VmEvent.COMPACT_ISOLATED] += isolated
        if daemon:
            ev[VmEvent.COMPACT_DAEMON_MIGRATE_SCANNED] += scanned_m
            ev[VmEvent.COMPACT_DAEMON_FREE_SCANNED] += scanned_f
        if z.has_free_block(PAGEBLOCK_ORDER):
            ev[VmEvent.COMPACT_SUCCESS] += 1
        else:
            ev[VmEvent.COMPACT_FAIL] += 1
        return moved

    def compact_all(self) -> int:
        """compact_memory: every zone, to the end."""
        return sum(self.compact_zone(z) for z in self.m.zones if z.managed_pages)

    def kcompactd(self, tick: int) -> None:
        m = self.m
        now = m.clock.uptime_us
        if now - self._last_run_us < KCOMPACTD_PERIOD_MS * 1000:
            return
        self._last_run_us = now
        pro = m.sysctl["compaction_proactiveness"]
        if not pro:
            return
        low = 100 - pro
        high = min(low + 10, 100)
        for zones in m.node_zones:
            zones = [z for z in zones if z.managed_pages]
            if not zones or node_score(zones) <= high:
                continue
            self.events[VmEvent.COMPACT_DAEMON_WAKE] += 1
            budget = KCOMPACTD_BATCH
            for z in sorted(zones, key=fragmentation_score, reverse=True):
                if budget <= 0 or node_score(zones) <= low:
                    break
                budget -= self.compact_zone(z, budget, daemon=True)
