"""check_invariants: the slow, thorough checker that tests run after every scenario.

Owns nothing and changes nothing: it reads a Machine's frame table, buddy
free lists, per-cpu free-page stacks and physical address map, and raises
InternalError, naming what broke and where, the first time one of these fails:

- pfns outside RAM are NOPAGE (flags all zero); RAM frames are typed;
- BUDDY and PCP bits sit only on FREE frames, never together, and the order
  bits only with BUDDY;
- every buddy free list is a well-formed doubly linked list (prev and next
  agree, no cycle), its length equals nr_free[], and each block on it has a
  BUDDY head carrying the list's order, is naturally aligned, lies inside its
  zone (span and pageblock zone ids) and sits on the list of its pageblocks'
  migrate type;
- every per-cpu stack holds only FREE|PCP frames of its own zone, each once,
  and its `count` matches the stacks;
- every FREE frame is accounted exactly once: inside exactly one block on a
  free list, or on exactly one per-cpu stack, never both; nothing else is on
  a list or a stack;
- each zone's free_pages equals the FREE frames in its span, and equals its
  buddy pages plus its per-cpu pages;
- no two free buddies of the same order sit unmerged on the lists (unless a
  pageblock of either is ISOLATE);
- free frames have no mappings; watermarks are ordered min <= low <= high;
- the physical address map is a tree: siblings sorted and disjoint, each
  child inside its parent, every BAR a naturally aligned child of a PCI window;
- memory blocks: an online block holds no OFFLINE frame, an offline one only
  OFFLINE frames (and holes); a hot-added block's memmap frames are KERNEL
  frames, each held once; every HWPOISON frame is in Machine.poisoned and
  every poisoned frame is HWPOISON or in an offline block; zswap's pool and
  balloon frames carry their owner and place in rmap; the BALLOON frames are
  exactly the balloon's;
- the hugetlb pool: the HUGETLB frames are exactly the pool's pages, 512 from
  each head; each head is 512-aligned, its block inside one zone of the node
  that lists it, each head listed once; per-node and total counts agree,
  free <= total; pool frames carry no other flag bit, no mapping, no rmap.

And of its virtual memory (the Vmm and the task table):

- every process's page tables form a tree of four levels from its PGD: each
  table is a PAGETABLE frame in vmm.tables, reached exactly once from exactly
  one address space; vmm.tables and the PAGETABLE frames are exactly those
  tables; upper-level entries are none or _PAGE_TABLE pointers;
- each address space's VMAs are sorted, disjoint, page aligned and inside
  user space; every non-none PTE lies inside a VMA and agrees with it
  (present only where the VMA allows access, PROT_NONE only where it allows
  none, writable only in a writable VMA, NX exactly when it is not
  executable; a writable private page is an exclusively mapped ANON frame;
  anonymous frames never sit in shared VMAs, page-cache frames only in file
  VMAs, each the cache slot of the VMA's file at that offset); the zero page
  is mapped only read-only with SPECIAL, and SPECIAL maps nothing else;
- ANON frames carry their owner's anon family and virtual page in rmap;
  every frame's mapcount equals the PTEs (present or PROT_NONE, not SPECIAL)
  that map it, and an ANON frame no PTE maps is in the swap cache;
- every FILE/SHMEM frame is exactly one cache slot of exactly one file in
  vmm.inodes (rmap names that slot) and every slot holds such a frame; the
  files' nr_cached, nr_dirty and maps (VMAs holding them) are right; no
  shared-memory object outlives its last mapping;
- each address space's rss_anon/rss_file/rss_shmem, swap_ents and pt_pages
  equal what its page tables hold; a swap entry names a slot (1..nr_slots)
  of an active area;
- the per-zone page gauges equal the frames by type, mapping, dirtiness and
  swap cache (nr_anon_pages counts the ANON frames some PTE maps);
- DIRTY sits only on page-cache frames and on swap-cache frames (newer than
  their slot), LAZYFREE only on ANON frames.

And of swap (engine/reclaim), area by area and slot by slot:

- every SWAPCACHE frame is ANON, its swp names a slot of an active area
  whose cache entry is that frame and whose count has HAS_CACHE; every slot
  with a cache entry names such a frame; frames outside the cache have no
  swp; a clean swap-cache frame (no DIRTY, mapped by no dirty PTE) holds
  exactly its slot's data;
- each slot's reference count is the number of swap entries, over every
  process's page tables, that name it; HAS_CACHE iff it has a cache entry;
  the free stack holds each slot nothing references, once, never slot 0
  (the header); used_slots agrees;
- only used slots have a zswap copy; in_zswap, zswap's stored_pages,
  same_filled and pool_bytes add up over the slots; the pool holds exactly
  ceil(pool_bytes / 4096) KERNEL frames, none also held by a memory squeeze.

And of the LRU lists (engine/reclaim/lru.py):

- every ANON, FILE and SHMEM frame carries LRU and is on exactly the list
  its flags and type name (anon lists for ANON and SHMEM, ACTIVE for the
  active ones) of its own node; no other frame carries LRU, ACTIVE,
  REFERENCED or SWAPCACHE; each list's back links mirror its forward links
  (no cycle), its tail is its last frame; frames on no list keep no links;
- the per-zone gauges nr_zone_{in,}active_{anon,file} equal the frames of
  that zone on each list.

And of what each address space caches and limits:

- each leaf_cache entry is the PTE table a walk from the PGD finds;
- a resident-set limit's policy holds only resident pages (a CLOCK circle
  exactly those, its hand on the circle).
- Committed_AS equals the address spaces' VM_ACCOUNT pages plus what live
  shared-memory objects are charged, and each mm.committed its VM_ACCOUNT pages;
- every frame has exactly one owner: RESERVED frames are exactly the boot
  reservations, each zone manages its non-reserved RAM, and the rest are
  free, kernel (palloc), page tables, process pages or page cache.

And of every process's heap (engine/heap), pool by pool:

- segments are 16-byte aligned, non-empty and disjoint (from each other and
  from the heap's own mmapped blocks); the used chunks, the free chunks and
  the top tile each segment exactly, no overlap and no gap; chunks are
  16-byte aligned, at least 32 bytes, multiples of 16; the top sits at the
  end of a segment, or the pool has no segment and no top;
- free, free_end, the size-class bins and binmap describe the same chunks;
  no two free chunks are neighbours in a segment (they would have merged)
  and no free chunk ends where the top begins (it would have joined it);
- every used chunk is a live block (pointer = chunk + 16) of that pool and
  size, and every live block is a used chunk or an mmapped block;
- each block's request (and red zone, with guard on) fits inside its chunk,
  whose last 8 usable bytes are the next chunk's prev_size word, and inside
  its segment: the heap never hands out memory it does not own;
- mmapped blocks are page aligned and lie inside the process's VMAs.

It is O(frames), vectorised with NumPy (the free-list walk is O(free blocks)
in Python, the LRU walk O(user frames), the page-table walk O(tables), the
slot checks O(swap slots)), and never runs on an engine path: tests call it.
It never changes the machine.
"""
from __future__ import annotations

from array import array

import numpy as np

from .errors import InternalError
from .heap.heap import ALIGN as HEAP_ALIGN, FENCE, GUARD, HDR, MINSIZE, size_class
from .pmm.frames import (ACTIVE, BUDDY, DIRTY, KOWNER_BALLOON, KOWNER_ZSWAP, LAZYFREE, LRU, MAX_ORDER, NIL, NR_MIGRATE, NR_ORDERS,
                         ORDER_MASK, ORDER_SHIFT, PAGEBLOCK_ORDER, PCP, REFERENCED, RMAP_INDEX_BITS,
                         SWAPCACHE, HPAGE_PMD_NR, THP_HEAD, THP_TAIL, TYPE_MASK, MigrateType, PageType)
from .pmm.zone import NR_ZONES
from .reclaim.lru import GAUGE as LRU_GAUGE, LRU_NAMES, NR_LRU
from .reclaim.swap import COUNT_MASK, HAS_CACHE, SWP_OFFSET_BITS
from .stats import PageStat
from .vmm import pte as P
from .vmm.files import NO_FRAME
from .vmm.mm import MMAP_MIN_ADDR, PAGE, TASK_SIZE
from .vmm.vma import PROT_BITS, VM_EXEC, VM_SHARED, VM_WRITE

FREE = int(PageType.FREE)
NOPAGE = int(PageType.NOPAGE)
RESERVED = int(PageType.RESERVED)
ANON = int(PageType.ANON)
FILE = int(PageType.FILE)
SHMEM = int(PageType.SHMEM)
PAGETABLE = int(PageType.PAGETABLE)
KERNEL = int(PageType.KERNEL)
OFFLINE = int(PageType.OFFLINE)
HWPOISON = int(PageType.HWPOISON)
BALLOON = int(PageType.BALLOON)
HUGETLB = int(PageType.HUGETLB)
SLOT_MASK = (1 << SWP_OFFSET_BITS) - 1
U64 = np.uint64


def _fail(what: str) -> None:
    raise InternalError(f"check_invariants: {what}")


def _where(z) -> str:
    return f"node {z.node_id} {z.name}"


def _first(mask: np.ndarray, pfns: np.ndarray | None = None) -> int:
    """The first pfn where mask holds (index into pfns when given)."""
    i = int(np.flatnonzero(mask)[0])
    return i if pfns is None else int(pfns[i])


def _spans(zones: dict, zids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start_pfn, end_pfn) arrays of the zones named by zids."""
    zone_ids = np.array(sorted(zones), dtype=np.int64)
    starts = np.array([zones[int(i)].start_pfn for i in zone_ids], dtype=np.int64)
    ends = np.array([zones[int(i)].end_pfn for i in zone_ids], dtype=np.int64)
    at = np.searchsorted(zone_ids, zids)
    return starts[at], ends[at]


def check_invariants(machine) -> None:
    """Raise InternalError naming the first broken invariant of machine's physical or virtual memory."""
    ft = machine.ft
    flags = ft.flags_np()
    zones = {z.zid: z for z in machine.zones}
    _check_ram_and_flag_bits(machine, flags)
    heads, zids, orders, mts = _walk_free_lists(ft, zones)
    _check_blocks(ft, flags, zones, heads, zids, orders, mts)
    _check_pcp(ft, flags, zones)
    _check_accounting(ft, flags, zones, heads, orders)
    _check_merged(ft, flags, zones, heads, zids, orders)
    for z in zones.values():
        if not z.wmark_min <= z.wmark_low <= z.wmark_high:
            _fail(f"{_where(z)}: watermarks out of order: min {z.wmark_min}, low {z.wmark_low}, "
                  f"high {z.wmark_high}")
    _check_physmap(machine.physmap.top, None)
    _check_owners(machine, flags)
    _check_hotplug(machine, flags)
    _check_hugetlb(machine, flags)
    _check_vmm(machine, flags)
    _check_heaps(machine)


# ---------------------------------------------------------------------------
# the frame table alone
# ---------------------------------------------------------------------------

def _ram(machine, n: int) -> np.ndarray:
    """Mask of the pfns that are RAM."""
    ram = np.zeros(n, dtype=bool)
    for ranges in machine.node_ram:
        for s, e in ranges:
            ram[s:e] = True
    return ram


def _check_ram_and_flag_bits(machine, flags: np.ndarray) -> None:
    ram = _ram(machine, flags.size)
    outside = ~ram & (flags != 0)
    if outside.any():
        pfn = _first(outside)
        _fail(f"pfn {pfn:#x} is outside RAM but its flags are {int(flags[pfn]):#06x} "
              f"(expected NOPAGE, 0)")
    ptype = flags & TYPE_MASK
    untyped = ram & (ptype == NOPAGE)
    if untyped.any():
        _fail(f"pfn {_first(untyped):#x} is RAM but typed NOPAGE")
    free = ptype == FREE
    for bit, name in ((BUDDY, "BUDDY"), (PCP, "PCP")):
        stray = ((flags & bit) != 0) & ~free
        if stray.any():
            pfn = _first(stray)
            _fail(f"pfn {pfn:#x} carries {name} but is typed {PageType(int(ptype[pfn])).name}")
    both = ((flags & BUDDY) != 0) & ((flags & PCP) != 0)
    if both.any():
        _fail(f"pfn {_first(both):#x} is both a buddy head (BUDDY) and on a per-cpu stack (PCP)")
    # (the THP_HEAD / THP_TAIL marks of PMD-mapped THPs are checked by _check_thp)
    order_bits = ((flags & ORDER_MASK) != 0) & ((flags & BUDDY) == 0) & (ptype != ANON)
    if order_bits.any():
        pfn = _first(order_bits)
        _fail(f"pfn {pfn:#x} has order bits ({int(flags[pfn]):#06x}) without BUDDY")
    mapped = free & (np.frombuffer(machine.ft.mapcount, dtype=np.uint16) != 0)
    if mapped.any():
        _fail(f"free pfn {_first(mapped):#x} has a non-zero mapcount")


# ---------------------------------------------------------------------------
# buddy free lists
# ---------------------------------------------------------------------------

def _walk_free_lists(ft, zones: dict):
    """Walk every list; return (head pfn, zone id, order, migrate type) arrays of the blocks.

    Checks as it goes that prev links mirror next links (which also rules out
    a cycle: coming back to a visited block needs a second predecessor), that
    no link leaves the frame table and that each list's length equals its
    nr_free counter. The step budget only bounds the time on garbage links.
    """
    content = ft.content
    max_pfn = ft.max_pfn
    heads, zids, orders, mts = [], [], [], []
    budget = max_pfn
    for zid, z in zones.items():
        for order in range(NR_ORDERS):
            for mt in range(NR_MIGRATE):
                li = order * NR_MIGRATE + mt
                where = f"{_where(z)} free list order {order} {MigrateType(mt).name}"
                pfn, prev, n = z.head[li], NIL, 0
                while pfn != NIL:
                    if pfn >= max_pfn:
                        _fail(f"{where}: link to pfn {pfn:#x} beyond the last frame ({max_pfn - 1:#x})")
                    links = content[pfn]
                    if links >> 32 != prev:
                        _fail(f"{where}: pfn {pfn:#x} has prev link {links >> 32:#x}, "
                              f"expected {prev:#x}")
                    heads.append(pfn)
                    n += 1
                    budget -= 1
                    if budget < 0:
                        _fail(f"{where}: the lists hold more blocks than there are frames")
                    prev, pfn = pfn, links & NIL
                if n != z.nr_free[li]:
                    _fail(f"{where}: nr_free says {z.nr_free[li]} blocks, the list holds {n}")
                zids.extend([zid] * n)
                orders.extend([order] * n)
                mts.extend([mt] * n)
    return (np.array(heads, dtype=np.int64), np.array(zids, dtype=np.int64),
            np.array(orders, dtype=np.int64), np.array(mts, dtype=np.int64))


def _check_blocks(ft, flags, zones: dict, heads, zids, orders, mts) -> None:
    if heads.size == 0:
        return
    uniq, counts = np.unique(heads, return_counts=True)
    if (counts > 1).any():
        _fail(f"pfn {int(uniq[_first(counts > 1)]):#x} is on more than one free list")
    hf = flags[heads]
    bad = (hf & BUDDY) == 0
    if bad.any():
        i = _first(bad)
        _fail(f"pfn {int(heads[i]):#x} is on a free list but its head lacks BUDDY "
              f"(flags {int(hf[i]):#06x})")
    bad = ((hf & ORDER_MASK) >> ORDER_SHIFT) != orders
    if bad.any():
        i = _first(bad)
        _fail(f"pfn {int(heads[i]):#x} is on the order {int(orders[i])} list but its head says "
              f"order {int((hf[i] & ORDER_MASK) >> ORDER_SHIFT)}")
    bad = (heads & ((1 << orders) - 1)) != 0
    if bad.any():
        i = _first(bad)
        _fail(f"block {int(heads[i]):#x} of order {int(orders[i])} is not naturally aligned")
    starts, ends = _spans(zones, zids)
    bad = (heads < starts) | (heads + (1 << orders) > ends)
    if bad.any():
        i = _first(bad)
        z = zones[int(zids[i])]
        _fail(f"block {int(heads[i]):#x} of order {int(orders[i])} on {_where(z)}'s lists sticks "
              f"out of the zone's span {z.start_pfn:#x}-{z.end_pfn:#x}")
    # every pageblock a block covers: one entry per pageblock, with the block's zone and type
    per_block = np.where(orders > PAGEBLOCK_ORDER, 1 << np.maximum(orders - PAGEBLOCK_ORDER, 0), 1)
    owner = np.repeat(np.arange(heads.size), per_block)
    offset = np.arange(owner.size) - np.repeat(np.cumsum(per_block) - per_block, per_block)
    pbs = (heads[owner] >> PAGEBLOCK_ORDER) + offset
    pb_zone = np.frombuffer(ft.pb_zone, dtype=np.uint8)
    pb_mt = np.frombuffer(ft.pb_mt, dtype=np.uint8)
    bad = pb_zone[pbs] != zids[owner]
    if bad.any():
        i = _first(bad)
        b = int(owner[i])
        _fail(f"block {int(heads[b]):#x} of order {int(orders[b])} is on "
              f"{_where(zones[int(zids[b])])}'s lists but pageblock {int(pbs[i])} belongs to zone "
              f"id {int(pb_zone[pbs[i]])}")
    bad = pb_mt[pbs] != mts[owner]
    if bad.any():
        i = _first(bad)
        b = int(owner[i])
        _fail(f"block {int(heads[b]):#x} of order {int(orders[b])} is on the "
              f"{MigrateType(int(mts[b])).name} list but its pageblock {int(pbs[i])} is "
              f"{MigrateType(int(pb_mt[pbs[i]])).name}")


# ---------------------------------------------------------------------------
# per-cpu stacks
# ---------------------------------------------------------------------------

def _check_pcp(ft, flags, zones: dict) -> None:
    """Every stack holds FREE|PCP frames of its zone, each once; every PCP frame is stacked."""
    pb_zone = np.frombuffer(ft.pb_zone, dtype=np.uint8)
    everything = []
    for zid, z in zones.items():
        for cpu, pcp in z.pcp.items():
            where = f"{_where(z)} cpu {cpu} per-cpu stacks"
            total = sum(len(s) for s in pcp.stacks)
            if pcp.count != total:
                _fail(f"{where}: count says {pcp.count}, the stacks hold {total}")
            for stack in pcp.stacks:
                if not stack:
                    continue
                pfns = np.frombuffer(stack, dtype=np.uint32).astype(np.int64)
                if (pfns >= ft.max_pfn).any():
                    _fail(f"{where}: pfn {_first(pfns >= ft.max_pfn, pfns):#x} is beyond the last frame")
                bad = flags[pfns] != (FREE | PCP)
                if bad.any():
                    pfn = _first(bad, pfns)
                    _fail(f"{where}: pfn {pfn:#x} has flags {int(flags[pfn]):#06x}, "
                          f"expected FREE|PCP ({FREE | PCP:#06x})")
                bad = (pfns < z.start_pfn) | (pfns >= z.end_pfn) | (pb_zone[pfns >> PAGEBLOCK_ORDER] != zid)
                if bad.any():
                    _fail(f"{where}: pfn {_first(bad, pfns):#x} is not a frame of this zone")
                everything.append(pfns)
    stacked = np.concatenate(everything) if everything else np.zeros(0, dtype=np.int64)
    uniq, counts = np.unique(stacked, return_counts=True)
    if (counts > 1).any():
        _fail(f"pfn {int(uniq[_first(counts > 1)]):#x} is on per-cpu stacks {int(counts.max())} times")
    flagged = int(np.count_nonzero(flags & PCP))
    if flagged != stacked.size:
        on_stack = np.zeros(flags.size, dtype=bool)
        on_stack[stacked] = True
        lost = ((flags & PCP) != 0) & ~on_stack
        _fail(f"pfn {_first(lost):#x} carries PCP but is on no per-cpu stack")


# ---------------------------------------------------------------------------
# accounting and merging
# ---------------------------------------------------------------------------

def _check_accounting(ft, flags, zones: dict, heads, orders) -> None:
    n = flags.size
    ends = heads + (1 << orders)
    cover = np.cumsum(np.bincount(heads, minlength=n + 1) - np.bincount(ends, minlength=n + 1))[:n]
    if (cover > 1).any():
        _fail(f"pfn {_first(cover > 1):#x} lies inside {int(cover.max())} free blocks at once")
    in_block = cover == 1
    free = (flags & TYPE_MASK) == FREE
    bad = in_block & ~free
    if bad.any():
        pfn = _first(bad)
        _fail(f"pfn {pfn:#x} lies inside a free block but is typed "
              f"{PageType(int(flags[pfn] & TYPE_MASK)).name}")
    bad = in_block & ((flags & PCP) != 0)
    if bad.any():
        _fail(f"pfn {_first(bad):#x} is both inside a free block and on a per-cpu stack")
    bad = free & ~in_block & ((flags & PCP) == 0)
    if bad.any():
        _fail(f"free pfn {_first(bad):#x} is in no free block and on no per-cpu stack (leaked)")
    inner = in_block & ((flags & BUDDY) == 0) & (flags != FREE)
    if inner.any():
        pfn = _first(inner)
        _fail(f"pfn {pfn:#x} inside a free block has flags {int(flags[pfn]):#06x}, expected FREE")

    pb_zone = np.frombuffer(ft.pb_zone, dtype=np.uint8)
    free_pfns = np.flatnonzero(free)
    free_zone = pb_zone[free_pfns >> PAGEBLOCK_ORDER].astype(np.int64)
    unknown = ~np.isin(free_zone, np.array(sorted(zones), dtype=np.int64))
    if unknown.any():
        pfn = int(free_pfns[_first(unknown)])
        _fail(f"free pfn {pfn:#x} sits in a pageblock of zone id {int(pb_zone[pfn >> PAGEBLOCK_ORDER])}, "
              f"which does not exist")
    per_zone = np.bincount(free_zone, minlength=max(zones) + 1)
    for zid, z in zones.items():
        span = free[z.start_pfn:z.end_pfn]
        in_span = int(np.count_nonzero(span))
        if in_span != int(per_zone[zid]):
            _fail(f"{_where(z)}: {in_span} FREE frames in its span {z.start_pfn:#x}-{z.end_pfn:#x} "
                  f"but {int(per_zone[zid])} FREE frames in its pageblocks")
        if z.free_pages != in_span:
            _fail(f"{_where(z)}: free_pages says {z.free_pages}, the span holds {in_span} FREE frames")
        buddy = sum(z.nr_free[o * NR_MIGRATE + mt] << o for o in range(NR_ORDERS)
                    for mt in range(NR_MIGRATE))
        pcp = sum(p.count for p in z.pcp.values())
        if buddy + pcp != z.free_pages:
            _fail(f"{_where(z)}: free_pages says {z.free_pages}, buddy lists hold {buddy} and "
                  f"per-cpu stacks {pcp}")


def _check_merged(ft, flags, zones: dict, heads, zids, orders) -> None:
    """No block has a free buddy of its order on the lists that it should have merged with."""
    pb_zone = np.frombuffer(ft.pb_zone, dtype=np.uint8)
    pb_mt = np.frombuffer(ft.pb_mt, dtype=np.uint8)
    sel = orders < MAX_ORDER
    h, zid, o = heads[sel], zids[sel], orders[sel]
    buddy = h ^ (1 << o)
    ok = buddy < flags.size
    h, zid, o, buddy = h[ok], zid[ok], o[ok], buddy[ok]
    bf = flags[buddy]
    same = ((bf & BUDDY) != 0) & (((bf & ORDER_MASK) >> ORDER_SHIFT) == o)
    same &= pb_zone[buddy >> PAGEBLOCK_ORDER] == zid
    starts, ends = _spans(zones, zid)
    same &= (buddy >= starts) & (buddy < ends)
    isolate = (pb_mt[h >> PAGEBLOCK_ORDER] == MigrateType.ISOLATE) | \
              (pb_mt[buddy >> PAGEBLOCK_ORDER] == MigrateType.ISOLATE)
    bad = same & ~isolate
    if bad.any():
        i = _first(bad)
        z = zones[int(zid[i])]
        _fail(f"{_where(z)}: free blocks {int(h[i]):#x} and {int(buddy[i]):#x} of order {int(o[i])} "
              f"are buddies but were not merged")


# ---------------------------------------------------------------------------
# the physical address map
# ---------------------------------------------------------------------------

def _check_physmap(siblings, parent) -> None:
    prev = None
    for r in siblings:
        name = f"iomem {r.name} {r.start:#x}-{r.end:#x}"
        if r.start >= r.end:
            _fail(f"{name} is empty or reversed")
        if parent is not None and not (parent.start <= r.start and r.end <= parent.end):
            _fail(f"{name} sticks out of its parent {parent.name} {parent.start:#x}-{parent.end:#x}")
        if prev is not None and r.start < prev.end:
            _fail(f"{name} overlaps or is listed before its sibling {prev.name} {prev.start:#x}-{prev.end:#x}")
        if r.kind == "bar":
            size = r.end - r.start
            if parent is None or parent.kind != "pci":
                _fail(f"{name} is a BAR outside any PCI window")
            if size & (size - 1) or r.start % size:
                _fail(f"{name} is not a naturally aligned power-of-two BAR")
        _check_physmap(r.children, r)
        prev = r


# ---------------------------------------------------------------------------
# who owns each frame
# ---------------------------------------------------------------------------

def _check_owners(machine, flags: np.ndarray) -> None:
    """RESERVED frames are exactly the boot reservations; each zone manages the rest of its RAM.

    With the per-owner checks of the VMM below this gives every RAM frame one
    owner: free (the buddy checks above), reserved, kernel (palloc), a page
    table, a process page (ANON) or the page cache (FILE, SHMEM).
    """
    n = flags.size
    ptype = flags & TYPE_MASK
    unknown = ptype > max(PageType)
    if unknown.any():
        pfn = _first(unknown)
        _fail(f"pfn {pfn:#x} has type {int(ptype[pfn])}, which is no PageType")
    ram = _ram(machine, n)
    kept = np.zeros(n, dtype=bool)
    for r in machine.reservations:
        kept[r.start_pfn:min(r.end_pfn, n)] = True
    kept &= ram
    bad = (ptype == RESERVED) & ~kept
    if bad.any():
        _fail(f"pfn {_first(bad):#x} is typed RESERVED but lies in no boot reservation")
    bad = kept & (ptype != RESERVED)
    if bad.any():
        pfn = _first(bad)
        what = next(r.what for r in machine.reservations if r.start_pfn <= pfn < r.end_pfn)
        _fail(f"pfn {pfn:#x} lies in the boot reservation '{what}' but is typed "
              f"{PageType(int(ptype[pfn])).name}")
    managed = ram & ~kept & (ptype != OFFLINE)         # an offline block's frames: no zone's
    for z in machine.zones:
        here = int(np.count_nonzero(managed[z.start_pfn:z.end_pfn]))
        if z.managed_pages != here:
            _fail(f"{_where(z)}: managed_pages says {z.managed_pages}, its span holds {here} "
                  f"RAM frames outside the boot reservations")


def _check_hotplug(machine, flags: np.ndarray) -> None:
    hp = machine.hotplug
    ptype = flags & TYPE_MASK
    bp = hp.block_pages
    held = []
    for b in hp.blocks.values():
        s, e = b.index * bp, min((b.index + 1) * bp, flags.size)
        t = ptype[s:e]
        if b.online and (t == OFFLINE).any():
            _fail(f"memory{b.index} is online but pfn {s + _first(t == OFFLINE):#x} is OFFLINE")
        if not b.online and ((t != OFFLINE) & (t != NOPAGE)).any():
            pfn = s + _first((t != OFFLINE) & (t != NOPAGE))
            _fail(f"memory{b.index} is offline but pfn {pfn:#x} is "
                  f"{PageType(int(ptype[pfn])).name}")
        held.append(np.frombuffer(b.memmap, dtype=np.uint32).astype(np.int64))
    memmap = _cat(held)
    bad = ptype[memmap] != KERNEL
    if bad.any():
        _fail(f"memmap frame {int(memmap[_first(bad)]):#x} of a hot-added block is "
              f"{PageType(int(ptype[int(memmap[_first(bad)])])).name}, expected KERNEL")
    if np.unique(memmap).size != memmap.size:
        _fail("a memmap frame is held by two hot-added blocks")
    unknown = [p for p in np.flatnonzero(ptype == HWPOISON).tolist() if p not in machine.poisoned]
    if unknown:
        _fail(f"pfn {unknown[0]:#x} is HWPOISON but not in Machine.poisoned")
    for p in machine.poisoned:
        if p >= flags.size or ptype[p] not in (HWPOISON, OFFLINE):
            _fail(f"poisoned pfn {p:#x} is typed "
                  f"{PageType(int(ptype[p])).name if p < flags.size else 'beyond the table'}")
    for who, owner, table in (("zswap pool", KOWNER_ZSWAP, machine.swap.zswap.frames),
                              ("balloon", KOWNER_BALLOON, machine.balloon.frames)):
        frames = np.frombuffer(table, dtype=np.uint32).astype(np.int64)
        want = (np.uint64(owner) << np.uint64(RMAP_INDEX_BITS)) + np.arange(
            frames.size, dtype=np.uint64)
        bad = machine.ft.rmap_np()[frames] != want
        if bad.any():
            _fail(f"{who} frame {int(frames[_first(bad)]):#x} (#{_first(bad)}) has rmap "
                  f"{int(machine.ft.rmap_np()[frames][_first(bad)]):#x}, expected its owner and "
                  f"place")
    balloon = np.frombuffer(machine.balloon.frames, dtype=np.uint32).astype(np.int64)
    typed = np.flatnonzero(ptype == BALLOON)
    if typed.size != balloon.size or not np.array_equal(np.sort(balloon), typed):
        _fail(f"the balloon holds {balloon.size} frames, {typed.size} frames are typed BALLOON"
              f"{'' if typed.size != balloon.size else ' (not the same ones)'}")


def _check_hugetlb(machine, flags: np.ndarray) -> None:
    """The HUGETLB frames are exactly the pool's pages, each a whole aligned block of one zone
    of its node, unmapped, off every list; the pool's counts add up."""
    pool = machine.hugetlb
    ft = machine.ft
    nr = HPAGE_PMD_NR
    heads = []
    for node, free_list in enumerate(pool.free_lists):
        h = np.frombuffer(free_list, dtype=np.uint32).astype(np.int64)
        if pool.nr_node[node] != h.size:       # every pool page is free: nothing maps one yet
            _fail(f"hugetlb: node {node} counts {pool.nr_node[node]} pool pages, its free list "
                  f"holds {h.size}")
        for pfn in h.tolist():
            if pfn % nr or pfn + nr > flags.size:
                _fail(f"hugetlb: node {node} pool page {pfn:#x} is not a 512-aligned block of RAM")
            zids = ft.pb_zone_np()[pfn >> PAGEBLOCK_ORDER]
            z = next((q for q in machine.zones if q.zid == int(zids)), None)
            if z is None or z.node_id != node or not z.start_pfn <= pfn < pfn + nr <= z.end_pfn:
                _fail(f"hugetlb: pool page {pfn:#x} listed on node {node} lies in "
                      f"{_where(z) if z is not None else 'no zone'}")
        heads.append(h)
    if pool.free > pool.nr or pool.nr != sum(pool.nr_node):
        _fail(f"hugetlb: {pool.free} free of {pool.nr} pool pages (nodes {pool.nr_node})")
    h = _cat(heads)
    if np.unique(h).size != h.size:
        _fail("hugetlb: a pool page is listed twice")
    want = np.zeros(flags.size, dtype=bool)
    for pfn in h.tolist():
        want[pfn:pfn + nr] = True
    typed = (flags & TYPE_MASK) == HUGETLB
    if (typed != want).any():
        pfn = _first(typed != want)
        _fail(f"hugetlb: pfn {pfn:#x} is typed {PageType(int(flags[pfn] & TYPE_MASK)).name} but "
              f"{'is' if want[pfn] else 'is not'} in a pool page")
    extra = typed & (flags != HUGETLB)
    if extra.any():
        pfn = _first(extra)
        _fail(f"hugetlb: pool frame {pfn:#x} carries flag bits {int(flags[pfn]):#06x} "
              f"(LRU, dirty, ... : expected none)")
    mapped = typed & ((ft.mapcount_np() != 0) | (ft.rmap_np() != 0))
    if mapped.any():
        _fail(f"hugetlb: pool frame {_first(mapped):#x} has a mapcount or an rmap owner")


# ---------------------------------------------------------------------------
# virtual memory: page tables, mappings, page cache, gauges, commit
# ---------------------------------------------------------------------------

def _who(p) -> str:
    return f"pid {p.pid} ({p.comm})"


def _check_vmm(machine, flags: np.ndarray) -> None:
    zero = machine.vmm.zero_pfn
    if not 0 <= zero < flags.size or flags[zero] & TYPE_MASK != RESERVED:
        _fail(f"the zero page {zero:#x} is not a RESERVED frame of the kernel image")
    spaces = _address_spaces(machine)
    for p, mm in spaces:
        _check_vmas(machine, p, mm)
    leaves = _walk_page_tables(machine, flags, spaces)
    mapped_pfns, private_rw, swap_keys, dirty_pfns = [], [], [], []
    for (p, mm), tables in zip(spaces, leaves):
        pfns, rw, keys, dirty = _check_entries(machine, flags, p, mm, tables)
        mapped_pfns.append(pfns)
        private_rw.append((p, rw))
        swap_keys.append(keys)
        dirty_pfns.append(dirty)
    _check_mapcounts(machine, flags, mapped_pfns, private_rw)
    _check_page_cache(machine, flags, spaces)
    _check_swap(machine, flags, _cat(swap_keys), _cat(dirty_pfns))
    _check_lru(machine, flags)
    _check_thp(machine, flags, spaces)
    _check_vmm_gauges(machine, flags)
    _check_commit(machine, spaces)
    _check_limits(machine, spaces)


def _cat(parts: list) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _address_spaces(machine) -> list:
    """(process, mm) of every process with an address space; each mm belongs to one process."""
    out, seen = [], {}
    for pid, p in machine.tasks.procs.items():
        if p.pid != pid:
            _fail(f"the task table files {_who(p)} under pid {pid}")
        if p.mm is None:
            if not p.kthread:
                _fail(f"{_who(p)} is a user process without an address space")
            continue
        if p.kthread:
            _fail(f"{_who(p)} is a kernel thread with an address space")
        if id(p.mm) in seen:
            _fail(f"{_who(p)} shares its address space with pid {seen[id(p.mm)]}")
        seen[id(p.mm)] = pid
        out.append((p, p.mm))
    return out


def _check_vmas(machine, p, mm) -> None:
    """Sorted, disjoint, page-aligned VMAs inside user space, files known to the Vmm."""
    if mm._starts != [v.start for v in mm.vmas]:
        _fail(f"{_who(p)}: the VMA start index {[hex(x) for x in mm._starts]} disagrees with "
              f"the VMAs {mm.vmas}")
    inodes = machine.vmm.inodes
    prev = None
    for v in mm.vmas:
        where = f"{_who(p)}: VMA {v.start:#x}-{v.end:#x}"
        if v.start % PAGE or v.end % PAGE or v.start >= v.end:
            _fail(f"{where} is empty, reversed or not page aligned")
        if v.start < MMAP_MIN_ADDR or v.end > TASK_SIZE:
            _fail(f"{where} is outside user space [{MMAP_MIN_ADDR:#x}, {TASK_SIZE:#x})")
        if prev is not None and v.start < prev.end:
            _fail(f"{where} overlaps or is listed after {prev.start:#x}-{prev.end:#x}")
        if v.file is not None and inodes.get(v.file.ino) is not v.file:
            _fail(f"{where} maps {v.file.path} (inode {v.file.ino}), which is not in vmm.inodes")
        if v.shared and v.file is None:
            _fail(f"{where} is shared anonymous memory without a shmem object behind it")
        prev = v


def _walk_page_tables(machine, flags: np.ndarray, spaces) -> list:
    """Walk every address space's tables; per space, the [(pfn, va of entry 0)] of its PTE tables.

    Each table must be a PAGETABLE frame in vmm.tables, reached once (which
    also rules out cycles); vmm.tables and the PAGETABLE frames must be
    exactly the tables reached.
    """
    vmm = machine.vmm
    n = flags.size
    owner: dict[int, tuple[int, int, int]] = {}
    leaves = []
    for p, mm in spaces:
        mine, count = [], 0
        todo = [(mm.pgd, 0, 0)] + [(dep, 3, region << 21) for region, dep in mm.thp.items()]
        while todo:
            pfn, level, va = todo.pop()
            where = f"{_who(p)}: {P.LEVEL_NAMES[level]} table at pfn {pfn:#x} (va {va:#x})"
            if not 0 <= pfn < n:
                _fail(f"{where} is beyond the last frame ({n - 1:#x})")
            if pfn in owner:
                opid, olevel, ova = owner[pfn]
                _fail(f"{where} is reached twice: it is also the {P.LEVEL_NAMES[olevel]} table "
                      f"for va {ova:#x} of pid {opid}")
            owner[pfn] = (p.pid, level, va)
            if flags[pfn] & TYPE_MASK != PAGETABLE:
                _fail(f"{where} is typed {PageType(int(flags[pfn] & TYPE_MASK)).name}, "
                      f"expected PAGETABLE")
            t = vmm.tables.get(pfn)
            if t is None:
                _fail(f"{where} is not in vmm.tables")
            if len(t) != P.ENTRIES:
                _fail(f"{where} has {len(t)} entries, expected {P.ENTRIES}")
            count += 1
            if level == 3:
                if (va >> 21) in mm.thp and mm.thp[va >> 21] == pfn:
                    if np.frombuffer(t, dtype=U64).any():
                        _fail(f"{where}: the table deposited for a huge page has entries")
                    continue
                mine.append((t, va))
                continue
            ents = np.frombuffer(t, dtype=U64)
            nz = np.flatnonzero(ents)
            if level == 2:
                huge = nz[(ents[nz] & U64(P.PSE | P.P)) == U64(P.PSE | P.P)]
                for i in huge.tolist():
                    _check_huge_pmd(machine, flags, p, mm, va | (i << 21), int(ents[i]))
                    mine.append((machine.vmm.huge_entries(int(ents[i])), va | (i << 21)))
                nz = nz[(ents[nz] & U64(P.PSE)) == 0]
            bad = (ents[nz] & U64(~P.PFN_MASK & P.MASK64)) != U64(P.PAGE_TABLE)
            if bad.any():
                i = int(nz[_first(bad)])
                _fail(f"{where}: entry {i} is {int(ents[i]):#018x}, expected none or a table "
                      f"pointer (flags {P.PAGE_TABLE:#x})")
            for i in nz:
                child_va = va | (int(i) << P.LEVEL_SHIFTS[level])
                if child_va >= TASK_SIZE:
                    _fail(f"{where}: entry {int(i)} maps va {child_va:#x}, beyond user space")
                todo.append((int((ents[i] & U64(P.PFN_MASK)) >> U64(12)), level + 1, child_va))
        if mm.pt_pages != count - 1:
            _fail(f"{_who(p)}: pt_pages says {mm.pt_pages}, its page tables hold {count - 1} "
                  f"tables besides the PGD")
        leaves.append(mine)
    stray = set(vmm.tables) - owner.keys()
    if stray:
        _fail(f"vmm.tables holds pfn {min(stray):#x}, which no process's page tables reach")
    typed = np.flatnonzero((flags & TYPE_MASK) == PAGETABLE)
    if typed.size != len(owner):
        reached = np.zeros(n, dtype=bool)
        reached[np.fromiter(owner, dtype=np.int64, count=len(owner))] = True
        lost = typed[~reached[typed]]
        _fail(f"pfn {int(lost[0]):#x} is typed PAGETABLE but is no process's page table (leaked)")
    return leaves


def _check_huge_pmd(machine, flags: np.ndarray, p, mm, va: int, e: int) -> None:
    """A PMD entry mapping a THP: recorded in mm.thp with its deposited table, inside one
    private anonymous VMA, 512 aligned ANON frames of one zone marked head and tails."""
    where = f"{_who(p)}: huge PMD for va {va:#x} ({e:#018x})"
    if (va >> 21) not in mm.thp:
        _fail(f"{where} has no deposited table in mm.thp")
    vma = mm.find(va)
    if vma is None or vma.file is not None or vma.shared or vma.end < va + (HPAGE_PMD_NR << 12) \
            or vma.start > va:
        _fail(f"{where} is not inside one private anonymous VMA ({vma!r})")
    head = (e & P.PFN_MASK) >> 12
    if head % HPAGE_PMD_NR or head + HPAGE_PMD_NR > flags.size:
        _fail(f"{where}: head pfn {head:#x} is not a 512-aligned block of frames")
    f = flags[head:head + HPAGE_PMD_NR]
    if ((f & TYPE_MASK) != ANON).any():
        _fail(f"{where}: frame {head + _first((f & TYPE_MASK) != ANON):#x} is not ANON")
    if f[0] & ORDER_MASK != THP_HEAD or ((f[1:] & ORDER_MASK) != THP_TAIL).any():
        _fail(f"{where}: its frames are not marked THP head then 511 tails")
    if machine.ft.pb_zone[head >> 9] != machine.ft.pb_zone[(head + HPAGE_PMD_NR - 1) >> 9]:
        _fail(f"{where}: the block spans two zones")


def _check_thp(machine, flags: np.ndarray, spaces) -> None:
    """Every THP mark belongs to a PMD-mapped huge page; mm.thp names exactly the huge PMDs;
    the nr_anon_transparent_hugepages gauges count them."""
    marked = ((flags & TYPE_MASK) == ANON) & ((flags & ORDER_MASK) != 0)
    heads = set(np.flatnonzero(marked & ((flags & ORDER_MASK) == THP_HEAD)).tolist())
    per_zone = [0] * len(machine.vmm.gauges)
    found = set()
    for p, mm in spaces:
        for region in mm.thp:
            t = _table_of_pmd(machine, mm, region << 21)
            e = t[region & 511] if t is not None else 0
            if not e & P.PSE:
                _fail(f"{_who(p)}: mm.thp lists va {region << 21:#x}, mapped by no huge PMD")
            head = (e & P.PFN_MASK) >> 12
            found.add(head)
            per_zone[machine.ft.pb_zone[head >> 9]] += 1
    if heads != found:
        _fail(f"THP heads marked in the frame table {sorted(heads)[:4]} differ from the huge "
              f"PMDs' {sorted(found)[:4]}")
    if int(marked.sum()) != HPAGE_PMD_NR * len(found):
        _fail(f"{int(marked.sum())} frames carry THP marks, {len(found)} huge pages hold "
              f"{HPAGE_PMD_NR * len(found)}")
    for zid, n in enumerate(per_zone):
        if machine.vmm.gauges[zid][PageStat.ANON_THPS] != n:
            _fail(f"zone {zid}: nr_anon_transparent_hugepages says "
                  f"{machine.vmm.gauges[zid][PageStat.ANON_THPS]}, {n} huge PMDs map its frames")


def _table_of_pmd(machine, mm, va: int):
    """The PMD table covering va, walked from the PGD (or None)."""
    tables = machine.vmm.tables
    t = tables[mm.pgd]
    for shift in (39, 30):
        e = t[(va >> shift) & 511]
        if not e & P.P:
            return None
        t = tables[(e & P.PFN_MASK) >> 12]
    return t


def _entries(machine, tables) -> tuple[np.ndarray, np.ndarray]:
    """(vas, entries) of the non-none entries of the given PTE tables (a huge PMD's as the
    512 PTEs it stands for)."""
    vas, ents = [], []
    for t, base in tables:
        e = np.frombuffer(t, dtype=U64)
        nz = np.flatnonzero(e)
        if nz.size:
            vas.append(base + nz.astype(np.int64) * PAGE)
            ents.append(e[nz])
    if not vas:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=U64)
    return np.concatenate(vas), np.concatenate(ents)


def _check_entries(machine, flags: np.ndarray, p, mm, tables):
    """Check one address space's PTEs against its VMAs and frames.

    Returns (pfns it maps, counted for mapcount; pfns it maps writable in
    private VMAs, which must be exclusively mapped ANON frames).
    """
    vmm, ft = machine.vmm, machine.ft
    n = flags.size
    vas, ents = _entries(machine, tables)
    none = np.zeros(0, dtype=np.int64)
    if not vas.size:
        if mm.rss or mm.swap_ents:
            _fail(f"{_who(p)}: rss says anon {mm.rss_anon} file {mm.rss_file} shmem "
                  f"{mm.rss_shmem} swap {mm.swap_ents}, its page tables map nothing")
        return none, none, none, none

    def bad_entry(mask, what):
        i = _first(mask)
        _fail(f"{_who(p)}: PTE for va {int(vas[i]):#x} ({int(ents[i]):#018x}) {what}")

    # which VMA each entry lies in
    if not mm.vmas:
        bad_entry(np.ones(vas.size, dtype=bool), "lies outside every VMA (it has none)")
    starts = np.array([v.start for v in mm.vmas], dtype=np.int64)
    ends = np.array([v.end for v in mm.vmas], dtype=np.int64)
    vflags = np.array([v.flags for v in mm.vmas], dtype=np.int64)
    has_file = np.array([v.file is not None for v in mm.vmas], dtype=bool)
    at = np.maximum(np.searchsorted(starts, vas, side="right") - 1, 0)
    outside = (vas < starts[at]) | (vas >= ends[at])
    if outside.any():
        bad_entry(outside, "lies outside every VMA")
    vf = vflags[at]

    present = (ents & U64(P.P)) != 0
    protnone = ~present & ((ents & U64(P.PROTNONE)) != 0)
    mapped = present | protnone
    raw = np.where(present, ents, ~ents)
    pfns = ((raw & U64(P.PFN_MASK)) >> U64(P.PFN_SHIFT)).astype(np.int64)

    # swap-style entries: a real swap area's slot, counted in swap_ents
    swapped = ~mapped
    if swapped.any():
        types = (ents >> U64(P.SWP_TYPE_SHIFT)).astype(np.int64)
        offsets = ((~ents << U64(P.SWP_TYPE_BITS)) >> U64(P.SWP_OFFSET_SHIFT)).astype(np.int64)
        areas = machine.swap.areas
        bad = swapped & (types >= len(areas))
        if bad.any():
            bad_entry(bad, f"is a swap-style entry of type {int(types[_first(bad)])}, but the "
                           f"machine has {len(areas)} swap types")
        slots = np.array([d.nr_slots + 1 if d is not None else 0 for d in areas] or [0],
                         dtype=np.int64)
        bad = swapped & (slots[np.where(swapped, types, 0)] == 0)
        if bad.any():
            bad_entry(bad, f"names swap type {int(types[_first(bad)])}, which is no active area "
                           f"(swapped off)")
        bad = swapped & ((offsets < 1) | (offsets >= slots[np.where(swapped, types, 0)]))
        if bad.any():
            bad_entry(bad, f"names slot {int(offsets[_first(bad)])}, outside its swap area's "
                           f"slots (1 to the last; slot 0 is the header)")
    nr_swap = int(np.count_nonzero(swapped))
    if mm.swap_ents != nr_swap:
        _fail(f"{_who(p)}: swap_ents says {mm.swap_ents}, its page tables hold {nr_swap} "
              f"swap entries")

    bad = mapped & (pfns >= n)
    if bad.any():
        bad_entry(bad, f"maps a frame beyond the last one ({n - 1:#x})")
    safe = np.where(mapped, pfns, 0)
    ptype = (flags[safe] & TYPE_MASK).astype(np.int64)
    special = mapped & ((ents & U64(P.SPECIAL)) != 0)
    rw = (ents & U64(P.RW)) != 0
    zero = vmm.zero_pfn

    # the zero page: SPECIAL, read-only, private anonymous VMAs only; SPECIAL maps nothing else
    bad = special & (pfns != zero)
    if bad.any():
        bad_entry(bad, f"is SPECIAL but maps pfn {int(pfns[_first(bad)]):#x}, not the zero "
                       f"page {zero:#x}")
    bad = special & rw
    if bad.any():
        bad_entry(bad, "maps the zero page writable")
    bad = special & (has_file[at] | ((vf & VM_SHARED) != 0))
    if bad.any():
        bad_entry(bad, "maps the zero page in a file or shared VMA")
    page = mapped & ~special
    bad = page & (pfns == zero)
    if bad.any():
        bad_entry(bad, "maps the zero page without SPECIAL (it would be counted)")
    bad = page & (ptype != ANON) & (ptype != FILE) & (ptype != SHMEM)
    if bad.any():
        i = _first(bad)
        bad_entry(bad, f"maps pfn {int(pfns[i]):#x}, which is typed "
                       f"{PageType(int(ptype[i])).name}, not a user page")

    # the entry agrees with its VMA's protection
    prot = (vf & PROT_BITS) != 0
    bad = present & ~prot
    if bad.any():
        bad_entry(bad, "is present in a PROT_NONE VMA (it should be a PROT_NONE entry)")
    bad = protnone & prot
    if bad.any():
        bad_entry(bad, "is a PROT_NONE entry in an accessible VMA")
    bad = present & rw & ((vf & VM_WRITE) == 0)
    if bad.any():
        bad_entry(bad, "is writable in a VMA without VM_WRITE")
    nx = (ents & U64(P.NX)) != 0
    bad = present & (nx != ((vf & VM_EXEC) == 0))
    if bad.any():
        bad_entry(bad, "has NX set where the VMA is executable or clear where it is not")
    bad = present & ((ents & U64(P.US)) == 0)
    if bad.any():
        bad_entry(bad, "lacks the user bit")

    # what kind of frame sits in what kind of VMA
    shared_vma = (vf & VM_SHARED) != 0
    bad = page & (ptype == ANON) & shared_vma
    if bad.any():
        bad_entry(bad, "maps an ANON frame in a shared VMA")
    bad = page & (ptype != ANON) & ~has_file[at]
    if bad.any():
        bad_entry(bad, "maps a page-cache frame in an anonymous VMA")
    cached = page & (ptype != ANON)
    for k in np.unique(at[cached]):
        v = mm.vmas[int(k)]
        sel = cached & (at == k)
        index = v.pgoff + ((vas[sel] - v.start) >> 12)
        past = index >= v.file.nr_pages
        if past.any():
            _fail(f"{_who(p)}: PTE for va {int(vas[sel][_first(past)]):#x} maps page "
                  f"{int(index[_first(past)])} of {v.file.path}, past its end "
                  f"({v.file.nr_pages} pages)")
        want = v.file.cache[index]
        wrong = want != pfns[sel]
        if wrong.any():
            i = _first(wrong)
            _fail(f"{_who(p)}: PTE for va {int(vas[sel][i]):#x} maps pfn {int(pfns[sel][i]):#x}, "
                  f"but page {int(index[i])} of {v.file.path} is cached in "
                  f"{'no frame' if want[i] == NO_FRAME else f'pfn {int(want[i]):#x}'}")
        kind = SHMEM if v.file.shmem else FILE
        wrong = ptype[sel] != kind
        if wrong.any():
            _fail(f"{_who(p)}: PTE for va {int(vas[sel][_first(wrong)]):#x} maps a "
                  f"{PageType(int(ptype[sel][_first(wrong)])).name} frame from "
                  f"{v.file.path}, expected {PageType(kind).name}")

    # anonymous frames name their owner: this process's anon family and virtual page
    anon = page & (ptype == ANON)
    rmap = ft.rmap_np()[safe[anon]]
    want = (U64(p.anon_family) << U64(RMAP_INDEX_BITS)) | (vas[anon] >> 12).astype(U64)
    wrong = rmap != want
    if wrong.any():
        i = _first(wrong)
        _fail(f"{_who(p)}: ANON pfn {int(pfns[anon][i]):#x} at va {int(vas[anon][i]):#x} has "
              f"rmap {int(rmap[i]):#x}, expected {int(want[i]):#x} (anon family "
              f"{p.anon_family}, page {int(vas[anon][i]) >> 12:#x})")

    # rss
    for name, kind, have in (("rss_anon", ANON, mm.rss_anon), ("rss_file", FILE, mm.rss_file),
                             ("rss_shmem", SHMEM, mm.rss_shmem)):
        counted = int(np.count_nonzero(page & (ptype == kind)))
        if have != counted:
            _fail(f"{_who(p)}: {name} says {have}, its page tables map {counted} "
                  f"{PageType(kind).name} frames")
    # swap entries as slot keys (type << SWP_OFFSET_BITS | offset), for the slot counts
    keys = none
    if swapped.any():
        keys = (types[swapped] << SWP_OFFSET_BITS) | offsets[swapped]
    written = page & ((ents & U64(P.DIRTY)) != 0)
    return pfns[page], pfns[page & present & rw & ~shared_vma], keys, pfns[written]


def _check_mapcounts(machine, flags: np.ndarray, mapped_pfns, private_rw) -> None:
    """mapcount is the number of PTEs mapping each frame; ANON frames are always mapped."""
    n = flags.size
    ptes = np.bincount(np.concatenate(mapped_pfns) if mapped_pfns else np.zeros(0, np.int64),
                       minlength=n)
    mc = machine.ft.mapcount_np().astype(np.int64)
    wrong = ptes != mc
    if wrong.any():
        pfn = _first(wrong)
        _fail(f"pfn {pfn:#x} ({PageType(int(flags[pfn] & TYPE_MASK)).name}) has mapcount "
              f"{int(mc[pfn])}, but {int(ptes[pfn])} PTEs map it")
    orphan = ((flags & TYPE_MASK) == ANON) & (mc == 0) & ((flags & SWAPCACHE) == 0)
    if orphan.any():
        _fail(f"ANON pfn {_first(orphan):#x} is mapped by no PTE and is not in the swap cache "
              f"(leaked)")
    for p, rw in private_rw:
        bad = mc[rw] != 1
        if bad.any():
            pfn = int(rw[_first(bad)])
            _fail(f"{_who(p)}: pfn {pfn:#x} is mapped writable in a private VMA but {int(mc[pfn])} "
                  f"PTEs map it (copy-on-write broken)")
        bad = (flags[rw] & TYPE_MASK) != ANON
        if bad.any():
            pfn = int(rw[_first(bad)])
            _fail(f"{_who(p)}: {PageType(int(flags[pfn] & TYPE_MASK)).name} pfn {pfn:#x} is mapped "
                  f"writable in a private VMA (a write would reach the page cache)")


def _check_page_cache(machine, flags: np.ndarray, spaces) -> None:
    """Each FILE/SHMEM frame is one cache slot of one file; the files' counters are right."""
    vmm, ft = machine.vmm, machine.ft
    n = flags.size
    ptype = flags & TYPE_MASK
    holders: dict[int, int] = {}
    for _, mm in spaces:
        for v in mm.vmas:
            if v.file is not None:
                holders[id(v.file)] = holders.get(id(v.file), 0) + 1
    rmap = ft.rmap_np()
    slot_pfns, slot_inos = [], []
    for ino, f in vmm.inodes.items():
        where = f"file {f.path} (inode {ino})"
        if f.ino != ino:
            _fail(f"{where}: vmm.inodes files it under inode {ino}, it says {f.ino}")
        if f.nr_pages != -(-f.size // PAGE) or f.cache.size != f.nr_pages:
            _fail(f"{where}: {f.size} bytes, nr_pages {f.nr_pages}, {f.cache.size} cache slots")
        if f.shmem:
            if f.maps == 0:
                _fail(f"{where}: a shared-memory object outlived its last mapping")
        else:
            if f.disk is None or f.disk.size != f.nr_pages:
                _fail(f"{where}: its disk holds {0 if f.disk is None else f.disk.size} pages, "
                      f"expected {f.nr_pages}")
            if f.charged:
                _fail(f"{where}: a regular file is charged {f.charged} pages to Committed_AS")
            if vmm.files.get(f.path) is not f:
                _fail(f"{where}: not in vmm.files under its path")
        if f.maps != holders.get(id(f), 0):
            _fail(f"{where}: maps says {f.maps}, {holders.get(id(f), 0)} VMAs map it")
        held = np.flatnonzero(f.cache != NO_FRAME)
        if held.size != f.nr_cached:
            _fail(f"{where}: nr_cached says {f.nr_cached}, its cache holds {held.size} frames")
        pfns = f.cache[held]
        bad = (pfns < 0) | (pfns >= n)
        if bad.any():
            _fail(f"{where}: page {int(held[_first(bad)])} is cached in pfn "
                  f"{int(pfns[_first(bad)])}, not a frame")
        kind = SHMEM if f.shmem else FILE
        bad = ptype[pfns] != kind
        if bad.any():
            i = _first(bad)
            _fail(f"{where}: page {int(held[i])} is cached in pfn {int(pfns[i]):#x}, typed "
                  f"{PageType(int(ptype[pfns[i]])).name}, expected {PageType(kind).name}")
        want = (U64(ino) << U64(RMAP_INDEX_BITS)) | held.astype(U64)
        bad = rmap[pfns] != want
        if bad.any():
            i = _first(bad)
            _fail(f"{where}: pfn {int(pfns[i]):#x} caches page {int(held[i])} but its rmap is "
                  f"{int(rmap[pfns[i]]):#x}, expected {int(want[i]):#x}")
        dirty = int(np.count_nonzero(flags[pfns] & DIRTY))
        if dirty != f.nr_dirty:
            _fail(f"{where}: nr_dirty says {f.nr_dirty}, {dirty} of its cached frames are DIRTY")
        slot_pfns.append(pfns)
        slot_inos.append(np.full(pfns.size, ino, dtype=np.int64))
    for path, f in vmm.files.items():
        if f.path != path or f.shmem or vmm.inodes.get(f.ino) is not f:
            _fail(f"vmm.files[{path!r}] is {f!r}, not the regular file of that path in vmm.inodes")
    cached = np.concatenate(slot_pfns) if slot_pfns else np.zeros(0, dtype=np.int64)
    inos = np.concatenate(slot_inos) if slot_inos else np.zeros(0, dtype=np.int64)
    uniq, first, counts = np.unique(cached, return_index=True, return_counts=True)
    if (counts > 1).any():
        pfn = int(uniq[_first(counts > 1)])
        owners = sorted({vmm.inodes[int(i)].path for i in inos[cached == pfn]})
        _fail(f"pfn {pfn:#x} sits in {int(counts.max())} cache slots (of {', '.join(owners)})")
    in_cache = np.zeros(n, dtype=bool)
    in_cache[cached] = True
    lost = ((ptype == FILE) | (ptype == SHMEM)) & ~in_cache
    if lost.any():
        pfn = _first(lost)
        _fail(f"pfn {pfn:#x} is typed {PageType(int(ptype[pfn])).name} but is in no file's "
              f"page cache (leaked)")
    swapcache = (ptype == ANON) & ((flags & SWAPCACHE) != 0)
    bad = ((flags & DIRTY) != 0) & (ptype != FILE) & ~swapcache
    if bad.any():
        pfn = _first(bad)
        _fail(f"pfn {pfn:#x} carries DIRTY but is typed {PageType(int(ptype[pfn])).name}"
              f"{' outside the swap cache' if ptype[pfn] == ANON else ''} (only page-cache "
              f"frames and swap-cache frames newer than their slot may be dirty)")
    bad = ((flags & LAZYFREE) != 0) & (ptype != ANON)
    if bad.any():
        pfn = _first(bad)
        _fail(f"pfn {pfn:#x} carries LAZYFREE but is typed {PageType(int(ptype[pfn])).name}")


def _check_vmm_gauges(machine, flags: np.ndarray) -> None:
    """The per-zone page gauges equal the frames they count."""
    gauges = machine.vmm.gauges
    nz = len(machine.zones)
    if len(gauges) != nz:
        _fail(f"vmm.gauges has {len(gauges)} zones, the machine {nz}")
    n = flags.size
    ptype = flags & TYPE_MASK
    zone = np.frombuffer(machine.ft.pb_zone, dtype=np.uint8)[np.arange(n) >> PAGEBLOCK_ORDER]
    mc = machine.ft.mapcount_np()
    anon, file, shmem = ptype == ANON, ptype == FILE, ptype == SHMEM
    cache = file | shmem
    expect = (
        ("nr_anon_pages (ANON frames some PTE maps)", (PageStat.ANON,), anon & (mc > 0)),
        ("nr_file_pages", (PageStat.FILE,), cache),
        ("nr_shmem", (PageStat.SHMEM,), shmem),
        ("nr_mapped", (PageStat.FILE_MAPPED,), cache & (mc > 0)),
        ("nr_page_table_pages", (PageStat.PAGETABLE,), ptype == PAGETABLE),
        ("nr_dirty", (PageStat.FILE_DIRTY,), file & ((flags & DIRTY) != 0)),
        ("nr_swapcached", (PageStat.SWAPCACHE,), anon & ((flags & SWAPCACHE) != 0)),
        ("the anon LRU lists", (PageStat.INACTIVE_ANON, PageStat.ACTIVE_ANON), anon | shmem),
        ("the file LRU lists", (PageStat.INACTIVE_FILE, PageStat.ACTIVE_FILE), file),
    )
    for z in machine.zones:
        g = gauges[z.zid]
        for stat in PageStat:
            if g[stat] < 0:
                _fail(f"{_where(z)}: gauge {stat.name} is negative ({g[stat]})")
    for what, stats, mask in expect:
        counts = np.bincount(zone[mask], minlength=nz)
        for z in machine.zones:
            have = sum(gauges[z.zid][s] for s in stats)
            if have != int(counts[z.zid]):
                _fail(f"{_where(z)}: {what}: {have} pages counted, the zone holds "
                      f"{int(counts[z.zid])} such frames")


# ---------------------------------------------------------------------------
# swap: areas, slots, the swap cache, zswap
# ---------------------------------------------------------------------------

def _area_name(a) -> str:
    return f"swap area {a.name} (type {a.type})"


def _check_swap(machine, flags: np.ndarray, keys: np.ndarray, dirty_pfns: np.ndarray) -> None:
    """Every swap slot is accounted exactly once; the swap cache and zswap agree with the slots.

    keys: the slot (type << SWP_OFFSET_BITS | offset) of every swap entry in every page
    table; dirty_pfns: the frames some present or PROT_NONE entry maps with its dirty bit.
    """
    ft = machine.ft
    swap = machine.swap
    n = flags.size
    ptype = flags & TYPE_MASK
    in_cache = (flags & SWAPCACHE) != 0
    bad = in_cache & (ptype != ANON)
    if bad.any():
        pfn = _first(bad)
        _fail(f"pfn {pfn:#x} carries SWAPCACHE but is typed {PageType(int(ptype[pfn])).name}")
    swp = np.frombuffer(ft.swp, dtype=np.uint32).astype(np.int64)
    bad = ~in_cache & (swp != 0) & (ptype != FREE)
    if bad.any():
        pfn = _first(bad)
        _fail(f"pfn {pfn:#x} is not in the swap cache but its swp column names slot "
              f"{int(swp[pfn]) & SLOT_MASK} of type {int(swp[pfn]) >> SWP_OFFSET_BITS}")
    areas = swap.areas
    for t, a in enumerate(areas):
        if a is not None and a.type != t:
            _fail(f"{_area_name(a)} sits at index {t} of the swap areas")
    if areas and areas[-1] is None:
        _fail("the swap area table ends in an empty type (it should have been trimmed)")
    nslots = np.array([a.nr_slots if a is not None else 0 for a in areas] + [0], dtype=np.int64)

    # the swap cache, frame side: each SWAPCACHE frame is the cached page of its slot
    cached = np.flatnonzero(in_cache)
    c_type = swp[cached] >> SWP_OFFSET_BITS
    c_off = swp[cached] & SLOT_MASK
    bad = (c_type >= len(areas)) | (c_off < 1) | (c_off > nslots[np.minimum(c_type, len(areas))])
    if bad.any():
        i = _first(bad)
        _fail(f"swap-cache pfn {int(cached[i]):#x} names slot {int(c_off[i])} of swap type "
              f"{int(c_type[i])}, which is no slot of an active area")

    # the swap entries of the page tables, by area
    k_type = keys >> SWP_OFFSET_BITS
    k_off = keys & SLOT_MASK
    content = ft.content_np()
    dirty_ptes = np.zeros(n, dtype=bool)
    dirty_ptes[dirty_pfns] = True
    zswap = swap.zswap
    stored = pool = same = 0
    for a in areas:
        if a is None:
            continue
        where = _area_name(a)
        size = a.nr_slots + 1
        count = np.frombuffer(a.count, dtype=np.uint16).astype(np.int64)
        cache = np.frombuffer(a.cache, dtype=np.uint32).astype(np.int64)
        zsize = np.frombuffer(a.zsize, dtype=np.uint16).astype(np.int64)
        if not count.size == cache.size == zsize.size == len(a.data) == size:
            _fail(f"{where}: its slot arrays hold {count.size}, {cache.size}, {zsize.size} and "
                  f"{len(a.data)} entries, expected {size} (slot 0, the header, and "
                  f"{a.nr_slots} slots)")
        if count[0] or cache[0] or zsize[0]:
            _fail(f"{where}: slot 0 is the header but has count {int(count[0]):#x}, cache "
                  f"{int(cache[0])}, zsize {int(zsize[0])}")
        # swap cache, slot side
        mine = cached[c_type == a.type]
        offs = c_off[c_type == a.type]
        bad = cache[offs] != mine + 1
        if bad.any():
            i = _first(bad)
            _fail(f"{where}: swap-cache pfn {int(mine[i]):#x} names slot {int(offs[i])}, whose "
                  f"cache entry is {int(cache[offs[i]])} (expected pfn + 1 = {int(mine[i]) + 1})")
        held = np.flatnonzero(cache)
        pfns = cache[held] - 1
        bad = pfns >= n
        if bad.any():
            _fail(f"{where}: slot {int(held[_first(bad)])} caches pfn {int(pfns[_first(bad)]):#x}, "
                  f"beyond the last frame")
        bad = ~in_cache[pfns] | (swp[pfns] != ((a.type << SWP_OFFSET_BITS) | held))
        if bad.any():
            i = _first(bad)
            pfn = int(pfns[i])
            word = int(swp[pfn])
            says = (f"names slot {word & SLOT_MASK} of type {word >> SWP_OFFSET_BITS}"
                    if in_cache[pfn] else "is not in the swap cache")
            _fail(f"{where}: slot {int(held[i])} says pfn {pfn:#x} caches it, but that frame "
                  f"{says} (flags {int(flags[pfn]):#06x})")
        has_cache = (count & HAS_CACHE) != 0
        bad = has_cache != (cache != 0)
        if bad.any():
            off = _first(bad)
            _fail(f"{where}: slot {off} has count {int(count[off]):#06x} "
                  f"({'with' if has_cache[off] else 'without'} HAS_CACHE) but its cache entry is "
                  f"{'empty' if not cache[off] else f'pfn {int(cache[off]) - 1:#x}'}")
        # every reference counted exactly once: count = the page-table entries naming the slot
        refs = np.bincount(k_off[k_type == a.type], minlength=size)
        bad = (count & COUNT_MASK) != refs
        if bad.any():
            off = _first(bad)
            _fail(f"{where}: slot {off} counts {int(count[off]) & COUNT_MASK} references, "
                  f"{int(refs[off])} page-table entries hold its swap entry")
        # the free stack: exactly the slots nothing references, each once
        free = np.frombuffer(a.free, dtype=np.uint32).astype(np.int64)
        bad = (free < 1) | (free > a.nr_slots)
        if bad.any():
            _fail(f"{where}: the free stack holds slot {int(free[_first(bad)])}, which is not a "
                  f"slot of the area (1 to {a.nr_slots})")
        uniq, times = np.unique(free, return_counts=True)
        if (times > 1).any():
            _fail(f"{where}: slot {int(uniq[_first(times > 1)])} is on the free stack "
                  f"{int(times.max())} times")
        on_free = np.zeros(size, dtype=bool)
        on_free[free] = True
        unused = count == 0
        unused[0] = False
        bad = on_free != unused
        if bad.any():
            off = _first(bad)
            _fail(f"{where}: slot {off} has count {int(count[off]):#06x} but is "
                  f"{'on' if on_free[off] else 'not on'} the free stack")
        used = int(np.count_nonzero(count))
        if a.used_slots != used:
            _fail(f"{where}: used_slots says {a.used_slots}, {used} slots have a count")
        # zswap: only used slots have a compressed copy
        bad = (zsize != 0) & (count == 0)
        if bad.any():
            off = _first(bad)
            _fail(f"{where}: slot {off} is free but still has a page in zswap "
                  f"(zsize {int(zsize[off])})")
        in_pool = int(np.count_nonzero(zsize))
        if a.in_zswap != in_pool:
            _fail(f"{where}: in_zswap says {a.in_zswap}, {in_pool} slots have a zswap size")
        stored += in_pool
        pool += int(zsize.sum()) - in_pool
        same += int(np.count_nonzero(zsize == 1))
        # a clean swap-cache page (not DIRTY, mapped by no dirty entry) is what its slot holds
        data = np.frombuffer(a.data, dtype=np.uint64)
        clean = ((flags[pfns] & DIRTY) == 0) & ~dirty_ptes[pfns]
        bad = clean & (content[pfns] != data[held])
        if bad.any():
            i = _first(bad)
            _fail(f"{where}: slot {int(held[i])} holds {int(data[held[i]]):#x} but its clean "
                  f"swap-cache pfn {int(pfns[i]):#x} holds {int(content[pfns[i]]):#x} "
                  f"(a clean page must equal its slot, or dropping it loses the difference)")
    if zswap is None:
        if stored:
            _fail(f"{stored} slots have a zswap size, but the machine has no zswap")
        return
    if zswap.stored_pages != stored:
        _fail(f"zswap: stored_pages says {zswap.stored_pages}, the areas' slots hold {stored}")
    if zswap.pool_bytes != pool:
        _fail(f"zswap: pool_bytes says {zswap.pool_bytes}, the slots' compressed sizes add up "
              f"to {pool}")
    if zswap.same_filled != same:
        _fail(f"zswap: same_filled says {zswap.same_filled}, {same} slots hold a same-filled page")
    frames = np.frombuffer(zswap.frames, dtype=np.uint32).astype(np.int64)
    need = -(-pool // PAGE)
    if frames.size != need:
        _fail(f"zswap: the pool holds {frames.size} frames for {pool} bytes, expected {need}")
    bad = frames >= n
    if bad.any():
        _fail(f"zswap: pool frame {int(frames[_first(bad)]):#x} is beyond the last frame")
    bad = ptype[frames] != KERNEL
    if bad.any():
        pfn = int(frames[_first(bad)])
        _fail(f"zswap: pool frame {pfn:#x} is typed {PageType(int(ptype[pfn])).name}, "
              f"expected KERNEL")
    held_by = [frames] + [np.frombuffer(sq.frames, dtype=np.uint32).astype(np.int64)
                          for sq in machine.pressure_src.squeezes]
    kernel = np.concatenate(held_by)
    bad = ptype[kernel] != KERNEL
    if bad.any():
        pfn = int(kernel[_first(bad)])
        _fail(f"pfn {pfn:#x}, held by a memory squeeze, is typed {PageType(int(ptype[pfn])).name}, "
              f"expected KERNEL")
    uniq, times = np.unique(kernel, return_counts=True)
    if (times > 1).any():
        _fail(f"pfn {int(uniq[_first(times > 1)]):#x} is held {int(times.max())} times by zswap "
              f"and the memory squeezes")


# ---------------------------------------------------------------------------
# the LRU lists
# ---------------------------------------------------------------------------

def _check_lru(machine, flags: np.ndarray) -> None:
    """Every user frame is on exactly the LRU list its flags name; the lists are well formed."""
    ft = machine.ft
    lru = machine.vmm.lru
    n = flags.size
    ptype = flags & TYPE_MASK
    user = (ptype == ANON) | (ptype == FILE) | (ptype == SHMEM)
    for bit, name in ((LRU, "LRU"), (ACTIVE, "ACTIVE"), (REFERENCED, "REFERENCED"),
                      (SWAPCACHE, "SWAPCACHE")):
        bad = ~user & ((flags & bit) != 0)
        if bad.any():
            pfn = _first(bad)
            _fail(f"pfn {pfn:#x} carries {name} but is typed {PageType(int(ptype[pfn])).name}, "
                  f"not a user page")
    bad = user & ((flags & LRU) == 0)
    if bad.any():
        pfn = _first(bad)
        _fail(f"pfn {pfn:#x} is typed {PageType(int(ptype[pfn])).name} but lacks LRU "
              f"(flags {int(flags[pfn]):#06x}): every user page is on an LRU list")
    zone = np.frombuffer(ft.pb_zone, dtype=np.uint8)[np.arange(n) >> PAGEBLOCK_ORDER]
    nr_nodes = len(lru.head)
    if len(lru.tail) != nr_nodes or nr_nodes != len(machine.node_zones):
        _fail(f"the LRU lists have {nr_nodes} heads and {len(lru.tail)} tails, the machine "
              f"{len(machine.node_zones)} nodes")
    prv, nxt = ft.lru_prev, ft.lru_next
    per_zone = np.zeros((len(machine.vmm.gauges), NR_LRU), dtype=np.int64)
    walked = []
    budget = n
    for node in range(nr_nodes):
        for k in range(NR_LRU):
            where = f"node {node} LRU list {LRU_NAMES[k]}"
            out = array("I")
            pfn, prev = lru.head[node][k], NIL
            while pfn != NIL:
                if pfn >= n:
                    _fail(f"{where}: link to pfn {pfn:#x} beyond the last frame ({n - 1:#x})")
                if prv[pfn] != prev:
                    _fail(f"{where}: pfn {pfn:#x} has lru_prev {prv[pfn]:#x}, expected {prev:#x}")
                out.append(pfn)
                budget -= 1
                if budget < 0:
                    _fail(f"{where}: the LRU lists hold more entries than there are frames")
                prev, pfn = pfn, nxt[pfn]
            if lru.tail[node][k] != prev:
                _fail(f"{where}: tail says pfn {lru.tail[node][k]:#x}, the list ends at {prev:#x}")
            pfns = np.frombuffer(out, dtype=np.uint32).astype(np.int64)
            f = flags[pfns]
            t = f & TYPE_MASK
            if k >= 2:
                bad = t != FILE
            else:
                bad = (t != ANON) & (t != SHMEM)
            if bad.any():
                i = _first(bad)
                _fail(f"{where}: pfn {int(pfns[i]):#x} is typed {PageType(int(t[i])).name}, "
                      f"which belongs on the {'anon' if k >= 2 else 'file'} lists")
            bad = (f & LRU) == 0
            if bad.any():
                i = _first(bad)
                _fail(f"{where}: pfn {int(pfns[i]):#x} is on the list without LRU "
                      f"(flags {int(f[i]):#06x})")
            bad = ((f & ACTIVE) != 0) != bool(k & 1)
            if bad.any():
                i = _first(bad)
                _fail(f"{where}: pfn {int(pfns[i]):#x} "
                      f"{'carries' if f[i] & ACTIVE else 'lacks'} ACTIVE (flags {int(f[i]):#06x})")
            zids = zone[pfns].astype(np.int64)
            bad = zids // NR_ZONES != node
            if bad.any():
                i = _first(bad)
                _fail(f"{where}: pfn {int(pfns[i]):#x} belongs to node {int(zids[i]) // NR_ZONES}")
            if zids.size and zids.max() >= per_zone.shape[0]:
                _fail(f"{where}: pfn {int(pfns[_first(zids >= per_zone.shape[0])]):#x} lies in "
                      f"no zone the gauges know")
            per_zone[:, k] += np.bincount(zids, minlength=per_zone.shape[0])
            walked.append(pfns)
    every = _cat(walked)
    uniq, times = np.unique(every, return_counts=True)
    if (times > 1).any():
        _fail(f"pfn {int(uniq[_first(times > 1)]):#x} is on {int(times.max())} LRU lists")
    on = np.zeros(n, dtype=bool)
    on[every] = True
    bad = user & ~on
    if bad.any():
        pfn = _first(bad)
        _fail(f"pfn {pfn:#x} ({PageType(int(ptype[pfn])).name}, flags {int(flags[pfn]):#06x}) "
              f"carries LRU but is on no LRU list")
    links = ((np.frombuffer(prv, dtype=np.uint32) != NIL) |
             (np.frombuffer(nxt, dtype=np.uint32) != NIL))
    bad = ~on & links
    if bad.any():
        pfn = _first(bad)
        _fail(f"pfn {pfn:#x} is on no LRU list but keeps links (lru_prev {prv[pfn]:#x}, "
              f"lru_next {nxt[pfn]:#x})")
    gauges = machine.vmm.gauges
    for z in machine.zones:
        for k in range(NR_LRU):
            have = gauges[z.zid][LRU_GAUGE[k]]
            if have != int(per_zone[z.zid, k]):
                kind = "file" if k >= 2 else "anon"
                _fail(f"{_where(z)}: the {kind} LRU list {LRU_NAMES[k]}: gauge "
                      f"{LRU_GAUGE[k].name} says {have} pages, the list holds "
                      f"{int(per_zone[z.zid, k])} of this zone's frames")


# ---------------------------------------------------------------------------
# resident-set limits and the PTE-table shortcut
# ---------------------------------------------------------------------------

def _table_of(machine, mm, va: int):
    """The PTE table covering va, walked from the PGD without touching any cache (or None)."""
    tables = machine.vmm.tables
    t = tables[mm.pgd]
    for shift in (39, 30, 21):
        e = t[(va >> shift) & 511]
        if not e & P.P:
            return None
        t = tables[(e & P.PFN_MASK) >> 12]
    return t


def _check_limits(machine, spaces) -> None:
    """Each address space's leaf_cache holds its real PTE tables; a resident-set limit's
    policy holds only pages that are resident."""
    for p, mm in spaces:
        for region, t in mm.leaf_cache.items():
            real = _table_of(machine, mm, region << 21)
            if real is not t:
                _fail(f"{_who(p)}: leaf_cache for va {region << 21:#x} holds "
                      f"{'a table' if real is None else 'another table'} than the page tables "
                      f"{'(there is none)' if real is None else ''}".rstrip())
        lim = mm.limit
        if lim is None:
            continue
        pol = lim.policy
        who = f"{_who(p)}: resident-set limit ({pol.name}, {lim.frames} frames)"
        if lim.frames < 1:
            _fail(f"{who}: a limit of {lim.frames} frames (0 means no limit)")
        for vpn in pol.pages:
            t = _table_of(machine, mm, vpn << 12)
            e = t[vpn & 511] if t is not None else 0
            if not e & (P.P | P.PROTNONE):
                _fail(f"{who}: the policy holds page {vpn << 12:#x}, which is not resident "
                      f"(entry {e:#018x})")
        circle = getattr(pol, "circle", None)
        if circle is not None:
            on = [v for v in circle if v is not None]
            if len(on) != len(set(on)) or set(on) != set(pol.pages):
                _fail(f"{who}: the clock's circle holds {sorted(on)[:8]}..., its pages "
                      f"{sorted(pol.pages)[:8]}...")
            if circle and not 0 <= pol.hand < len(circle):
                _fail(f"{who}: the clock hand {pol.hand} is off the circle of {len(circle)}")


def _check_commit(machine, spaces) -> None:
    """Committed_AS = the mms' VM_ACCOUNT pages + what live shared-memory objects are charged."""
    vmm = machine.vmm
    total = 0
    for p, mm in spaces:
        acc = mm.accounted_pages()
        if mm.committed != acc:
            _fail(f"{_who(p)}: committed says {mm.committed} pages, its VM_ACCOUNT VMAs hold {acc}")
        total += mm.committed
    shm = sum(f.charged for f in vmm.inodes.values() if f.shmem)
    if vmm.committed != total + shm:
        _fail(f"Committed_AS is {vmm.committed} pages, but address spaces have committed {total} "
              f"and shared-memory objects are charged {shm}")


# ---------------------------------------------------------------------------
# the heaps (user-space allocators)
# ---------------------------------------------------------------------------

def _check_heaps(machine) -> None:
    for p in machine.tasks.procs.values():
        if p.heap is not None:
            _check_heap(p, p.heap)


def _check_heap(p, h) -> None:
    who = f"{_who(p)}: heap"
    if p.mm is None:
        _fail(f"{who}: the process has a heap but no address space")
    spans = []                                   # (start, end, what): must be disjoint
    used_ptrs = {}                               # ptr -> (pool id, chunk size)
    for k, pool in enumerate(h.pools):
        where = f"{who} pool {k} ({pool.name})"
        if pool.id != k:
            _fail(f"{where}: numbered {pool.id}")
        if pool.kind != ("brk" if k == 0 else "mmap"):
            _fail(f"{where}: kind {pool.kind!r}")
        for s, e in pool.segs.items():
            if s % HEAP_ALIGN or e % HEAP_ALIGN or e <= s:
                _fail(f"{where}: segment {s:#x}-{e:#x} is empty, reversed or not 16-byte aligned")
            spans.append((s, e, f"{where} segment {s:#x}-{e:#x}"))
        _check_pool_tiling(where, pool)
        _check_pool_lists(where, pool)
        for start, size in pool.used.items():
            used_ptrs[start + HDR] = (k, size)
    spans.sort()
    for (s0, e0, w0), (s1, e1, w1) in zip(spans, spans[1:]):
        if s1 < e0:
            _fail(f"{w1} overlaps {w0}")
    # Live blocks: each one a used chunk of its pool, or an mmapped block.
    red = GUARD if h.guard else 0
    for ptr, rec in h.live.items():
        n, csz, pool_no = rec[0], rec[1], rec[2]
        if pool_no < 0:
            if ptr not in h.mmapped:
                _fail(f"{who}: live block {ptr:#x} says mmapped but has no mapping")
            continue
        got = used_ptrs.get(ptr)
        if got is None:
            _fail(f"{who}: live block {ptr:#x} (pool {pool_no}) is no used chunk")
        if got != (pool_no, csz):
            _fail(f"{who}: live block {ptr:#x} says pool {pool_no} size {csz}, the used chunk "
                  f"is in pool {got[0]} with size {got[1]}")
        if n <= 0 or ptr + n + red > ptr - HDR + csz + 8:
            _fail(f"{who}: live block {ptr:#x} of {n} bytes does not fit its {csz}-byte chunk")
        seg = h.pools[pool_no].seg_of(ptr - HDR)
        if ptr + n + red > seg[1]:
            _fail(f"{who}: live block {ptr:#x} of {n} bytes runs past the end of its segment "
                  f"{seg[0]:#x}-{seg[1]:#x} (pool {pool_no})")
    for ptr in used_ptrs:
        if ptr not in h.live:
            _fail(f"{who}: used chunk {ptr - HDR:#x} is no live block")
    mm = p.mm
    mspans = []
    for ptr, (addr, length) in h.mmapped.items():
        what = f"{who}: mmapped block {ptr:#x} ({addr:#x}+{length:#x})"
        rec = h.live.get(ptr)
        if rec is None or rec[2] != -1:
            _fail(f"{what} is not a live mmapped block")
        if addr % PAGE or length % PAGE or length <= 0:
            _fail(f"{what} is not page aligned")
        if ptr % HEAP_ALIGN or not addr + HDR <= ptr or ptr + rec[0] + red > addr + length:
            _fail(f"{what}: a {rec[0]}-byte block at {ptr:#x} does not fit the mapping")
        if not mm.covers(addr, addr + length):
            _fail(f"{what} is not inside the process's VMAs")
        mspans.append((addr, addr + length, what))
    mspans.sort()
    for (s0, e0, w0), (s1, e1, w1) in zip(mspans, mspans[1:]):
        if s1 < e0:
            _fail(f"{w1} overlaps {w0}")
    for s, e, w in mspans:
        for s1, e1, w1 in spans:
            if s < e1 and s1 < e:
                _fail(f"{w} overlaps {w1}")


def _check_pool_tiling(where: str, pool) -> None:
    """Used chunks, free chunks and the top tile every segment exactly."""
    if not pool.segs:
        if pool.used or pool.free or pool.top_start != pool.top_end:
            _fail(f"{where}: no segment but chunks or a top")
        return
    if not pool.top_start <= pool.top_end:
        _fail(f"{where}: top {pool.top_start:#x}-{pool.top_end:#x} is reversed")
    top_seg = [s for s, e in pool.segs.items() if e == pool.top_end]
    if len(top_seg) != 1 or pool.top_start < top_seg[0]:
        _fail(f"{where}: the top {pool.top_start:#x}-{pool.top_end:#x} does not end a segment "
              f"or starts before it")
    pieces = [(s, z, "used") for s, z in pool.used.items()]
    pieces += [(s, z, "free") for s, z in pool.free.items()]
    if pool.top_size:
        pieces.append((pool.top_start, pool.top_size, "top"))
    pieces.sort()
    segs = sorted(pool.segs.items())
    i = 0
    for seg_s, seg_e in segs:
        at = seg_s
        while i < len(pieces) and pieces[i][0] < seg_e:
            s, z, kind = pieces[i]
            if s != at:
                _fail(f"{where}: segment {seg_s:#x}-{seg_e:#x}: the {kind} chunk at {s:#x} "
                      f"{'overlaps what ends' if s < at else 'leaves a gap after what ends'} "
                      f"at {at:#x}")
            if kind != "top" and (s % HEAP_ALIGN or z % HEAP_ALIGN or z < MINSIZE):
                _fail(f"{where}: {kind} chunk {s:#x} of {z} bytes is misaligned or under "
                      f"{MINSIZE} bytes")
            at = s + z
            i += 1
        tail = pool.tails.get(seg_s)
        if tail is not None and not FENCE <= seg_e - tail < MINSIZE + FENCE:
            _fail(f"{where}: segment {seg_s:#x}-{seg_e:#x}: its fencepost from {tail:#x} is "
                  f"not {FENCE} to {MINSIZE + FENCE - 1} bytes")
        if tail is not None and seg_e == pool.top_end:
            _fail(f"{where}: segment {seg_s:#x}-{seg_e:#x} holds the top and has a fencepost")
        if at != (seg_e if tail is None else tail):
            _fail(f"{where}: segment {seg_s:#x}-{seg_e:#x}: its chunks end at {at:#x}"
                  + (f", not at its fencepost {tail:#x}" if tail is not None else ""))
    if i != len(pieces):
        s, z, kind = pieces[i]
        _fail(f"{where}: the {kind} chunk at {s:#x} lies in no segment")


def _check_pool_lists(where: str, pool) -> None:
    """free, free_end, bins and binmap agree; free chunks are merged with their neighbours."""
    ends = {s + z: s for s, z in pool.free.items()}
    if ends != pool.free_end:
        _fail(f"{where}: free_end {sorted(pool.free_end.items())[:4]}... disagrees with the "
              f"free chunks {sorted(pool.free.items())[:4]}...")
    binned = {}
    binmap = 0
    for c, b in enumerate(pool.bins):
        if b:
            binmap |= 1 << c
        for s in b:
            if s in binned:
                _fail(f"{where}: free chunk {s:#x} is in bins {binned[s]} and {c}")
            binned[s] = c
    if binmap != pool.binmap:
        _fail(f"{where}: binmap {pool.binmap:#x}, the non-empty bins make {binmap:#x}")
    if set(binned) != set(pool.free):
        extra = sorted(set(binned) ^ set(pool.free))
        _fail(f"{where}: the bins and the free chunks differ at {extra[0]:#x}")
    for s, z in pool.free.items():
        if binned[s] != size_class(z):
            _fail(f"{where}: free chunk {s:#x} of {z} bytes is in bin {binned[s]}, its class is "
                  f"{size_class(z)}")
        seg = pool.seg_of(s)
        end = s + z
        if seg is not None and end < seg[1] and end in pool.free:
            _fail(f"{where}: free chunks {s:#x} and {end:#x} are neighbours, not merged")
        if seg is not None and end == pool.top_start and seg[1] == pool.top_end:
            _fail(f"{where}: free chunk {s:#x} ends at the top, not merged into it")
