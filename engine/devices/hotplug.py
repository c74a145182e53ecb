"""Memory hot-plug: memory blocks, probe, online and offline, DIMMs.

As drivers/base/memory.c and mm/memory_hotplug.c: physical memory is managed
in blocks of block_size bytes (128 MiB on x86-64); block N covers
[N x block_size, (N + 1) x block_size). Every block holding RAM at boot is
online. A block is added (probe, or a DIMM of one or more blocks) offline:
its frames exist (typed OFFLINE, the RAM in iomem and its node) but belong to
no zone, and its memmap (struct page for every frame, struct_page_bytes each)
is allocated from memory already online, as Linux's vmemmap is after boot.

online(zone) gives the block's frames to a zone: the zone's span grows to
take it in, present and managed pages (MemTotal) grow by the block, the frames
go on its buddy lists, and watermarks, lowmem protection, per-cpu batch sizes
and the zonelists are worked out again. A block may go to its kernel zone
(DMA32 below 4 GiB, Normal above) or to ZONE_MOVABLE, whichever does not make
the zone's span cross another populated zone of the node; valid_zones lists
them, the default first (Movable if the block lies in the node's Movable
span, else the kernel zone: contig-zones).

offline() empties the block: its free frames are taken off the buddy lists,
and every page in use is migrated (vmm.migrate_page: content, page tables,
swap cache and page cache all follow) to a frame elsewhere, preferring the
page's node. It fails with EBUSY, changing nothing, if a frame cannot move (a
page table, an unmovable kernel allocation, a boot reservation) or if the
rest of memory cannot take the pages above its min watermarks; EINVAL if the
block spans zones. ZONE_MOVABLE holds only movable pages, so a Movable block
can always go offline while there is room elsewhere.

A DIMM is removed by offlining its online blocks all at once (offline_blocks:
their free frames are isolated together, so no page moves into a sibling
block to move again; nothing changes if one cannot go) and taking its frames,
memmap, RAM range and blocks away.
"""
from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import numpy as np

from ..errors import Busy, Exists, InvalidArgument, OutOfMemory, TooBig
from ..pmm.boot import ZONE_LIMITS
from ..pmm.frames import (PAGEBLOCK_ORDER, TYPE_MASK, MigrateType, PageType)
from ..pmm.zone import ZONE_MOVABLE, ZONE_NAMES, ZONE_NORMAL
from ..units import GiB, PAGE_SHIFT, PAGE_SIZE, fmt_size, mask_runs
from .iomem import Resource

NOPAGE, FREE, OFFLINE = int(PageType.NOPAGE), int(PageType.FREE), int(PageType.OFFLINE)
HWPOISON = int(PageType.HWPOISON)
ONLINE_TYPES = ("online", "online_kernel", "online_movable")
AUTO_ONLINE = ("offline", "online", "online_kernel", "online_movable")
# Hot-added memory must lie below the larger of this and twice the boot RAM's top: the frame
# table is flat (an entry for every frame below the highest), so memory added at 1 TiB would
# cost the host 8 GiB of table.
MAX_HOTPLUG_ADDR = 64 * GiB
UNMOVABLE_WHY = {int(PageType.RESERVED): "reserved by the kernel at boot",
                 int(PageType.PAGETABLE): "a page table",
                 int(PageType.KERNEL): "an unmovable kernel allocation",
                 int(PageType.HUGETLB): "a hugetlb pool page (shrink nr_hugepages first)"}


@dataclass
class MemoryBlock:
    index: int
    node: int
    online: bool
    dimm: int | None = None                  # the DIMM it came with; None: boot memory
    memmap: array = field(default_factory=lambda: array("I"))   # its struct pages' frames


class Hotplug:
    def __init__(self, machine):
        self.m = machine
        self.block_size = machine.config.hotplug_block_size
        self.block_pages = self.block_size >> PAGE_SHIFT
        self.blocks: dict[int, MemoryBlock] = {}
        self.dimms: dict[int, list[int]] = {}        # DIMM id -> its blocks
        self.next_dimm = 0
        self.auto_online = "offline"                  # auto_online_blocks (kernel default)
        self.max_addr = max(MAX_HOTPLUG_ADDR, 2 * (machine.ft.max_pfn << PAGE_SHIFT))
        bp = self.block_pages
        for node, ranges in enumerate(machine.node_ram):
            for s, e in ranges:
                for b in range(s // bp, (e - 1) // bp + 1):
                    self.blocks.setdefault(b, MemoryBlock(b, node, True))

    # ------------------------------------------------------------------
    # what a block is
    # ------------------------------------------------------------------

    def block(self, index: int) -> MemoryBlock:
        b = self.blocks.get(index)
        if b is None:
            raise InvalidArgument(f"memory{index}: no such memory block")
        return b

    def span(self, b: MemoryBlock) -> tuple[int, int]:
        return b.index * self.block_pages, (b.index + 1) * self.block_pages

    def _zone_ids(self, b: MemoryBlock) -> set[int]:
        """Global ids of the zones holding the block's frames (online blocks)."""
        s, e = self.span(b)
        ft = self.m.ft
        types = ft.flags_np()[s:e] & TYPE_MASK
        present = (types != NOPAGE) & (types != OFFLINE)
        pb = np.frombuffer(ft.pb_zone, dtype=np.uint8)[s >> PAGEBLOCK_ORDER:e >> PAGEBLOCK_ORDER]
        per_pb = present.reshape(-1, 1 << PAGEBLOCK_ORDER).any(axis=1)
        return {int(z) for z in np.unique(pb[per_pb])}

    def zone_of_block(self, b: MemoryBlock):
        """The one zone an online block lies in, or None if it spans several."""
        zids = self._zone_ids(b)
        return self.m.zones[zids.pop()] if len(zids) == 1 else None

    def kernel_zone_idx(self, b: MemoryBlock) -> int:
        return _kernel_zone_idx(self.span(b)[0])

    def allowed_zones(self, b: MemoryBlock) -> list[int]:
        """Zone indexes an offline block may be onlined to, the default first."""
        return self.zones_for(*self.span(b), b.node)

    def zones_for(self, s: int, e: int, node: int) -> list[int]:
        """Zone indexes that could take the frames [s, e) of node, the default first: the
        kernel zone by address and Movable, each if its span would not cross another
        populated zone of the node; Movable first if the range lies in Movable's span."""
        zones = self.m.node_zones[node]
        ok = []
        for zi in (_kernel_zone_idx(s), ZONE_MOVABLE):
            z = zones[zi]
            lo, hi = (min(z.start_pfn, s), max(z.end_pfn, e)) if z.present_pages else (s, e)
            if not any(o is not z and o.present_pages and o.start_pfn < hi and lo < o.end_pfn
                       for o in zones):
                ok.append(zi)
        mz = zones[ZONE_MOVABLE]
        if (ZONE_MOVABLE in ok and mz.present_pages and mz.start_pfn < e and s < mz.end_pfn
                and ok[0] != ZONE_MOVABLE):
            ok.reverse()
        return ok

    def check_online(self, start: int, size: int, node: int, how: str, what: str) -> None:
        """Before memory is added: could its blocks be onlined as how says? (so that a
        refused auto-online changes nothing)"""
        if how == "offline":
            return
        s, e = start >> PAGE_SHIFT, (start + size) >> PAGE_SHIFT
        allowed = self.zones_for(s, e, node)
        zi = (allowed[0] if allowed and how == "online" else
              _kernel_zone_idx(s) if how == "online_kernel" else ZONE_MOVABLE)
        if zi not in allowed:
            raise InvalidArgument(f"{what}: [mem {start:#x}-{start + size - 1:#x}] cannot be "
                                  f"onlined as {how}: {ZONE_NAMES[zi]}'s span on node {node} "
                                  f"would cross another zone")

    def valid_zones(self, b: MemoryBlock) -> str:
        if b.online:
            z = self.zone_of_block(b)
            return z.name if z is not None else "none"
        return " ".join(ZONE_NAMES[zi] for zi in self.allowed_zones(b)) or "none"

    # ------------------------------------------------------------------
    # online
    # ------------------------------------------------------------------

    def online(self, b: MemoryBlock, how: str = "online") -> None:
        if b.online:
            raise InvalidArgument(f"memory{b.index}: already online")
        allowed = self.allowed_zones(b)
        if how == "online":
            if not allowed:
                raise InvalidArgument(f"memory{b.index}: no zone can take it")
            zi = allowed[0]
        else:
            zi = self.kernel_zone_idx(b) if how == "online_kernel" else ZONE_MOVABLE
            if zi not in allowed:
                raise InvalidArgument(
                    f"memory{b.index}: cannot go to {ZONE_NAMES[zi]}: that zone's span would "
                    f"cross another zone of node {b.node} (valid_zones: {self.valid_zones(b)})")
        self._give_to_zone(b, zi)
        self.m.memory_changed()

    def _give_to_zone(self, b: MemoryBlock, zi: int) -> int:
        """online_pages: the block's OFFLINE frames join zone zi. Returns their number."""
        m, ft = self.m, self.m.ft
        z = m.node_zones[b.node][zi]
        s, e = self.span(b)
        flags = ft.flags_np()
        offline = (flags[s:e] & TYPE_MASK) == OFFLINE
        n = int(np.count_nonzero(offline))
        bad = [p for p in m.poisoned if s <= p < e]
        for p in bad:                                # a faulty frame stays out of use
            offline[p - s] = False
            flags[p] = HWPOISON
        ft.pb_zone[s >> PAGEBLOCK_ORDER:e >> PAGEBLOCK_ORDER] = bytes([z.zid]) * (
            (e - s) >> PAGEBLOCK_ORDER)
        ft.pb_mt[s >> PAGEBLOCK_ORDER:e >> PAGEBLOCK_ORDER] = bytes([MigrateType.MOVABLE]) * (
            (e - s) >> PAGEBLOCK_ORDER)
        if z.present_pages:
            z.start_pfn, z.end_pfn = min(z.start_pfn, s), max(z.end_pfn, e)
        else:
            z.start_pfn, z.end_pfn = s, e
        for start, count in mask_runs(offline, s):
            flags[start:start + count] = FREE
            ft.content_np()[start:start + count] = 0
            z.add_free_span(start, start + count)
        z.present_pages += n
        z.managed_pages += n
        b.online = True
        return n

    # ------------------------------------------------------------------
    # offline
    # ------------------------------------------------------------------

    def offline(self, b: MemoryBlock) -> int:
        """offline_pages; returns the pages migrated. Busy/InvalidArgument change nothing."""
        return self.offline_blocks([b])

    def offline_blocks(self, bs: list[MemoryBlock]) -> int:
        """offline_pages over several blocks at once (a DIMM's); returns the pages migrated.

        As Linux isolates the whole range (start_isolate_page_range) before it migrates,
        every block's free frames leave the buddy lists before any page moves: no block can
        be a migration target for another's pages, so each page moves once. The checks come
        first, for all the blocks (each online and in one zone, every page movable, room
        elsewhere for all their pages): Busy/InvalidArgument change nothing."""
        m, ft, vmm = self.m, self.m.ft, self.m.vmm
        plan = []                                    # (block, zone, where, types, in use)
        for b in bs:
            if not b.online:
                raise InvalidArgument(f"memory{b.index}: already offline")
            s, e = self.span(b)
            where = _offlining(s, e)
            z = self.zone_of_block(b)
            if z is None:
                raise InvalidArgument(f"{where} failed: the block spans more than one zone")
            types = ft.flags_np()[s:e] & TYPE_MASK
            in_use = np.flatnonzero((types != NOPAGE) & (types != FREE) & (types != OFFLINE)
                                    & (types != HWPOISON)) + s
            for pfn in in_use.tolist():
                if not vmm.movable(pfn):
                    t = int(ft.flags[pfn] & TYPE_MASK)
                    why = UNMOVABLE_WHY.get(t, "held by a fault in progress")
                    raise Busy(f"{where} failed: pfn {pfn:#x} cannot be migrated "
                               f"({PageType(t).name}: {why})")
            plan.append((b, z, where, types, in_use))
        if not plan:
            return 0
        # What the allocator can give a migration: free frames above each zone's min
        # watermark and its protection for a movable request, the blocks' own not counted.
        free_here: dict[int, int] = {}
        for _, z, _, types, _ in plan:
            free_here[z.zid] = free_here.get(z.zid, 0) + int(np.count_nonzero(types == FREE))
        room = sum(max(0, o.free_pages - free_here.get(o.zid, 0) - o.wmark_min
                       - o.lowmem_reserve[ZONE_MOVABLE]) for o in m.zones if o.managed_pages)
        need = sum(p[4].size for p in plan)
        if need > room:
            where = plan[0][2] if len(plan) == 1 else _offlining(
                min(self.span(p[0])[0] for p in plan), max(self.span(p[0])[1] for p in plan))
            raise Busy(f"{where} failed: {need} pages to migrate but only {room} "
                       f"frames free elsewhere above the min watermarks")
        zones = list({z.zid: z for _, z, _, _, _ in plan}.values())
        for z in zones:
            z.drain_pcp()
        isolated = []                                # (zone, free runs taken)
        for b, z, _, types, _ in plan:
            free_runs = mask_runs(types == FREE, self.span(b)[0])
            for start, count in free_runs:
                z.take_range(start, start + count)
                ft.flags_np()[start:start + count] = OFFLINE
            isolated.append((z, free_runs))
        moved = []                                   # (zone, pfn) of the pages moved
        for _, z, where, _, in_use in plan:
            for old in in_use.tolist():
                new = vmm.migration_target(old)
                if new is None:
                    self._undo_offline(isolated, moved)
                    raise Busy(f"{where} failed: no free frame to migrate pfn {old:#x} to "
                               f"({len(moved)} pages had moved and stay moved)")
                vmm.migrate_page(old, new)
                ft.flags[old] = OFFLINE
                ft.content[old] = 0
                moved.append((z, old))
        offlined = []
        for b, z, _, types, _ in plan:
            s, e = self.span(b)
            ft.flags_np()[s:e][types == HWPOISON] = OFFLINE   # m.poisoned remembers them
            n = e - s - int(np.count_nonzero(types == NOPAGE))
            z.present_pages -= n
            z.managed_pages -= n
            b.online = False
            offlined.append(n)
        for z in zones:
            self._shrink_span(z)
        m.memory_changed()
        for n in offlined:
            m.log(f"Offlined Pages {n}")
        return len(moved)

    def _undo_offline(self, isolated, moved) -> None:
        """A migration found no room: the frames taken so far go back to their zones."""
        ft = self.m.ft
        for z, free_runs in isolated:
            for start, count in free_runs:
                ft.flags_np()[start:start + count] = FREE
                z.add_free_span(start, start + count)
        for z, pfn in moved:
            ft.flags[pfn] = FREE
            z.add_free_span(pfn, pfn + 1)

    def _shrink_span(self, z) -> None:
        """shrink_zone_span: the span ends at the first and last pageblocks still in the zone."""
        ft = self.m.ft
        if not z.present_pages:
            z.start_pfn = z.end_pfn = 0
            return
        lo, hi = z.start_pfn >> PAGEBLOCK_ORDER, -(-z.end_pfn >> PAGEBLOCK_ORDER)
        types = ft.flags_np()[lo << PAGEBLOCK_ORDER:hi << PAGEBLOCK_ORDER] & TYPE_MASK
        present = ((types != NOPAGE) & (types != OFFLINE)).reshape(-1, 1 << PAGEBLOCK_ORDER)
        mine = (np.frombuffer(ft.pb_zone, dtype=np.uint8)[lo:hi] == z.zid) & present.any(axis=1)
        idx = np.flatnonzero(mine)
        first, last = (lo + int(idx[0])) << PAGEBLOCK_ORDER, (lo + int(idx[-1]) + 1) << PAGEBLOCK_ORDER
        z.start_pfn, z.end_pfn = max(z.start_pfn, first), min(z.end_pfn, last)

    # ------------------------------------------------------------------
    # adding and removing memory
    # ------------------------------------------------------------------

    def node_of_address(self, addr: int) -> int:
        """memory_add_physaddr_to_nid: the node whose range holds addr, else node 0."""
        for n in self.m.config.nodes:
            if n.start <= addr < n.end:
                return n.id
        return 0

    def check_range(self, start: int, size: int, what: str) -> None:
        """start..start+size may become RAM: block aligned, below MAX_HOTPLUG_ADDR, no block
        there, nothing in iomem."""
        if start + size > self.max_addr:
            raise TooBig(f"{what}: [mem {start:#x}-{start + size - 1:#x}] is beyond the "
                         f"{fmt_size(self.max_addr)} of physical address space memory can be "
                         f"added in (the frame table covers every frame below the highest)")
        if start % self.block_size or size % self.block_size or size <= 0:
            raise InvalidArgument(f"{what}: {start:#x} (+{fmt_size(size)}) is not aligned to the "
                                  f"memory block size {fmt_size(self.block_size)}")
        first = start // self.block_size
        for i in range(first, first + size // self.block_size):
            if i in self.blocks:
                raise Exists(f"{what}: memory{i} ({i * self.block_size:#x}) is already present")
        for _, r in self.m.physmap.walk():
            if r.overlaps(start, start + size) and r.kind != "pci":
                raise Exists(f"{what}: [mem {start:#x}-{start + size - 1:#x}] conflicts with "
                             f"{r.name} [mem {r.start:#x}-{r.end - 1:#x}]")
            if r.kind == "pci" and r.overlaps(start, start + size):
                raise Exists(f"{what}: [mem {start:#x}-{start + size - 1:#x}] lies in the PCI "
                             f"window [mem {r.start:#x}-{r.end - 1:#x}]")

    def add_memory(self, start: int, size: int, node: int, dimm: int | None) -> list[int]:
        """add_memory: the blocks of [start, start + size) become present and offline.
        The caller checked the range. Returns the new blocks' indexes."""
        m, ft = self.m, self.m.ft
        s, e = start >> PAGE_SHIFT, (start + size) >> PAGE_SHIFT
        per_block = -(-self.block_pages * m.config.kernel.struct_page_bytes // PAGE_SIZE)
        nblocks = size // self.block_size
        memmaps = []
        for _ in range(nblocks):
            got = array("I")
            for _ in range(per_block):
                pfn = m.pmm.try_alloc_page(node=node, cpu=0, highest=ZONE_NORMAL,
                                           mt=MigrateType.UNMOVABLE, ptype=PageType.KERNEL)
                if pfn is None:
                    for pfns in memmaps + [got]:
                        for p in pfns:
                            m.pmm.free_page(p, cpu=0)
                    raise OutOfMemory(f"hot-add [mem {start:#x}-{start + size - 1:#x}]: no "
                                      f"memory for its memmap ({per_block} pages a block)")
                got.append(pfn)
            memmaps.append(got)
        ft.grow(e)
        ft.flags_np()[s:e] = OFFLINE
        m.node_ram[node].append((s, e))
        m.node_ram[node].sort()
        m.physmap.insert(Resource(start, start + size, "System RAM", "ram", "wb", ("hotplug",)))
        m.ram_changed()
        out = []
        for k in range(nblocks):
            i = start // self.block_size + k
            self.blocks[i] = MemoryBlock(i, node, False, dimm, memmaps[k])
            out.append(i)
        return out

    def remove_memory(self, indexes: list[int]) -> None:
        """The offline blocks go: frames, memmap, RAM range."""
        m, ft = self.m, self.m.ft
        for i in indexes:
            b = self.blocks.pop(i)
            s, e = self.span(b)
            ft.flags_np()[s:e] = NOPAGE
            ft.content_np()[s:e] = 0
            for p in b.memmap:
                m.pmm.free_page(p, cpu=0)
            ram = m.node_ram[b.node]
            m.node_ram[b.node] = [piece for r in ram for piece in _minus(r, s, e)]
            m.poisoned -= {p for p in m.poisoned if s <= p < e}
        lo = min(indexes) * self.block_size
        hi = (max(indexes) + 1) * self.block_size
        m.physmap.remove(lo, hi, "System RAM")
        m.ram_changed()

    def free_dimm_address(self, size: int) -> int:
        """The lowest block-aligned address from 4 GiB up where size bytes touch nothing."""
        addr = -(-4 * GiB // self.block_size) * self.block_size
        while True:
            clash = [r for _, r in self.m.physmap.walk() if r.overlaps(addr, addr + size)]
            if not clash:
                return addr
            addr = -(-max(r.end for r in clash) // self.block_size) * self.block_size


def _offlining(s: int, e: int) -> str:
    return f"memory offlining [mem {s << PAGE_SHIFT:#018x}-{(e << PAGE_SHIFT) - 1:#018x}]"


def _kernel_zone_idx(pfn: int) -> int:
    """The zone a kernel allocation at pfn belongs to by address: DMA, DMA32 or Normal."""
    return next(zi for zi, (lo, hi) in enumerate(ZONE_LIMITS) if lo <= pfn < hi)


def _minus(r: tuple[int, int], s: int, e: int) -> list[tuple[int, int]]:
    a, b = r
    if b <= s or e <= a:
        return [r]
    return [p for p in ((a, s), (e, b)) if p[0] < p[1]]
