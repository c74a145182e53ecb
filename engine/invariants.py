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
  child inside its parent, every BAR a naturally aligned child of a PCI window.

It is O(frames), vectorised with NumPy (the list walk is O(free blocks) in
Python), and never runs on an engine path: tests call it.
"""
from __future__ import annotations

import numpy as np

from .errors import InternalError
from .pmm.frames import (BUDDY, MAX_ORDER, NIL, NR_MIGRATE, NR_ORDERS, ORDER_MASK, ORDER_SHIFT,
                         PAGEBLOCK_ORDER, PCP, TYPE_MASK, MigrateType, PageType)

FREE = int(PageType.FREE)
NOPAGE = int(PageType.NOPAGE)


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
    """Raise InternalError naming the first broken invariant of machine's physical memory."""
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


# ---------------------------------------------------------------------------
# the frame table alone
# ---------------------------------------------------------------------------

def _check_ram_and_flag_bits(machine, flags: np.ndarray) -> None:
    ram = np.zeros(flags.size, dtype=bool)
    for ranges in machine.node_ram:
        for s, e in ranges:
            ram[s:e] = True
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
    order_bits = ((flags & ORDER_MASK) != 0) & ((flags & BUDDY) == 0)
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
