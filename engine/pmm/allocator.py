"""PhysicalAllocator: which zone a request is served from, and the two allocators.

- try_alloc_page / free_page: the common case, one frame anywhere suitable.
  Walks the zonelist (preferred node's zones from the highest allowed down,
  then other nodes by distance), checks each zone's watermark plus lowmem
  protection, and pops a frame off the zone's per-cpu free-page stack: O(1).
- alloc_contig: the rare special requests (N physically contiguous frames,
  below an address, aligned, not crossing a boundary: ISA DMA's worst case).
  A vectorised scan of the frame types over the eligible zones, slow by design
  and never on the common path.

Only this module hands out frames. Callers hold the engine lock.
"""
from __future__ import annotations

import numpy as np

from .frames import PCP, TYPE_MASK, PAGEBLOCK_ORDER, POISON, FrameTable, MigrateType, PageType
from .zone import NR_ZONES, ZONE_NORMAL, Zone
from ..stats import VmEvent, ZoneStat
from ..errors import bug_on

FREE = int(PageType.FREE)
NOT_ALLOCATED = frozenset(int(t) for t in (PageType.FREE, PageType.NOPAGE, PageType.RESERVED,
                                             PageType.OFFLINE, PageType.HWPOISON))
# free_page takes none of these: a hugetlb pool frame goes back only with its whole block.
NOT_SINGLE = NOT_ALLOCATED | {int(PageType.HUGETLB)}
SCAN_CHUNK = 1 << 20            # frames per vectorised window of the contiguous scan


class PhysicalAllocator:
    def __init__(self, ft: FrameTable, node_zones: list[list[Zone]],
                 distance: tuple[tuple[int, ...], ...], cpu_node: dict[int, int], events):
        self.ft = ft
        self.node_zones = node_zones            # node -> its NR_ZONES zones, by zone index
        self.zones = [z for zones in node_zones for z in zones]   # index == zid
        self.distance = distance
        self.cpu_node = cpu_node
        self.events = events
        self._zonelists: dict[tuple[int, int], tuple[Zone, ...]] = {}
        self._bound: dict[tuple[int, int, tuple[int, ...]], tuple[Zone, ...]] = {}
        self.build_zonelists()

    # ------------------------------------------------------------------
    # zone selection
    # ------------------------------------------------------------------

    def build_zonelists(self) -> None:
        """Fallback order per (node, highest zone): own node first, then by distance."""
        self._zonelists.clear()
        self._bound.clear()
        nr_nodes = len(self.node_zones)
        for node in range(nr_nodes):
            by_distance = sorted(range(nr_nodes), key=lambda n: (self.distance[node][n], n))
            for highest in range(NR_ZONES):
                self._zonelists[(node, highest)] = tuple(
                    self.node_zones[n][zi] for n in by_distance for zi in range(highest, -1, -1)
                    if self.node_zones[n][zi].managed_pages)

    def zonelist(self, node: int, highest: int) -> tuple[Zone, ...]:
        return self._zonelists[(node, highest)]

    def bound_zonelist(self, node: int, highest: int, nodes: tuple[int, ...]) -> tuple[Zone, ...]:
        """MPOL_BIND's zonelist: the zonelist of node (or of the allowed node nearest to it)
        with only the allowed nodes' zones (policy_nodemask filtering the zonelist)."""
        key = (node, highest, nodes)
        zl = self._bound.get(key)
        if zl is None:
            start = node if node in nodes else min(nodes, key=lambda n: (self.distance[node][n], n))
            zl = self._bound[key] = tuple(z for z in self.zonelist(start, highest)
                                          if z.node_id in nodes)
        return zl

    def zone_of(self, pfn: int) -> Zone:
        return self.zones[self.ft.pb_zone[pfn >> PAGEBLOCK_ORDER]]

    @staticmethod
    def watermark_ok(z: Zone, nr_pages: int, mark: int, highest: int) -> bool:
        """Would taking nr_pages leave the zone above mark plus its protection? (__zone_watermark_ok)"""
        return z.free_pages - nr_pages + 1 > mark + z.lowmem_reserve[highest]

    def _count_numa(self, z: Zone, preferred: Zone, cpu: int, nr: int) -> None:
        if z.node_id == preferred.node_id:
            z.stats[ZoneStat.NUMA_HIT] += nr
        else:
            z.stats[ZoneStat.NUMA_MISS] += nr
            preferred.stats[ZoneStat.NUMA_FOREIGN] += nr
        if z.node_id == self.cpu_node[cpu]:
            z.stats[ZoneStat.NUMA_LOCAL] += nr
        else:
            z.stats[ZoneStat.NUMA_OTHER] += nr
        z.stats[ZoneStat.PGALLOC] += nr

    # ------------------------------------------------------------------
    # single frames
    # ------------------------------------------------------------------

    def try_alloc_page(self, *, node: int, cpu: int, highest: int = ZONE_NORMAL,
                       mt: int = MigrateType.UNMOVABLE, ptype: PageType = PageType.KERNEL,
                       zones: tuple[Zone, ...] | None = None) -> int | None:
        """One zeroed frame, or None when every allowed zone is at its min watermark.

        First pass honours the low watermark, the second dips to min (the
        slow path, where later layers wake kswapd and reclaim).
        """
        zonelist = zones if zones is not None else self.zonelist(node, highest)
        if not zonelist:
            return None
        for mark_name in ("wmark_low", "wmark_min"):
            for z in zonelist:
                if not self.watermark_ok(z, 1, getattr(z, mark_name), highest):
                    continue
                pfn = z.pcp_alloc(cpu, mt)
                if pfn is None and z.pcp_pages():
                    # The buddy lists are dry but free frames wait on other stacks
                    # (another CPU's, another migrate type's): give them back and
                    # retry, as Linux's slow path does with drain_all_pages().
                    z.drain_pcp()
                    pfn = z.pcp_alloc(cpu, mt)
                if pfn is None:
                    continue
                z.free_pages -= 1
                self._count_numa(z, zonelist[0], cpu, 1)
                self._prep_new_page(pfn, ptype)
                return pfn
        return None

    def _prep_new_page(self, pfn: int, ptype: PageType) -> None:
        # A frame handed out never shows its previous owner's content.
        self.ft.flags[pfn] = ptype
        self.ft.content[pfn] = 0
        self.ft.mapcount[pfn] = 0
        self.ft.rmap[pfn] = 0

    def free_page(self, pfn: int, *, cpu: int) -> None:
        """Give one in-use frame back (to the CPU's free-page stack of its zone)."""
        ft = self.ft
        bug_on(ft.flags[pfn] & TYPE_MASK in NOT_SINGLE,
               "free_page", f"pfn {pfn:#x} is not an allocated frame (or is a hugetlb frame)")
        ft.content[pfn] = POISON
        ft.mapcount[pfn] = 0
        ft.rmap[pfn] = 0
        z = self.zone_of(pfn)
        z.pcp_free(cpu, pfn)
        z.free_pages += 1
        self.events[VmEvent.PGFREE] += 1

    # ------------------------------------------------------------------
    # blocks of 2^order frames (huge pages)
    # ------------------------------------------------------------------

    def try_alloc_block(self, order: int, *, node: int, cpu: int, highest: int = ZONE_NORMAL,
                        mt: int = MigrateType.MOVABLE, ptype: PageType = PageType.ANON,
                        zones: tuple[Zone, ...] | None = None) -> int | None:
        """The head pfn of 2^order free, naturally aligned frames off a zone's buddy lists
        (get_page_from_freelist with order > 0), each typed ptype and zeroed; None when no
        allowed zone has such a block above its low watermark. Never reclaims."""
        zonelist = zones if zones is not None else self.zonelist(node, highest)
        nr = 1 << order
        for z in zonelist:
            if not self.watermark_ok(z, nr, z.wmark_low, highest) or not z.has_free_block(order):
                continue
            pfn = z.rmqueue(order, mt)
            if pfn is None:
                continue
            z.free_pages -= nr
            self._count_numa(z, zonelist[0], cpu, 1)
            z.stats[ZoneStat.PGALLOC] += nr - 1
            ft = self.ft
            ft.flags_np()[pfn:pfn + nr] = int(ptype)
            ft.content_np()[pfn:pfn + nr] = 0
            ft.mapcount_np()[pfn:pfn + nr] = 0
            ft.rmap_np()[pfn:pfn + nr] = 0
            return pfn
        return None

    def free_block(self, pfn: int, order: int) -> None:
        """Give back a block try_alloc_block handed out (every frame of it unmapped and off
        every list): straight to the buddy lists, merged with its free buddies."""
        ft = self.ft
        nr = 1 << order
        flags = ft.flags_np()[pfn:pfn + nr]
        bug_on(bool(np.isin(flags & TYPE_MASK, list(NOT_ALLOCATED)).any()),
               "free_block", f"block {pfn:#x}+{nr} holds a frame that is not allocated")
        ft.flags_np()[pfn:pfn + nr] = FREE
        ft.content_np()[pfn:pfn + nr] = POISON
        ft.mapcount_np()[pfn:pfn + nr] = 0
        ft.rmap_np()[pfn:pfn + nr] = 0
        z = self.zone_of(pfn)
        z.free_block(pfn, order)
        z.free_pages += nr
        self.events[VmEvent.PGFREE] += nr

    def available_pages(self, zonelist: tuple[Zone, ...], highest: int) -> int:
        """Frames the zonelist can give before every zone hits its min watermark."""
        return sum(max(0, z.free_pages - z.wmark_min - z.lowmem_reserve[highest])
                   for z in zonelist)

    # ------------------------------------------------------------------
    # constrained, contiguous requests
    # ------------------------------------------------------------------

    def find_contig(self, nr_pages: int, zones: tuple[Zone, ...], *, highest: int,
                    below_pfn: int | None, align_pages: int, boundary_pages: int | None
                    ) -> tuple[Zone, int] | None:
        """First (lowest) run of nr_pages free frames that meets every constraint.

        Returns (zone, first pfn) without changing anything, or None.
        """
        for z in zones:
            if not self.watermark_ok(z, nr_pages, z.wmark_min, highest):
                continue
            hi = z.end_pfn if below_pfn is None else min(z.end_pfn, below_pfn)
            start = self._scan(z.start_pfn, hi, nr_pages, align_pages, boundary_pages)
            if start is not None:
                return z, start
        return None

    def _scan(self, lo: int, hi: int, n: int, align: int, boundary: int | None) -> int | None:
        flags = self.ft.flags_np()
        s0 = -(-lo // align) * align
        while s0 + n <= hi:
            end = min(hi, s0 + SCAN_CHUNK + n)
            free = (flags[s0:end] & TYPE_MASK) == FREE
            csum = np.concatenate(([0], np.cumsum(free, dtype=np.int64)))
            starts = np.arange(s0, end - n + 1, align, dtype=np.int64)
            if starts.size == 0:
                break
            rel = starts - s0
            ok = (csum[rel + n] - csum[rel]) == n
            if boundary:
                ok &= (starts // boundary) == ((starts + n - 1) // boundary)
            hits = np.flatnonzero(ok)
            if hits.size:
                return int(starts[hits[0]])
            s0 = int(starts[-1]) + align
        return None

    def take_contig(self, z: Zone, start: int, nr_pages: int, *, cpu: int,
                    ptype: PageType = PageType.KERNEL) -> None:
        """Allocate the frames [start, start + nr_pages) that find_contig chose."""
        end = start + nr_pages
        flags = self.ft.flags_np()[start:end]
        if ((flags & PCP) != 0).any():                 # some sit on per-cpu stacks
            z.drain_pcp()
        z.take_range(start, end)
        self.ft.flags_np()[start:end] = int(ptype)
        self.ft.content_np()[start:end] = 0
        self.ft.mapcount_np()[start:end] = 0
        self.ft.rmap_np()[start:end] = 0
        self._count_numa(z, z, cpu, nr_pages)
