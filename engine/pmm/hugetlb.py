"""The hugetlb pool: persistent 2 MiB huge pages reserved at run time (mm/hugetlb.c).

One hstate, the default: pages of order 9 (512 frames, 2048 kB). Writing a
count to nr_hugepages grows or shrinks the pool (set_max_huge_pages):

    grow    one order-9 block at a time from the buddy allocator, typed HUGETLB
            in every frame, never below a zone's low watermark. The nodes take
            turns (next_nid_to_alloc, round robin over the allowed nodes, as
            for_each_node_mask_to_alloc does) and each request stays on its
            node (__GFP_THISNODE: the node's own zones, Normal and below). When
            no free block is there, the node's zones that have the free pages
            but not in one piece are compacted (direct compaction, compact_stall)
            and the allocation is tried once more. A node that still fails is
            not asked again during that write (node_alloc_noretry). Each buddy
            request counts htlb_buddy_alloc_success or htlb_buddy_alloc_fail.
            A count that cannot be reached is no error: the pool grows as far
            as it can and the kernel log says how far.
    shrink  free pool pages go back to the buddy lists, the nodes taking turns
            (next_nid_to_free), the most recently added page of a node first.

Nothing maps hugetlb memory yet, so every pool page is free: Rsvd and Surp
stay 0, and nr_overcommit_hugepages is kept and shown but never used (no
surplus page is ever allocated). A per-node write (nodeN/hugepages/...)
changes that node only: its target is the count written plus the pages on
the other nodes.

Pool frames are allocated, not free (MemFree drops by 512 a page; MemTotal
does not), carry no mapping and sit on no LRU list; nothing can migrate them
(vmm.movable says no), so compaction and the balloon pass them by and a
memory block holding one cannot go offline (EBUSY). CommitLimit leaves them
out of the RAM it counts (engine/commit.py).

Owned here: the per-node free lists of head pfns and the per-node counts.
Callers hold the engine lock.
"""
from __future__ import annotations

from array import array

from .frames import HPAGE_PMD_NR, HPAGE_PMD_ORDER, MigrateType, PageType
from .zone import ZONE_NORMAL
from ..stats import VmEvent

# The default hstate on x86-64 is the PMD size: order 9, 512 frames, 2048 kB.
HPAGE_KB = HPAGE_PMD_NR * 4
HPAGE_NAME = f"hugepages-{HPAGE_KB}kB"     # its sysfs directory
MAX_COUNT = (1 << 63) - 1                  # the largest count a write may ask for


class HugetlbPool:
    def __init__(self, machine):
        self.m = machine
        nr_nodes = len(machine.node_zones)
        self.free_lists = [array("I") for _ in range(nr_nodes)]   # head pfns, newest last
        self.nr_node = [0] * nr_nodes          # pool pages per node (free + in use)
        self.overcommit = 0                    # nr_overcommit_hugepages
        self.next_nid_to_alloc = 0
        self.next_nid_to_free = 0

    # ------------------------------------------------------------------
    # counts
    # ------------------------------------------------------------------

    @property
    def nr(self) -> int:
        """HugePages_Total: persistent pool pages."""
        return sum(self.nr_node)

    @property
    def free(self) -> int:
        return sum(len(f) for f in self.free_lists)

    def nr_on(self, node: int | None) -> int:
        return self.nr if node is None else self.nr_node[node]

    def free_on(self, node: int | None) -> int:
        return self.free if node is None else len(self.free_lists[node])

    def total_pages(self, node: int | None = None) -> int:
        """Frames the pool holds (hugetlb_total_pages; vmstat nr_hugetlb)."""
        return self.nr_on(node) * HPAGE_PMD_NR

    # ------------------------------------------------------------------
    # resizing
    # ------------------------------------------------------------------

    def memory_nodes(self) -> list[int]:
        """N_MEMORY: the nodes with memory in some zone."""
        return [n for n, zones in enumerate(self.m.node_zones)
                if any(z.managed_pages for z in zones)]

    def set_count(self, count: int, node: int | None = None) -> tuple[int, int]:
        """nr_hugepages (node None) or nodeN's nr_hugepages := count, as far as memory allows.
        Returns (pages added, pages freed)."""
        if node is None:
            allowed = self.memory_nodes()
            target = count
        else:
            allowed = [node]
            target = count + self.nr - self.nr_node[node]
        added = freed = 0
        if target > self.nr and allowed:
            added = self._grow(target, allowed)
        while self.nr > target:
            nid = self._next_node_to_free(allowed)
            if nid is None:
                break
            self._free_page(nid)
            freed += 1
        return added, freed

    def _grow(self, target: int, allowed: list[int]) -> int:
        failed: set[int] = set()
        added = 0
        while self.nr < target:
            pfn = None
            for _ in range(len(allowed)):              # for_each_node_mask_to_alloc
                nid = self._next_node_to_alloc(allowed)
                if nid in failed:
                    continue
                pfn = self._alloc_fresh(nid)
                if pfn is not None:
                    break
                failed.add(nid)
            if pfn is None:
                break
            self.free_lists[nid].append(pfn)
            self.nr_node[nid] += 1
            added += 1
        return added

    @staticmethod
    def _next_allowed(nid: int, allowed: list[int]) -> int:
        """nid if allowed, else the next allowed node after it (wrapping)."""
        later = [n for n in allowed if n >= nid]
        return later[0] if later else allowed[0]

    def _next_node_to_alloc(self, allowed: list[int]) -> int:
        nid = self._next_allowed(self.next_nid_to_alloc, allowed)
        self.next_nid_to_alloc = self._next_allowed(nid + 1, allowed)
        return nid

    def _next_node_to_free(self, allowed: list[int]) -> int | None:
        """The next allowed node, in turn, that has a free pool page (None: none has)."""
        for _ in range(len(allowed)):
            nid = self._next_allowed(self.next_nid_to_free, allowed)
            self.next_nid_to_free = self._next_allowed(nid + 1, allowed)
            if self.free_lists[nid]:
                return nid
        return None

    def node_zones(self, nid: int) -> tuple:
        """The node's own zones a pool page may come from, highest first (__GFP_THISNODE)."""
        return tuple(z for z in self.m.pmm.zonelist(nid, ZONE_NORMAL) if z.node_id == nid)

    def _alloc_fresh(self, nid: int) -> int | None:
        """One order-9 block on node nid (alloc_buddy_hugetlb_folio), compacting once if the
        free memory is there but not in one piece."""
        m = self.m
        pmm = m.pmm
        zones = self.node_zones(nid)

        def attempt():
            if not zones:
                return None
            return pmm.try_alloc_block(HPAGE_PMD_ORDER, node=nid, cpu=0, highest=ZONE_NORMAL,
                                       mt=MigrateType.MOVABLE, ptype=PageType.HUGETLB,
                                       zones=zones)
        pfn = attempt()
        if pfn is None:
            # compaction_suitable: only zones with the free frames, watermark included
            suitable = [z for z in zones
                        if pmm.watermark_ok(z, HPAGE_PMD_NR, z.wmark_low, ZONE_NORMAL)]
            if suitable:
                m.events[VmEvent.COMPACT_STALL] += 1
                for z in suitable:
                    m.compactor.compact_zone(z)
                pfn = attempt()
        if pfn is None:
            m.events[VmEvent.HTLB_BUDDY_ALLOC_FAIL] += 1
        else:
            m.events[VmEvent.HTLB_BUDDY_ALLOC_SUCCESS] += 1
        return pfn

    def _free_page(self, nid: int) -> None:
        """update_and_free_hugetlb_folio: the node's newest free pool page goes back."""
        pfn = self.free_lists[nid].pop()
        self.nr_node[nid] -= 1
        self.m.pmm.free_block(pfn, HPAGE_PMD_ORDER)
