"""Transparent huge pages for anonymous memory (mm/huge_memory.c).

A page fault in private anonymous memory whose 2 MiB-aligned range lies
wholly inside the VMA, where the policy allows it (kernel/mm/
transparent_hugepage/enabled: `always`, or `madvise` and the VMA was given
MADV_HUGEPAGE; never with MADV_NOHUGEPAGE or a resident-set limit), and
whose PMD entry is still none, takes one naturally aligned block of 512
frames from the buddy lists and maps it with a single PMD entry (the PSE
bit): one fault, one entry, no PTE table walked on access. As Linux does,
a PTE table is allocated with it and deposited (pgtable_trans_huge_deposit)
so that splitting the PMD later never needs memory. No free block above
the low watermark: the fault falls back to 4 KiB pages (thp_fault_fallback);
no reclaim or compaction is entered for it (defrag `madvise` without the
madvise hint).

The 512 frames stay individual ANON frames in every other respect: each
has its reverse-map word, map count 1 and its place on the LRU, so reclaim,
migration and memory failure handle them page by page. What needs one
page's own entry splits the PMD first (__split_huge_pmd): the deposited
table is filled with 512 PTEs carrying the PMD's bits, and the huge page
becomes 512 ordinary pages (thp_split_pmd, thp_split_page). That happens
on any page-table walk that may change an entry (reclaim and migration
through the reverse map, mprotect, fork, MADV_FREE, a resident-set limit,
memory failure, unmapping part of it). Unmapping all of it frees the block
whole. Linux keeps a THP whole through fork, mprotect of the whole range
and LRU aging, and swaps it out whole where it can; here those split it.
Compaction never picks a THP's frames to move: they already form a free
block's worth.

AnonHugePages (meminfo, node meminfo, smaps) and nr_anon_transparent_hugepages
count the PMD-mapped THPs; kpageflags marks their frames THP with
COMPOUND_HEAD or COMPOUND_TAIL.
"""
from __future__ import annotations

from array import array

import numpy as np

from . import pte as P
from .vma import VM_HUGEPAGE, VM_NOHUGEPAGE, Vma
from ..errors import bug_on
from ..pmm.frames import (HPAGE_PMD_NR, HPAGE_PMD_ORDER, LRU, NIL, ORDER_MASK, RMAP_INDEX_BITS,
                          SWAPCACHE, THP_HEAD, THP_TAIL, MigrateType, PageType)
from ..pmm.zone import NR_ZONES, ZONE_MOVABLE, ZONE_NORMAL
from ..reclaim.lru import INACTIVE_ANON
from ..stats import PageStat, VmEvent

HPAGE_SIZE = HPAGE_PMD_NR << 12
HPAGE_MASK = ~(HPAGE_SIZE - 1)
THP_MODES = ("always", "madvise", "never")
PFN_MASK = P.PFN_MASK
U64 = np.uint64
TABLE_BYTES = bytes(P.ENTRIES * 8)
NOT_ORDER = np.uint16(0xFFFF & ~ORDER_MASK)


class HugeMixin:
    # The host class (Vmm) provides ft, pmm, tables, gauges, lru, events, trace, _place,
    # _count_interleave, _pte_bits, _gauge, _alloc, _new_table, _free_table.

    thp_mode = "madvise"

    # --- where a huge page may go -----------------------------------------

    def thp_eligible(self, vma: Vma, va: int) -> bool:
        """May the 2 MiB range around va in vma be one huge page (thp_vma_allowable_order
        plus the alignment check of do_huge_pmd_anonymous_page)?"""
        mode = self.thp_mode
        if mode == "never" or vma.file is not None or vma.shared or vma.flags & VM_NOHUGEPAGE:
            return False
        if mode == "madvise" and not vma.flags & VM_HUGEPAGE:
            return False
        haddr = va & HPAGE_MASK
        return haddr >= vma.start and haddr + HPAGE_SIZE <= vma.end

    def thp_vma_ok(self, vma: Vma) -> bool:
        """smaps THPeligible: could any part of vma get a huge page?"""
        first = (vma.start + HPAGE_SIZE - 1) & HPAGE_MASK
        return first + HPAGE_SIZE <= vma.end and self.thp_eligible(vma, first)

    def _pmd_slot(self, mm, va: int, alloc: bool = False, proc=None):
        """(PMD table, index) of va's PMD entry, or None if a level above is missing (built
        with alloc)."""
        t = self.tables[mm.pgd]
        for shift in (39, 30):
            i = (va >> shift) & 511
            e = t[i]
            if not e & 1:
                if not alloc:
                    return None
                pfn = self._alloc(int(PageType.PAGETABLE), proc.cpu, proc.node, proc)
                t[i] = (pfn << 12) | P.PAGE_TABLE
                t = self._new_table(mm, pfn)
                continue
            t = self.tables[(e & PFN_MASK) >> 12]
        return t, (va >> 21) & 511

    # --- faults and accesses ------------------------------------------------

    def huge_access(self, proc, va: int, write: bool) -> int | None:
        """The frame behind va when a huge PMD maps it and allows the access (marking the
        PMD accessed, and dirty on a write); None when the access needs the 4 KiB path."""
        pmd, k = self._pmd_slot(proc.mm, va)
        e = pmd[k]
        if write:
            if not e & P.RW:
                return None
            mark = P.ACCESSED | P.DIRTY | P.SOFT_DIRTY
        else:
            mark = P.ACCESSED
        if e & mark != mark:
            pmd[k] = e | mark
        return ((e & PFN_MASK) >> 12) + ((va >> 12) & 511)

    def huge_fault(self, proc, vma: Vma, va: int, write: bool) -> int | None:
        """do_huge_pmd_anonymous_page: map a new THP at va's 2 MiB range if its PMD entry is
        none and a block is free. The frame behind va, or None (the caller falls back)."""
        mm = proc.mm
        slot = self._pmd_slot(mm, va, alloc=True, proc=proc)
        pmd, k = slot
        if pmd[k]:
            return None                              # a PTE table is there: 4 KiB pages
        node, zones, il = self._place(proc, proc.node, ZONE_MOVABLE, va >> 21)
        pmm = self.pmm
        head = pmm.try_alloc_block(HPAGE_PMD_ORDER, node=node, cpu=proc.cpu, highest=ZONE_MOVABLE,
                                   mt=MigrateType.MOVABLE, ptype=PageType.ANON, zones=zones)
        if head is None:
            self.events[VmEvent.THP_FAULT_FALLBACK] += 1
            return None
        # The deposited table is a page table of the process: its policy places it too.
        tnode, tzones, til = self._place(proc, proc.node, ZONE_NORMAL)
        dep = pmm.try_alloc_page(node=tnode, cpu=proc.cpu, highest=ZONE_NORMAL,
                                 mt=MigrateType.UNMOVABLE, ptype=PageType.PAGETABLE, zones=tzones)
        if dep is None:                              # no table to deposit: fall back
            pmm.free_block(head, HPAGE_PMD_ORDER)
            self.events[VmEvent.THP_FAULT_FALLBACK] += 1
            return None
        if il >= 0:
            self._count_interleave(head, il)
        if til >= 0:
            self._count_interleave(dep, til)
        self._new_table(mm, dep)
        haddr = va & HPAGE_MASK
        region = haddr >> 21
        mm.thp[region] = dep
        ft = self.ft
        end = head + HPAGE_PMD_NR
        ft.rmap_np()[head:end] = (np.uint64(proc.anon_family) << np.uint64(RMAP_INDEX_BITS)) | \
            np.arange(haddr >> 12, (haddr >> 12) + HPAGE_PMD_NR, dtype=U64)
        ft.mapcount_np()[head:end] = 1
        ft.flags_np()[head:end] |= THP_TAIL
        ft.flags[head] = (ft.flags[head] & ~ORDER_MASK) | THP_HEAD
        self._lru_add_block(head)
        zid = ft.pb_zone[head >> 9]
        g = self.gauges[zid]
        g[PageStat.ANON] += HPAGE_PMD_NR
        g[PageStat.ANON_THPS] += 1
        pmd[k] = (head << 12) | self._pte_bits(vma, vma.writable, True) | P.PSE
        mm.rss_anon += HPAGE_PMD_NR
        vma.has_anon = True
        proc.minflt += 1
        self.events[VmEvent.PGFAULT] += 1
        self.events[VmEvent.THP_FAULT_ALLOC] += 1
        self.trace.fault(proc.pid, va, ("write" if write else "read") + " anon thp")
        return head + ((va >> 12) & 511)

    def _lru_add_block(self, head: int) -> None:
        """The 512 frames at the head of their node's inactive anon list, in one splice."""
        ft = self.ft
        lru = self.lru
        zid = ft.pb_zone[head >> 9]
        node = zid // NR_ZONES
        heads = lru.head[node]
        old = heads[INACTIVE_ANON]
        pfns = np.arange(head, head + HPAGE_PMD_NR, dtype=np.uint32)
        prev = np.empty(HPAGE_PMD_NR, dtype=np.uint32)
        prev[0] = NIL
        prev[1:] = pfns[:-1]
        nxt = np.empty(HPAGE_PMD_NR, dtype=np.uint32)
        nxt[:-1] = pfns[1:]
        nxt[-1] = old
        np.frombuffer(ft.lru_prev, dtype=np.uint32)[head:head + HPAGE_PMD_NR] = prev
        np.frombuffer(ft.lru_next, dtype=np.uint32)[head:head + HPAGE_PMD_NR] = nxt
        ft.flags_np()[head:head + HPAGE_PMD_NR] |= LRU
        last = head + HPAGE_PMD_NR - 1
        if old == NIL:
            lru.tail[node][INACTIVE_ANON] = last
        else:
            ft.lru_prev[old] = last
        heads[INACTIVE_ANON] = head
        self.gauges[zid][PageStat.INACTIVE_ANON] += HPAGE_PMD_NR

    # --- splitting and unmapping ------------------------------------------

    def split_huge_pmd(self, mm, region: int) -> None:
        """__split_huge_pmd: the deposited table takes 512 PTEs with the PMD's bits and
        replaces it; the THP's frames become ordinary pages."""
        dep = mm.thp.pop(region)
        pmd, k = self._pmd_slot(mm, region << 21)
        e = pmd[k]
        head = (e & PFN_MASK) >> 12
        bits = U64(e & ~(PFN_MASK | P.PSE))
        np.frombuffer(self.tables[dep], dtype=U64)[:] = \
            (np.arange(head, head + HPAGE_PMD_NR, dtype=U64) << U64(12)) | bits
        pmd[k] = (dep << 12) | P.PAGE_TABLE
        self.ft.flags_np()[head:head + HPAGE_PMD_NR] &= NOT_ORDER
        self._gauge(head, PageStat.ANON_THPS, -1)
        self.events[VmEvent.THP_SPLIT_PMD] += 1
        self.events[VmEvent.THP_SPLIT_PAGE] += 1

    def zap_huge(self, mm, start: int, end: int) -> int:
        """The huge PMDs in [start, end): each one wholly inside is unmapped and its block
        freed (zap_huge_pmd), each one partly inside is split (the caller zaps its PTEs).
        Returns the pages unmapped here."""
        done = 0
        for region in [r for r in mm.thp if r << 21 < end and (r + 1) << 21 > start]:
            lo = region << 21
            if lo < start or lo + HPAGE_SIZE > end:
                self.split_huge_pmd(mm, region)
                continue
            dep = mm.thp.pop(region)
            pmd, k = self._pmd_slot(mm, lo)
            e = pmd[k]
            pmd[k] = 0
            head = (e & PFN_MASK) >> 12
            ft = self.ft
            flags = ft.flags_np()[head:head + HPAGE_PMD_NR]
            bug_on(bool((flags & SWAPCACHE).any()), "zap_huge",
                   f"THP at pfn {head:#x} has a page in the swap cache while PMD-mapped")
            g = self.gauges[ft.pb_zone[head >> 9]]
            g[PageStat.ANON] -= HPAGE_PMD_NR
            g[PageStat.ANON_THPS] -= 1
            self.lru.delete_many(np.arange(head, head + HPAGE_PMD_NR, dtype=np.int64))
            ft.mapcount_np()[head:head + HPAGE_PMD_NR] = 0
            flags &= NOT_ORDER
            self.pmm.free_block(head, HPAGE_PMD_ORDER)
            self._free_table(mm, dep)
            mm.rss_anon -= HPAGE_PMD_NR
            done += HPAGE_PMD_NR
        return done

    # --- readers --------------------------------------------------------------

    def huge_entries(self, e: int) -> array:
        """The 512 PTEs a huge PMD entry e stands for, as a reader sees them (pagemap, smaps:
        one entry per 4 KiB subpage with consecutive PFNs)."""
        head = (e & PFN_MASK) >> 12
        bits = U64(e & ~(PFN_MASK | P.PSE))
        out = array("Q", TABLE_BYTES)
        np.frombuffer(out, dtype=U64)[:] = \
            (np.arange(head, head + HPAGE_PMD_NR, dtype=U64) << U64(12)) | bits
        return out
