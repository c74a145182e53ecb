"""The LRU lists: active and inactive lists of anonymous and file pages, per node.

As Linux's lruvec (mm/vmscan.c, include/linux/mm_inline.h): each node keeps
four lists of the user frames it holds, threaded through the frame table's
lru_prev/lru_next columns (no Python object per frame). New pages go on the
head of the inactive list of their kind; reclaim takes from the tail, so the
tail is the page that has gone longest without being looked at. Which list a
frame is on follows from its flags: LRU set means it is on one, ACTIVE says
active or inactive, and its type says anon (ANON, SHMEM: swap-backed) or file.

The per-zone sizes of the lists are the VMM's gauges (nr_zone_inactive_anon
and friends), kept here so that every move updates them.
"""
from __future__ import annotations

import numpy as np

from ..pmm.frames import ACTIVE, LRU, NIL, REFERENCED, TYPE_MASK, PageType
from ..pmm.zone import NR_ZONES
from ..stats import PageStat

INACTIVE_ANON, ACTIVE_ANON, INACTIVE_FILE, ACTIVE_FILE = range(4)
NR_LRU = 4
LRU_NAMES = ("inactive_anon", "active_anon", "inactive_file", "active_file")
GAUGE = (PageStat.INACTIVE_ANON, PageStat.ACTIVE_ANON, PageStat.INACTIVE_FILE,
         PageStat.ACTIVE_FILE)
FILE_TYPE = int(PageType.FILE)


class LruLists:
    """Every node's four lists. Callers hold the engine lock."""

    def __init__(self, ft, gauges, nr_nodes: int):
        self.ft = ft
        self.gauges = gauges                           # vmm.gauges, by global zone id
        self.head = [[NIL] * NR_LRU for _ in range(nr_nodes)]
        self.tail = [[NIL] * NR_LRU for _ in range(nr_nodes)]

    # --- the list operations (list_add, list_del, list_move) --------------

    def add(self, pfn: int, active: bool = False) -> None:
        """Put an in-use frame at the head of the list its type and `active` choose."""
        ft = self.ft
        flags = ft.flags
        f = flags[pfn]
        lru = (2 if f & TYPE_MASK == FILE_TYPE else 0) + (1 if active else 0)
        flags[pfn] = (f & ~ACTIVE) | LRU | (ACTIVE if active else 0)
        zid = ft.pb_zone[pfn >> 9]
        node = zid // NR_ZONES
        heads = self.head[node]
        old = heads[lru]
        ft.lru_prev[pfn] = NIL
        ft.lru_next[pfn] = old
        if old == NIL:
            self.tail[node][lru] = pfn
        else:
            ft.lru_prev[old] = pfn
        heads[lru] = pfn
        self.gauges[zid][GAUGE[lru]] += 1

    def delete(self, pfn: int) -> None:
        """Take a frame off its list (it is being freed or isolated)."""
        ft = self.ft
        flags = ft.flags
        f = flags[pfn]
        if not f & LRU:
            return
        lru = (2 if f & TYPE_MASK == FILE_TYPE else 0) + (1 if f & ACTIVE else 0)
        zid = ft.pb_zone[pfn >> 9]
        node = zid // NR_ZONES
        prev, nxt = ft.lru_prev[pfn], ft.lru_next[pfn]
        if prev == NIL:
            self.head[node][lru] = nxt
        else:
            ft.lru_next[prev] = nxt
        if nxt == NIL:
            self.tail[node][lru] = prev
        else:
            ft.lru_prev[nxt] = prev
        ft.lru_prev[pfn] = ft.lru_next[pfn] = NIL
        flags[pfn] = f & ~(LRU | ACTIVE | REFERENCED)
        self.gauges[zid][GAUGE[lru]] -= 1

    def delete_many(self, pfns) -> None:
        """delete() for each of pfns (a uint32/int64 numpy array of frames on a list)."""
        ft = self.ft
        flags = ft.flags_np()
        f = flags[pfns]
        on = (f & LRU) != 0
        pfns, f = pfns[on], f[on]
        if not pfns.size:
            return
        lrus = np.where((f & TYPE_MASK) == FILE_TYPE, 2, 0) + ((f & ACTIVE) != 0)
        zids = np.frombuffer(ft.pb_zone, dtype=np.uint8)[pfns >> 9].astype(np.int64)
        nodes = zids // NR_ZONES
        prev_a, next_a = ft.lru_prev, ft.lru_next
        head, tail = self.head, self.tail
        for pfn, node, lru in zip(pfns.tolist(), nodes.tolist(), lrus.tolist()):
            p, n = prev_a[pfn], next_a[pfn]
            if p == NIL:
                head[node][lru] = n
            else:
                next_a[p] = n
            if n == NIL:
                tail[node][lru] = p
            else:
                prev_a[n] = p
        np.frombuffer(prev_a, dtype=np.uint32)[pfns] = NIL
        np.frombuffer(next_a, dtype=np.uint32)[pfns] = NIL
        flags[pfns] = f & np.uint16(0xFFFF & ~(LRU | ACTIVE | REFERENCED))
        counts = np.bincount(zids * NR_LRU + lrus, minlength=len(self.gauges) * NR_LRU)
        for k in np.flatnonzero(counts).tolist():
            self.gauges[k // NR_LRU][GAUGE[k % NR_LRU]] -= int(counts[k])

    def move(self, pfn: int, active: bool) -> None:
        """To the head of the active or inactive list of its kind (activate, deactivate, rotate)."""
        keep = self.ft.flags[pfn] & REFERENCED
        self.delete(pfn)
        self.add(pfn, active)
        self.ft.flags[pfn] |= keep

    def replace(self, old: int, new: int) -> None:
        """Page migration: frame new (off every list, flags copied from old) takes old's
        place on its list when both are on one node, else goes to the head of the same
        list on new's node. old leaves the list."""
        ft = self.ft
        f = ft.flags[old]
        if not f & LRU:
            return
        zid_old, zid_new = ft.pb_zone[old >> 9], ft.pb_zone[new >> 9]
        node = zid_old // NR_ZONES
        if node != zid_new // NR_ZONES:
            self.delete(old)
            ft.flags[new] &= ~(LRU | ACTIVE)
            self.add(new, bool(f & ACTIVE))
            ft.flags[new] |= f & REFERENCED
            return
        lru = (2 if f & TYPE_MASK == FILE_TYPE else 0) + (1 if f & ACTIVE else 0)
        prev, nxt = ft.lru_prev[old], ft.lru_next[old]
        ft.lru_prev[new], ft.lru_next[new] = prev, nxt
        if prev == NIL:
            self.head[node][lru] = new
        else:
            ft.lru_next[prev] = new
        if nxt == NIL:
            self.tail[node][lru] = new
        else:
            ft.lru_prev[nxt] = new
        ft.lru_prev[old] = ft.lru_next[old] = NIL
        ft.flags[old] = f & ~(LRU | ACTIVE | REFERENCED)
        ft.flags[new] = (ft.flags[new] & ~(LRU | ACTIVE | REFERENCED)) | (f & (LRU | ACTIVE | REFERENCED))
        self.gauges[zid_old][GAUGE[lru]] -= 1
        self.gauges[zid_new][GAUGE[lru]] += 1

    def oldest(self, node: int, lru: int) -> int:
        return self.tail[node][lru]

    def walk(self, node: int, lru: int):
        """The list's frames from head (newest) to tail (oldest); for checks and dumps."""
        pfn = self.head[node][lru]
        nxt = self.ft.lru_next
        while pfn != NIL:
            yield pfn
            pfn = nxt[pfn]

    def size(self, node: int, lru: int) -> int:
        """Pages on a node's list (the sum of its zones' gauges)."""
        base = node * NR_ZONES
        return sum(self.gauges[z][GAUGE[lru]] for z in range(base, base + NR_ZONES))
