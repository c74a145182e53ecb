"""The virtio balloon: the host takes memory back from the guest (drivers/virtio/virtio_balloon.c).

The host writes `target` (num_pages, in 4 KiB pages); the driver moves
`actual` towards it, at most RATE pages a tick:

    inflate  takes movable frames from the page allocator (typed BALLOON, off
             every list) and hands them to the host. When none is free above
             the min watermarks it reclaims a batch first, as any allocation
             would, so inflating can push the guest into swap; it never calls
             the OOM killer (__GFP_NORETRY: "Out of puff!", it tries again on
             the next tick).
    deflate  gives frames back to the allocator.

Features offered: STATS_VQ (the statistics below), DEFLATE_ON_OOM and
REPORTING. With DEFLATE_ON_OOM the guest keeps balloon pages in MemTotal
(they count as used, and in meminfo's Balloon line), and before the OOM
killer picks a victim the balloon gives back OOM_PAGES (1 MiB); the driver
inflates again afterwards if the target still asks for it, as Linux's does.
Balloon frames are movable: page migration moves them (balloon_migrate).

Free page reporting: every 2 s the free blocks of pageblock order (2 MiB) and
above are reported to the host (which may drop their backing); they stay free
in the guest. `reported` is how many free pages the last report covered.
"""
from __future__ import annotations

from array import array

import numpy as np

from ..pmm.frames import (KOWNER_BALLOON, NR_MIGRATE, NR_ORDERS, PAGEBLOCK_ORDER, MigrateType,
                          PageType, rmap_word)
from ..pmm.zone import NR_ZONES, ZONE_MOVABLE
from ..reclaim.vmscan import SWAP_CLUSTER_MAX
from ..stats import VmEvent, ZoneStat
from ..units import PAGE_SIZE

RATE = 2048                    # pages inflated or deflated a tick at most
OOM_PAGES = 256                # OOM_VBALLOON_DEFAULT_PAGES: 1 MiB per OOM notification
REPORT_EVERY_MS = 2000         # page_reporting_delay
MAX_TARGET = 0xFFFFFFFF        # num_pages is a u32

STAT_NAMES = ("swap-in", "swap-out", "major-faults", "minor-faults", "free-memory",
              "total-memory", "available-memory", "disk-caches", "hugetlb-allocations",
              "hugetlb-failures", "oom-kills", "alloc-stalls", "async-scans", "direct-scans",
              "async-reclaims", "direct-reclaims")


class Balloon:
    def __init__(self, machine):
        self.m = machine
        self.target = 0
        self.frames = array("I")              # the pages in the balloon (BALLOON frames)
        self.reported = 0
        self._last_report_us = 0
        self.out_of_puff = 0                  # ticks an inflate found no memory

    @property
    def actual(self) -> int:
        return len(self.frames)

    def pages_on(self, node: int | None) -> int:
        """Balloon pages on node (all if None): nr_balloon_pages."""
        if node is None or not self.frames:
            return len(self.frames)
        pfns = np.frombuffer(self.frames, dtype=np.uint32).astype(np.int64)
        zids = np.frombuffer(self.m.ft.pb_zone, dtype=np.uint8)[pfns >> PAGEBLOCK_ORDER]
        return int(np.count_nonzero(zids // NR_ZONES == node))

    def set_target(self, pages: int) -> None:
        self.target = pages

    # ------------------------------------------------------------------

    def tick(self, tick: int) -> None:
        m = self.m
        if self.actual < self.target:
            self.inflate(min(RATE, self.target - self.actual))
        elif self.actual > self.target:
            self.deflate(min(RATE, self.actual - self.target))
        now = m.clock.uptime_us
        if now - self._last_report_us >= REPORT_EVERY_MS * 1000:
            self._last_report_us = now
            self.reported = sum(z.nr_free[o * NR_MIGRATE + mt] << o for z in m.zones
                                for o in range(PAGEBLOCK_ORDER, NR_ORDERS)
                                for mt in range(NR_MIGRATE))

    def _take(self) -> int | None:
        m = self.m
        pmm = m.pmm
        for attempt in range(2):
            pfn = pmm.try_alloc_page(node=0, cpu=0, highest=ZONE_MOVABLE, mt=MigrateType.MOVABLE,
                                     ptype=PageType.BALLOON)
            if pfn is not None or attempt:
                return pfn
            # one round of direct reclaim, as a __GFP_NORETRY allocation gets
            pmm.zonelist(0, ZONE_MOVABLE)[0].stats[ZoneStat.ALLOCSTALL] += 1
            for node in range(len(m.node_zones)):
                m.reclaim.shrink_node(node, SWAP_CLUSTER_MAX, direct=True, highest=ZONE_MOVABLE)
        return None

    def inflate(self, n: int) -> int:
        """fill_balloon: up to n pages go to the host. Returns how many did."""
        ft = self.m.ft
        done = 0
        while done < n:
            pfn = self._take()
            if pfn is None:
                self.out_of_puff += 1
                break
            ft.rmap[pfn] = rmap_word(KOWNER_BALLOON, len(self.frames))
            self.frames.append(pfn)
            done += 1
        self.m.events[VmEvent.BALLOON_INFLATE] += done
        return done

    def deflate(self, n: int) -> int:
        """leak_balloon: up to n pages come back to the guest's allocator."""
        n = min(n, len(self.frames))
        pmm = self.m.pmm
        for _ in range(n):
            pmm.free_page(self.frames.pop(), cpu=0)
        self.m.events[VmEvent.BALLOON_DEFLATE] += n
        return n

    def deflate_on_oom(self) -> int:
        """virtio_balloon_oom_notify: called before the OOM killer; pages freed."""
        got = self.deflate(OOM_PAGES)
        if got:
            self.m.kmsg.log(self.m.clock.uptime_us,
                            f"virtio_balloon virtio0: Out of memory: released {got} pages")
        return got

    def migrate_frame(self, old: int, new: int, index: int) -> None:
        self.frames[index] = new
        self.m.events[VmEvent.BALLOON_MIGRATE] += 1

    # ------------------------------------------------------------------

    def stats(self) -> list[tuple[str, int]]:
        """The virtio-balloon statistics, tags 0-15, as the guest reports them."""
        m = self.m
        ev = dict(m.vmstat())
        mi = m.meminfo()
        stalls = sum(v for k, v in ev.items() if k.startswith("allocstall_"))
        values = (ev["pswpin"] * PAGE_SIZE, ev["pswpout"] * PAGE_SIZE, ev["pgmajfault"],
                  ev["pgfault"], mi.free * PAGE_SIZE, mi.total * PAGE_SIZE,
                  mi.available * PAGE_SIZE, mi.file_pages * PAGE_SIZE,
                  ev["htlb_buddy_alloc_success"], ev["htlb_buddy_alloc_fail"], ev["oom_kill"],
                  stalls, ev["pgscan_kswapd"] * PAGE_SIZE, ev["pgscan_direct"] * PAGE_SIZE,
                  ev["pgsteal_kswapd"] * PAGE_SIZE, ev["pgsteal_direct"] * PAGE_SIZE)
        return list(zip(STAT_NAMES, values))
