"""Vmm: the virtual memory manager — page tables, page faults, mappings, fork and exit.

It sits on the physical allocator (frames come only from pmm.try_alloc_page
and go back through pmm.free_page) and owns:

- the page-table store: every table is a real frame (PageType.PAGETABLE)
  whose 512 entries live in `tables[pfn]`, an array of u64 (one host array
  per table page; data frames are never objects);
- the page cache of simulated files (files.py) and the shared zero page;
- the per-zone page gauges (anon, file, shmem, mapped, page tables, LRU
  sizes) that meminfo, vmstat and zoneinfo print;
- Committed_AS and the overcommit policy.

The tricks, as in Linux: a mapping only reserves address space; the first
touch faults (do_anonymous_page maps the zero page on a read and a fresh
zeroed frame on a write; a file page is read into the page cache, a major
fault). fork shares every private page read-only and the first write copies
it (do_wp_page), or reuses it when no one else maps it any more.

Callers hold the engine lock. Faults raise Segv (the process must die) or
FaultOom (no frame for it); commands validate first and change nothing on
a rejection (EngineError).
"""
from __future__ import annotations

from array import array

import numpy as np

from . import pte as P
from .files import NO_FRAME, MemFile
from .limits import LimitMixin
from .migrate import MigrateMixin
from .rmap import RmapMixin
from .swapin import SwapInMixin
from .thp import HPAGE_MASK, HugeMixin
from .mm import (MMAP_MIN_ADDR, PAGE, STACK_GUARD_GAP, STACK_RLIMIT, TASK_SIZE, AddressSpace,
                 page_align)
from .vma import (VM_ACCOUNT, VM_GROWSDOWN, VM_MAYEXEC, VM_MAYREAD, VM_MAYSHARE, VM_MAYWRITE,
                  VM_READ, VM_SHARED, VM_SOFTDIRTY, VM_WRITE, VM_HUGEPAGE, VM_NOHUGEPAGE,
                  PROT_BITS, Vma)
from ..trace import TraceLog
from ..errors import Exists, InvalidArgument, OutOfMemory, bug_on
from ..pmm.frames import (DIRTY as PG_DIRTY, LAZYFREE, LRU, NIL, RMAP_INDEX_BITS, SWAPCACHE,
                          TYPE_MASK, MigrateType, PageType)
from ..pmm.zone import NR_ZONES, ZONE_MOVABLE, ZONE_NORMAL
from ..reclaim.lru import INACTIVE_ANON, LruLists
from ..reclaim.swap import COUNT_MASK
from ..stats import PageStat, VmEvent, ZoneStat, page_gauges

ANON = int(PageType.ANON)
PT_ANON = PageType.ANON
MOVABLE = MigrateType.MOVABLE
FILE = int(PageType.FILE)
SHMEM = int(PageType.SHMEM)
PAGETABLE = int(PageType.PAGETABLE)
TABLE_BYTES = bytes(P.ENTRIES * 8)
PFN_MASK = P.PFN_MASK
U64 = np.uint64


def _pfns(ents: np.ndarray) -> np.ndarray:
    """The frames of present or PROT_NONE entries (P.pfn_of over an array), as indices."""
    raw = np.where((ents & U64(P.P)) != 0, ents, ~ents)
    return ((raw & U64(PFN_MASK)) >> U64(12)).astype(np.intp)


class Segv(Exception):
    """An access the process may not make: it gets SIGSEGV (or SIGBUS) and dies."""

    def __init__(self, va: int, write: bool, present: bool, signal: str = "SIGSEGV",
                 why: str = ""):
        super().__init__(f"{signal} at {va:#x}")
        self.va, self.write, self.present, self.signal, self.why = va, write, present, signal, why

    @property
    def error_code(self) -> int:
        """The x86 page-fault error code the kernel prints: 4 user, 2 write, 1 protection."""
        return 4 | (2 if self.write else 0) | (1 if self.present else 0)


class FaultOom(Exception):
    """No frame for a page fault, and the OOM killer chose the faulting process itself
    (the caller kills it), or found no process it may kill (victim None: nothing dies)."""

    def __init__(self, victim=None, line: str = "", nodemask: tuple | None = None):
        super().__init__(line or "out of memory")
        self.victim, self.line = victim, line
        self.nodemask = nodemask          # the memory policy's nodes, for a constrained OOM


def fill_value(va: int, seed: int) -> int:
    """The value `fill` writes to the page at va: splitmix64 of its page number and the seed.

    Never 0, so a page that reads as zero (never written) never passes verify.
    """
    z = ((va >> 12) * 0x9E3779B97F4A7C15 + seed * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) \
        & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    z ^= z >> 31
    return z or 1


def fill_values(va: int, n: int, seed: int) -> np.ndarray:
    """fill_value of the n pages from va, as an array (uint64 arithmetic wraps as & MASK does)."""
    z = np.arange(va >> 12, (va >> 12) + n, dtype=U64) * U64(0x9E3779B97F4A7C15)
    z += U64((seed * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF)
    z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
    z ^= z >> U64(31)
    z[z == 0] = 1
    return z


class Vmm(RmapMixin, SwapInMixin, LimitMixin, MigrateMixin, HugeMixin):
    def __init__(self, ft, pmm, events, zero_pfn: int, nr_zones: int, nr_nodes: int = 1):
        self.trace = TraceLog()               # the machine's trace replaces this one
        self.ft = ft
        self.pmm = pmm
        self.events = events
        self.zero_pfn = zero_pfn
        self.tables: dict[int, array] = {}          # page-table pfn -> its 512 entries
        self.gauges = [page_gauges() for _ in range(nr_zones)]   # by global zone id
        self.files: dict[str, MemFile] = {}         # named files by path
        self.inodes: dict[int, MemFile] = {}        # every file, shmem objects too, by inode
        self._next_ino = 2
        self.committed = 0                          # Committed_AS, pages
        self.commit_policy = None                   # set by Machine: callable(pages, mm) -> bool
        self.max_map_count = 65530                  # vm.max_map_count, set by Machine
        self.lru = LruLists(ft, self.gauges, nr_nodes)
        self.mms: dict[int, list] = {}              # anon family -> its processes with an mm
        self.swap = None                            # SwapSystem, set by Machine
        self.reclaim = None                         # Reclaimer: the allocation slow path
        self.psi = None                             # pressure stall accounting
        self.page_cluster = 3                       # vm.page-cluster: readahead of 2^n slots
        self.eviction_clock = 0                     # pages evicted so far (refault distances)
        self.pinned: set[int] = set()               # frames a fault in progress holds (get_page)
        self.flush = None                           # writes a range access still owes its pages
        self.current = None                         # the process whose command or tick runs
        self.kowners: dict = {}                     # KOWNER_* -> kernel user of movable frames

    # ------------------------------------------------------------------
    # frames and their gauges
    # ------------------------------------------------------------------

    def _gauge(self, pfn: int, stat: int, delta: int) -> None:
        self.gauges[self.ft.pb_zone[pfn >> 9]][stat] += delta

    def _alloc(self, ptype: int, cpu: int, node: int, proc=None, ilx: int = -1) -> int:
        """A frame for a page table or a user page, placed by proc's memory policy; when
        memory is short, reclaim (direct reclaim, then the OOM killer) finds one or raises
        FaultOom."""
        if ptype == PAGETABLE:
            highest, mt = ZONE_NORMAL, MigrateType.UNMOVABLE
        else:
            highest, mt = ZONE_MOVABLE, MigrateType.MOVABLE
        node, zones, il = self._place(proc, node, highest, ilx)
        pfn = self.pmm.try_alloc_page(node=node, cpu=cpu, highest=highest, mt=mt,
                                      ptype=PageType(ptype), zones=zones)
        if pfn is None:
            if self.reclaim is None:
                raise FaultOom()
            pfn = self.reclaim.alloc_slow(proc, node=node, cpu=cpu, highest=highest, mt=mt,
                                          ptype=PageType(ptype), zones=zones)
        if il >= 0:
            self._count_interleave(pfn, il)
        return pfn

    def _place(self, proc, node: int, highest: int, ilx: int = -1) -> tuple[int, tuple | None, int]:
        """Where proc's memory policy sends its next allocation: (node to start from, the
        zonelist when the policy restricts it (bind) or None, the interleave turn's node or
        -1). ilx, a page's interleave index (its page offset in the mapping, as
        get_vma_policy computes it), picks an anonymous page's node by its place; without
        one, the process's counter takes the next node in turn."""
        pol = proc.mempolicy if proc is not None else None
        if pol is None or pol.mode == "local":
            return node, None, -1
        if pol.mode == "bind":
            return node, self.pmm.bound_zonelist(node, highest, pol.nodes), -1
        if pol.mode == "preferred":
            return pol.nodes[0], None, -1
        target = pol.next_interleave() if ilx < 0 else pol.nodes[ilx % len(pol.nodes)]
        return target, None, target

    def _count_interleave(self, pfn: int, target: int) -> None:
        """interleave_hit: the page landed on the node whose turn it was."""
        zid = self.ft.pb_zone[pfn >> 9]
        if zid // NR_ZONES == target:
            self.pmm.zones[zid].stats[ZoneStat.NUMA_INTERLEAVE] += 1

    def try_alloc_for(self, proc, *, mt=MOVABLE, ptype=PT_ANON) -> int | None:
        """A movable user frame for proc from free memory only (readahead, prefetch): placed
        by its policy, never reclaiming. None when its nodes are short."""
        node, zones, il = self._place(proc, proc.node, ZONE_MOVABLE)
        pfn = self.pmm.try_alloc_page(node=node, cpu=proc.cpu, highest=ZONE_MOVABLE, mt=mt,
                                      ptype=ptype, zones=zones)
        if pfn is not None and il >= 0:
            self._count_interleave(pfn, il)
        return pfn

    def _new_anon(self, proc, va: int) -> int:
        # _alloc(ANON, ...) spelt out for the default policy: this runs on every
        # anonymous fault.
        pfn = None
        if proc.mempolicy is None:
            pfn = self.pmm.try_alloc_page(node=proc.node, cpu=proc.cpu, highest=ZONE_MOVABLE,
                                          mt=MOVABLE, ptype=PT_ANON)
        if pfn is None:
            pfn = self._alloc(ANON, proc.cpu, proc.node, proc, va >> 12)
        ft = self.ft
        ft.rmap[pfn] = (proc.anon_family << RMAP_INDEX_BITS) | (va >> 12)
        zid = ft.pb_zone[pfn >> 9]
        g = self.gauges[zid]
        g[PageStat.ANON] += 1
        # lru.add(pfn) spelt out: the head of its node's inactive anon list.
        lru = self.lru
        node = zid // NR_ZONES
        heads = lru.head[node]
        old = heads[INACTIVE_ANON]
        ft.flags[pfn] |= LRU
        ft.lru_prev[pfn] = NIL
        ft.lru_next[pfn] = old
        if old == NIL:
            lru.tail[node][INACTIVE_ANON] = pfn
        else:
            ft.lru_prev[old] = pfn
        heads[INACTIVE_ANON] = pfn
        g[PageStat.INACTIVE_ANON] += 1
        return pfn

    # ------------------------------------------------------------------
    # page tables
    # ------------------------------------------------------------------

    def new_pgd(self, cpu: int, node: int, proc=None) -> int:
        pfn = self._alloc(PAGETABLE, cpu, node, proc)
        self.tables[pfn] = array("Q", TABLE_BYTES)
        self._gauge(pfn, PageStat.PAGETABLE, 1)
        return pfn

    def leaf(self, mm: AddressSpace, va: int, alloc: bool = False, cpu: int = 0, node: int = 0,
             proc=None):
        """The PTE table covering va (or None); with alloc, build missing levels (placed by
        proc's memory policy when given)."""
        t = mm.leaf_cache.get(va >> 21)
        if t is not None:
            return t
        t = self.tables[mm.pgd]
        for shift in (39, 30, 21):
            i = (va >> shift) & 511
            e = t[i]
            if e & 1:
                if e & P.PSE:                        # a huge page: its PTEs are wanted now
                    self.split_huge_pmd(mm, va >> 21)
                    e = t[i]
                t = self.tables[(e & PFN_MASK) >> 12]
                continue
            if not alloc:
                return None
            pfn = self._alloc(PAGETABLE, cpu, node, proc)
            t[i] = (pfn << 12) | P.PAGE_TABLE
            t = self._new_table(mm, pfn)
        mm.leaf_cache[va >> 21] = t
        return t

    def _new_table(self, mm: AddressSpace, pfn: int) -> array:
        """Frame pfn (a fresh PAGETABLE frame) becomes one of mm's tables, all entries none."""
        new = array("Q", TABLE_BYTES)
        self.tables[pfn] = new
        self._gauge(pfn, PageStat.PAGETABLE, 1)
        mm.pt_pages += 1
        return new

    def _free_table(self, mm: AddressSpace | None, pfn: int) -> None:
        del self.tables[pfn]
        self._gauge(pfn, PageStat.PAGETABLE, -1)
        if mm is not None:
            mm.pt_pages -= 1
            mm.leaf_cache.clear()
        self.pmm.free_page(pfn, cpu=0)

    def free_pgtables(self, mm: AddressSpace, start: int, end: int) -> None:
        """Free the tables under [start, end) that no VMA needs any more (free_pgtables).

        A table goes when no VMA overlaps the span it maps; its entries are all
        zero by then (the range was zapped first).
        """
        for shift in (21, 30, 39):
            span = 1 << shift
            lo, hi = start & ~(span - 1), page_align(end)
            for base in range(lo, hi, span):
                if mm.any_in(base, base + span):
                    continue
                parent = self._table_holding(mm, base, shift)
                if parent is None:
                    continue
                i = (base >> shift) & 511
                e = parent[i]
                if not e & 1:
                    continue
                child = (e & PFN_MASK) >> 12
                bug_on(any(self.tables[child]), "free_pgtables",
                       f"table at pfn {child:#x} for {base:#x} still has entries")
                parent[i] = 0
                self._free_table(mm, child)

    def _table_holding(self, mm: AddressSpace, va: int, shift: int):
        """The table whose entry at `shift` maps va (the PGD for 39, the PUD for 30, ...)."""
        t = self.tables[mm.pgd]
        for s in (39, 30, 21):
            if s == shift:
                return t
            e = t[(va >> s) & 511]
            if not e & 1:
                return None
            t = self.tables[(e & PFN_MASK) >> 12]
        return None

    def leaf_tables(self, mm: AddressSpace, start: int, end: int, split: bool = True):
        """(table, va of its entry 0, first index, end index) for each PTE table under [start, end).

        A huge PMD on the way is split first; a reader that changes nothing passes
        split=False and gets, for it, a copy of the 512 PTEs it stands for."""
        tables = self.tables
        va = start
        while va < end:
            t = tables[mm.pgd]
            for shift in (39, 30, 21):
                e = t[(va >> shift) & 511]
                if not e & 1:
                    break
                if e & P.PSE:
                    if split:
                        self.split_huge_pmd(mm, va >> 21)
                        e = t[(va >> shift) & 511]
                    else:
                        t = self.huge_entries(e)
                        continue
                t = tables[(e & PFN_MASK) >> 12]
            else:
                base = va & ~((1 << 21) - 1)
                nxt = base + (1 << 21)
                yield t, base, (va - base) >> 12, (min(end, nxt) - base) >> 12
                va = nxt
                continue
            # No table at this level: nothing is mapped up to its next entry (sparse
            # areas cost a walk per missing table, not one per 2 MiB).
            va = (va | ((1 << shift) - 1)) + 1

    # ------------------------------------------------------------------
    # the page fault
    # ------------------------------------------------------------------

    def access(self, proc, va: int, write: bool) -> int:
        """Make the page at va accessible as a CPU access would, faulting if needed; its pfn."""
        mm = proc.mm
        if mm.limit is not None:
            return self._limited_access(proc, va, write)
        if mm.thp and (va >> 21) in mm.thp:
            pfn = self.huge_access(proc, va, write)
            return pfn if pfn is not None else self.fault(proc, va, write)
        t = mm.leaf_cache.get(va >> 21) or self.leaf(mm, va)
        if t is not None:
            i = (va >> 12) & 511
            e = t[i]
            if e & 1 and (not write or e & P.RW):
                if write:
                    t[i] = e | P.ACCESSED | P.DIRTY | P.SOFT_DIRTY
                    pfn = (e & PFN_MASK) >> 12
                    if self.ft.flags[pfn] & TYPE_MASK == FILE:
                        self._set_dirty(pfn)
                    return pfn
                if not e & P.ACCESSED:
                    t[i] = e | P.ACCESSED
                return (e & PFN_MASK) >> 12
        return self.fault(proc, va, write)

    def access_many(self, proc, vas: list, writes: list) -> None:
        """access() for each (va, write) in order, as a CPU running a program would: the
        present-entry fast path inline (the same as access()), any fault through fault()."""
        mm = proc.mm
        if mm.limit is not None:
            for va, write in zip(vas, writes):
                self._limited_access(proc, va, write)
            return
        flags = self.ft.flags
        accessed = P.ACCESSED
        written = P.ACCESSED | P.DIRTY | P.SOFT_DIRTY
        cache = mm.leaf_cache
        thp = mm.thp
        for va, write in zip(vas, writes):
            if thp and (va >> 21) in thp:
                if self.huge_access(proc, va, write) is None:
                    self.fault(proc, va, write)
                continue
            t = cache.get(va >> 21) or self.leaf(mm, va)
            if t is not None:
                i = (va >> 12) & 511
                e = t[i]
                if e & 1 and (not write or e & P.RW):
                    if write:
                        if e & written != written:
                            t[i] = e | written
                        pfn = (e & PFN_MASK) >> 12
                        if flags[pfn] & TYPE_MASK == FILE:
                            self._set_dirty(pfn)
                    elif not e & accessed:
                        t[i] = e | accessed
                    continue
            self.fault(proc, va, write)

    def fault(self, proc, va: int, write: bool) -> int:
        """handle_mm_fault: find the VMA, check the access, fix the entry. Returns the pfn."""
        mm = proc.mm
        vma = mm.find(va)
        if vma is None:
            vma = self._expand_stack(mm, va)
            if vma is None:
                raise Segv(va, write, False, why="no mapping at this address")
        # x86 page tables cannot refuse a read of a writable or executable page.
        if write and not vma.writable or not write and not vma.flags & PROT_BITS:
            raise Segv(va, write, self._present(mm, va),
                       why=f"{'write to' if write else 'read of'} a {vma.perms()} mapping")
        if mm.thp and (va >> 21) in mm.thp:
            pfn = self.huge_access(proc, va, write)
            if pfn is not None:
                return pfn
            # A write to a read-only huge page: its pages are handled one by one (leaf splits).
        elif mm.limit is None and self.thp_eligible(vma, va):
            pfn = self.huge_fault(proc, vma, va, write)
            if pfn is not None:
                mm.update_hiwater_rss()
                return pfn
        t = self.leaf(mm, va, alloc=True, cpu=proc.cpu, node=proc.node, proc=proc)
        pfn = self._handle_fault(proc, vma, va, t, (va >> 12) & 511, write)
        mm.update_hiwater_rss()
        return pfn

    def _present(self, mm: AddressSpace, va: int) -> bool:
        """Is a page behind va's entry (the protection bit of the fault's error code)?"""
        if (va >> 21) in mm.thp:
            return True
        t = self.leaf(mm, va)
        return t is not None and bool(t[(va >> 12) & 511] & (P.P | P.PROTNONE))

    def _handle_fault(self, proc, vma: Vma, va: int, t, i: int, write: bool) -> int:
        """handle_pte_fault: fix entry i of PTE table t (va's), the access being allowed by vma."""
        e = t[i]
        self.events[VmEvent.PGFAULT] += 1
        if e & 1:
            pfn = self._wp_fault(proc, vma, va, t, i, e)
            proc.minflt += 1
        elif e == 0:
            pfn = self._fault_none(proc, vma, va, t, i, write)
        else:
            # PROT_NONE entries sit only in PROT_NONE VMAs, refused by the caller: a
            # not-present entry here is a swap entry.
            bug_on(e & P.PROTNONE, "fault", f"entry {e:#018x} at {va:#x} in {vma!r}")
            pfn = self._swap_fault(proc, vma, va, t, i, e, write)
        return pfn

    def _pte_bits(self, vma: Vma, writable: bool, write: bool) -> int:
        bits = P.P | P.US | P.ACCESSED
        if writable:
            bits |= P.RW
        if write:
            bits |= P.DIRTY | P.SOFT_DIRTY
        if not vma.executable:
            bits |= P.NX
        return bits

    def _fault_none(self, proc, vma: Vma, va: int, t, i: int, write: bool) -> int:
        mm = proc.mm
        if vma.file is None:                                    # do_anonymous_page
            if not write:
                t[i] = (self.zero_pfn << 12) | self._pte_bits(vma, False, False) | P.SPECIAL
                proc.minflt += 1
                self.trace.fault(proc.pid, va, "read zero")
                return self.zero_pfn
            pfn = self._new_anon(proc, va)
            self._map_anon(mm, vma, t, i, pfn)
            proc.minflt += 1
            self.trace.fault(proc.pid, va, "write anon")
            return pfn
        f = vma.file
        index = vma.file_index(va)
        if index >= f.nr_pages:
            raise Segv(va, write, False, signal="SIGBUS",
                       why=f"page {index} is past the end of {f.path} ({f.nr_pages} pages)")
        pfn, major = self._cache_page(proc, f, index)
        if major:
            proc.majflt += 1
            self.events[VmEvent.PGMAJFAULT] += 1
        else:
            proc.minflt += 1
        how = ("write " if write else "read ") + ("major" if major else "shmem" if f.shmem else "file")
        if write and not vma.shared:                            # do_cow_fault
            self.pinned.add(pfn)
            try:
                new = self._new_anon(proc, va)
            finally:
                self.pinned.discard(pfn)
            self.ft.content[new] = self.ft.content[pfn]
            self._map_anon(mm, vma, t, i, new)
            self.trace.fault(proc.pid, va, how + " cow")
            return new
        self.trace.fault(proc.pid, va, how)
        self._map_cache(mm, t, i, pfn, self._pte_bits(vma, vma.shared and vma.writable, write))
        if write:
            self._set_dirty(pfn)
        return pfn

    def _map_anon(self, mm: AddressSpace, vma: Vma, t, i: int, pfn: int) -> None:
        t[i] = (pfn << 12) | self._pte_bits(vma, True, True)
        self.ft.mapcount[pfn] = 1
        mm.rss_anon += 1
        vma.has_anon = True

    def _map_cache(self, mm: AddressSpace, t, i: int, pfn: int, bits: int) -> None:
        mc = self.ft.mapcount
        bug_on(mc[pfn] == 0xFFFF, "map", f"pfn {pfn:#x} mapped 65535 times")
        t[i] = (pfn << 12) | bits
        mc[pfn] += 1
        if mc[pfn] == 1:
            self._gauge(pfn, PageStat.FILE_MAPPED, 1)
        if self.ft.flags[pfn] & TYPE_MASK == SHMEM:
            mm.rss_shmem += 1
        else:
            mm.rss_file += 1

    def _cache_page(self, proc, f: MemFile, index: int) -> tuple[int, bool]:
        """The page-cache frame of f's page index, reading it in if needed: (pfn, major)."""
        pfn = int(f.cache[index])
        if pfn != NO_FRAME:
            return pfn, False
        ptype = SHMEM if f.shmem else FILE
        pfn = self._alloc(ptype, proc.cpu, proc.node, proc)
        self.ft.rmap[pfn] = (f.ino << RMAP_INDEX_BITS) | index
        g = self.gauges[self.ft.pb_zone[pfn >> 9]]
        g[PageStat.FILE] += 1
        active = False
        if f.shmem:
            g[PageStat.SHMEM] += 1
        else:
            self.ft.content[pfn] = int(f.disk[index])
            self.events[VmEvent.PGPGIN] += PAGE // 1024
            evicted = f.evicted_at(index)
            if evicted is not None:                          # a refault of an evicted page
                # Only a refault is a memory stall (a first read is plain I/O), as in PSI.
                self.psi.stall(proc, self.psi.FILE_READ_US)
                g[PageStat.WS_REFAULT_FILE] += 1
                active = self._refault_active(evicted)
                if active:
                    g[PageStat.WS_ACTIVATE_FILE] += 1
        self.lru.add(pfn, active)                            # shmem is swap-backed: anon lists
        f.cache[index] = pfn
        f.nr_cached += 1
        return pfn, not f.shmem

    def _set_dirty(self, pfn: int) -> None:
        flags = self.ft.flags
        if flags[pfn] & TYPE_MASK == FILE and not flags[pfn] & PG_DIRTY:
            flags[pfn] |= PG_DIRTY
            self._gauge(pfn, PageStat.FILE_DIRTY, 1)
            self.inodes[self.ft.rmap[pfn] >> RMAP_INDEX_BITS].nr_dirty += 1

    def _wp_fault(self, proc, vma: Vma, va: int, t, i: int, e: int) -> int:
        """Write to a present read-only page in a writable VMA: do_wp_page."""
        mm = proc.mm
        pfn = (e & PFN_MASK) >> 12
        if vma.shared:                                          # shared: just make it writable
            t[i] = e | P.RW | P.ACCESSED | P.DIRTY | P.SOFT_DIRTY
            self._set_dirty(pfn)
            self.trace.fault(proc.pid, va, "write shared")
            return pfn
        ft = self.ft
        if not e & P.SPECIAL and ft.flags[pfn] & TYPE_MASK == ANON and ft.mapcount[pfn] == 1 \
                and self._can_reuse_swapcache(pfn):
            t[i] = e | P.RW | P.ACCESSED | P.DIRTY | P.SOFT_DIRTY      # wp_page_reuse
            self.events[VmEvent.PGREUSE] += 1
            self.trace.fault(proc.pid, va, "write reuse")
            return pfn
        self.trace.fault(proc.pid, va, "write cow")
        special = e & P.SPECIAL
        if not special:
            self.pinned.add(pfn)                        # the copy's source stays put
        try:
            new = self._new_anon(proc, va)              # wp_page_copy
        finally:
            self.pinned.discard(pfn)
        e = t[i]
        ft.content[new] = 0 if special else ft.content[pfn]
        if not special:
            self._unmap_frame(mm, pfn, e)
        self._map_anon(mm, vma, t, i, new)
        return new

    def _can_reuse_swapcache(self, pfn: int) -> bool:
        """A page in the swap cache may be written in place only if no swap entry still
        holds its slot; it then leaves the swap cache (folio_free_swap)."""
        if not self.ft.flags[pfn] & SWAPCACHE:
            return True
        area, off = self.slot_of(pfn)
        if area.count[off] & COUNT_MASK:
            return False
        self.swapcache_del(pfn)
        return True

    def _unmap_frame(self, mm: AddressSpace, pfn: int, e: int = 0) -> None:
        """One PTE (entry e) mapping pfn went away: mapcount, rss and gauges follow."""
        ft = self.ft
        ptype = ft.flags[pfn] & TYPE_MASK
        ft.mapcount[pfn] -= 1
        left = ft.mapcount[pfn]
        if ptype == ANON:
            mm.rss_anon -= 1
            if e & P.DIRTY and ft.flags[pfn] & SWAPCACHE:
                ft.flags[pfn] |= PG_DIRTY               # newer than its slot
            if left == 0:
                self._gauge(pfn, PageStat.ANON, -1)
                self.release_unmapped_anon(pfn)
            return
        if ptype == SHMEM:
            mm.rss_shmem -= 1
        else:
            mm.rss_file -= 1
        if left == 0:
            self._gauge(pfn, PageStat.FILE_MAPPED, -1)

    def _expand_stack(self, mm: AddressSpace, va: int) -> Vma | None:
        """A touch just below a stack grows it (expand_downwards), within the rlimit and guard gap."""
        vma = mm.next_after(va)
        if vma is None or not vma.flags & VM_GROWSDOWN or va >= TASK_SIZE:
            return None
        new_start = va & ~(PAGE - 1)
        if vma.end - new_start > STACK_RLIMIT:
            return None
        prev = mm.prev_before(new_start)
        if prev is not None and prev.end + STACK_GUARD_GAP > new_start:
            return None
        grow = (vma.start - new_start) // PAGE
        if not self.charge(grow, mm):
            return None
        mm.remove(vma)
        vma.start = new_start
        mm.insert(vma)
        return vma

    # ------------------------------------------------------------------
    # overcommit
    # ------------------------------------------------------------------

    def charge(self, pages: int, mm: AddressSpace | None, *, to_mm: bool = True) -> bool:
        """__vm_enough_memory: charge pages to Committed_AS if the policy allows.

        The charge is also booked to mm unless to_mm is False (shared memory is
        charged to its object and given back when the object goes).
        """
        if pages <= 0:
            return True
        if not self.commit_policy(pages, mm):
            return False
        self.committed += pages
        if mm is not None and to_mm:
            mm.committed += pages
        return True

    def uncharge(self, pages: int, mm: AddressSpace | None) -> None:
        self.committed -= pages
        if mm is not None:
            mm.committed -= pages
        bug_on(self.committed < 0, "uncharge", "Committed_AS went negative")

    # ------------------------------------------------------------------
    # zapping: unmap a range's pages (munmap, MADV_DONTNEED, exit)
    # ------------------------------------------------------------------

    def zap(self, mm: AddressSpace, start: int, end: int) -> int:
        """Clear every entry in [start, end), dropping what each mapped. Returns entries cleared.

        Vectorised per PTE table (exit and munmap of large areas go through
        here); the effect is that of clearing the entries one at a time in
        address order: frames are let go in the order of their last entry.
        """
        ft = self.ft
        flags = ft.flags_np()
        mapcount = ft.mapcount_np()
        pb_zone = np.frombuffer(ft.pb_zone, dtype=np.uint8)
        nr_zones = len(self.gauges)
        cleared = self.zap_huge(mm, start, end) if mm.thp else 0
        for t, base, lo, hi in self.leaf_tables(mm, start, end):
            view = np.frombuffer(t, dtype=U64)[lo:hi]
            nz = np.flatnonzero(view)
            if not nz.size:
                continue
            ents = view[nz]
            mapped = (ents & U64(P.P | P.PROTNONE)) != 0
            view[:] = 0
            cleared += nz.size
            if not mapped.all():                                # swap entries: drop their slots
                self._zap_swap(mm, ents[~mapped])
                ents = ents[mapped]
            ents = ents[(ents & U64(P.SPECIAL)) == 0]           # the zero page: nothing to drop
            if not ents.size:
                continue
            pfns = _pfns(ents)
            types = flags[pfns] & TYPE_MASK
            written = (ents & U64(P.DIRTY)) != 0
            for pfn in pfns[written & (types == FILE)].tolist():
                self._set_dirty(pfn)                            # a written file page: PG_dirty
            swapcache = written & (types == ANON) & ((flags[pfns] & SWAPCACHE) != 0)
            if swapcache.any():                                 # newer than its swap slot
                flags[pfns[swapcache]] |= PG_DIRTY
            nr_anon = int(np.count_nonzero(types == ANON))
            nr_shmem = int(np.count_nonzero(types == SHMEM))
            mm.rss_anon -= nr_anon
            mm.rss_shmem -= nr_shmem
            mm.rss_file -= ents.size - nr_anon - nr_shmem
            # The frames, each once, in the order of their last entry here.
            rev = pfns[::-1]
            uniq, at, cnt = np.unique(rev, return_index=True, return_counts=True)
            order = np.argsort(at)[::-1]
            uniq, cnt = uniq[order], cnt[order]
            left = mapcount[uniq].astype(np.int64) - cnt
            bug_on(bool((left < 0).any()), "zap", "a frame's mapcount went negative")
            mapcount[uniq] = left
            gone = uniq[left == 0]
            if not gone.size:
                continue
            anon = (flags[gone] & TYPE_MASK) == ANON
            by_zone = np.bincount(pb_zone[gone[~anon] >> 9], minlength=nr_zones)
            for z in np.flatnonzero(by_zone).tolist():
                self.gauges[z][PageStat.FILE_MAPPED] -= int(by_zone[z])
            gone = gone[anon]
            by_zone = np.bincount(pb_zone[gone >> 9], minlength=nr_zones)
            for z in np.flatnonzero(by_zone).tolist():
                self.gauges[z][PageStat.ANON] -= int(by_zone[z])
            cached = (flags[gone] & SWAPCACHE) != 0
            self.lru.delete_many(gone[~cached])                 # free_anon_frame's part, batched
            release, free_page = self.release_unmapped_anon, self.pmm.free_page
            for pfn, in_cache in zip(gone.tolist(), cached.tolist()):
                if in_cache:
                    release(pfn)                                # the swap cache decides
                else:
                    free_page(pfn, cpu=0)
        if mm.limit is not None:
            mm.limit.forget_range(start >> 12, (end + PAGE - 1) >> 12)
        return cleared

    def _zap_swap(self, mm: AddressSpace, ents: np.ndarray) -> None:
        """Swap entries cleared from a page table: each slot loses a reference."""
        types = (ents >> U64(P.SWP_TYPE_SHIFT)).astype(np.int64)
        bug_on(bool((types >= P.MAX_SWAPFILES).any()), "zap",
               f"special swap-style entry {int(ents[np.argmax(types >= P.MAX_SWAPFILES)]):#018x}")
        offs = ((~ents << U64(P.SWP_TYPE_BITS)) >> U64(P.SWP_OFFSET_SHIFT)).astype(np.int64)
        put = self.swap.put
        for t, off in zip(types.tolist(), offs.tolist()):
            put(t, off)
        mm.swap_ents -= ents.size

    # ------------------------------------------------------------------
    # mmap, munmap, mprotect, madvise, brk
    # ------------------------------------------------------------------

    def _new_inode(self, path: str, size: int, shmem: bool) -> MemFile:
        f = MemFile(self._next_ino, path, size, shmem=shmem)
        self._next_ino += 1
        self.inodes[f.ino] = f
        return f

    def create_file(self, path: str, size: int) -> MemFile:
        if path in self.files:
            raise Exists(f"file: {path} already exists ({self.files[path].size} bytes)")
        f = self._new_inode(path, size, False)
        self.files[path] = f
        return f

    def mmap(self, proc, length: int, *, addr: int | None, prot: int, shared: bool,
             file: MemFile | None, offset: int, populate: bool, name: str | None = None,
             extra_flags: int = 0) -> int:
        mm = proc.mm
        if length <= 0:
            raise InvalidArgument("mmap: length must be more than 0")
        length = page_align(length)
        if offset % PAGE:
            raise InvalidArgument(f"mmap: offset={offset:#x} is not a multiple of the page size")
        if addr is not None:
            if addr % PAGE:
                raise InvalidArgument(f"mmap: addr={addr:#x} is not page aligned")
            if addr < MMAP_MIN_ADDR or addr + length > TASK_SIZE:
                raise InvalidArgument(f"mmap: [{addr:#x}, {addr + length:#x}) is outside user space "
                                      f"[{MMAP_MIN_ADDR:#x}, {TASK_SIZE:#x})")
            clash = mm.overlapping(addr, addr + length)
            if clash:
                raise Exists(f"mmap: [{addr:#x}, {addr + length:#x}) overlaps the mapping at "
                             f"{clash[0].start:#x}-{clash[0].end:#x}; munmap it first")
            start = addr
        else:
            start = mm.unmapped_area(length)
            if start is None:
                raise OutOfMemory(f"mmap: no free range of {length} bytes left in the address space")
        if len(mm.vmas) > self.max_map_count:          # do_mmap's check, before adding
            raise OutOfMemory(f"mmap: the process already has {len(mm.vmas)} mappings "
                              f"(vm.max_map_count)")
        # New areas start soft-dirty; the MAY bits allow any later mprotect (files are read-write).
        flags = prot | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC | VM_SOFTDIRTY | extra_flags
        if shared:
            flags |= VM_SHARED | VM_MAYSHARE
        pages = length // PAGE
        if shared and file is None:                  # shmem: charged to the object
            if not self.charge(pages, mm, to_mm=False):
                raise OutOfMemory(self._refusal("mmap", pages))
            file = self._new_inode("/dev/zero", length, True)
            file.charged = pages
        elif not shared and prot & VM_WRITE:
            flags |= VM_ACCOUNT
            if not self.charge(pages, mm):
                raise OutOfMemory(self._refusal("mmap", pages))
        vma = Vma(start, start + length, flags, file, offset // PAGE, name)
        if file is not None:
            file.maps += 1
        mm.insert(vma)
        vma = mm.try_merge_around(vma)
        mm.update_hiwater()
        if populate:
            self.populate(proc, start, start + length)
        return start

    def _refusal(self, what: str, pages: int) -> str:
        return (f"{what}: committing {pages} more pages would pass the overcommit limit "
                f"(Committed_AS {self.committed} pages; see sys/vm/overcommit_memory)")

    def populate(self, proc, start: int, end: int) -> None:
        """MAP_POPULATE: fault every page in, writing where the mapping is private and writable."""
        for vma in list(proc.mm.overlapping(start, end)):
            if not vma.flags & PROT_BITS:
                continue
            write = vma.writable and not vma.shared
            hi = min(end, vma.end)
            if vma.file is not None:              # pages past the end of the file stay unpopulated
                hi = min(hi, vma.start + max(0, vma.file.nr_pages - vma.pgoff) * PAGE)
            lo = max(start, vma.start)
            if lo < hi:
                self._access_range(proc, lo, hi, write)

    def munmap(self, proc, start: int, length: int) -> int:
        """Unmap [start, start+length); returns pages unmapped. Holes are fine (as in Linux)."""
        mm = proc.mm
        if start % PAGE:
            raise InvalidArgument(f"munmap: address {start:#x} is not page aligned")
        if length <= 0:
            raise InvalidArgument("munmap: length must be more than 0")
        end = start + page_align(length)
        if end > TASK_SIZE:
            raise InvalidArgument(f"munmap: [{start:#x}, {end:#x}) reaches past user space")
        self._check_map_count(mm, start, end, unmap=True)
        victims = mm.isolate(start, end)
        pages = 0
        for vma in victims:
            self.zap(mm, vma.start, vma.end)
            mm.remove(vma)
            pages += vma.pages
            if vma.flags & VM_ACCOUNT:
                self.uncharge(vma.pages, mm)
            self._drop_file_ref(vma.file)
        if victims:
            self.free_pgtables(mm, start, end)
        return pages

    def _drop_file_ref(self, f: MemFile | None) -> None:
        if f is None:
            return
        f.maps -= 1
        if f.shmem and f.maps == 0:                  # the last mapping of shared anon memory
            self.drop_cache(f)
            self.uncharge(f.charged, None)
            del self.inodes[f.ino]

    def drop_cache(self, f: MemFile) -> None:
        """Free every unmapped cached page of f (all of them for a dead shmem object)."""
        for index in np.flatnonzero(f.cache != NO_FRAME):
            pfn = int(f.cache[index])
            if self.ft.mapcount[pfn]:
                continue
            self.writeback(pfn)
            self.remove_from_cache(pfn)

    def writeback(self, pfn: int) -> bool:
        """A dirty file page's content goes to its file (the page stays, clean). True if written."""
        ft = self.ft
        if ft.flags[pfn] & TYPE_MASK != FILE or not ft.flags[pfn] & PG_DIRTY:
            return False
        word = ft.rmap[pfn]
        f = self.inodes[word >> RMAP_INDEX_BITS]
        f.disk[word & ((1 << RMAP_INDEX_BITS) - 1)] = ft.content[pfn]
        ft.flags[pfn] &= ~PG_DIRTY
        self._gauge(pfn, PageStat.FILE_DIRTY, -1)
        self._gauge(pfn, PageStat.WRITTEN, 1)
        f.nr_dirty -= 1
        self.events[VmEvent.PGPGOUT] += PAGE // 1024
        return True

    def remove_from_cache(self, pfn: int, shadow: bool = False) -> None:
        """An unmapped, clean page-cache frame leaves the cache and is freed (with a shadow
        of its eviction time when reclaim evicts it)."""
        ft = self.ft
        word = ft.rmap[pfn]
        f = self.inodes[word >> RMAP_INDEX_BITS]
        index = word & ((1 << RMAP_INDEX_BITS) - 1)
        bug_on(ft.mapcount[pfn] or ft.flags[pfn] & PG_DIRTY, "pagecache",
               f"pfn {pfn:#x} leaves the cache mapped or dirty")
        g = self.gauges[ft.pb_zone[pfn >> 9]]
        g[PageStat.FILE] -= 1
        if f.shmem:
            g[PageStat.SHMEM] -= 1
        self.lru.delete(pfn)
        f.cache[index] = NO_FRAME
        f.nr_cached -= 1
        if shadow:
            f.set_evicted(index, self.eviction_clock)
        self.pmm.free_page(pfn, cpu=0)

    @staticmethod
    def _mapped_range(mm: AddressSpace, what: str, start: int, length: int) -> int:
        """The end of [start, start+length) rounded to pages; ENOMEM unless all of it is mapped."""
        if start % PAGE:
            raise InvalidArgument(f"{what}: address {start:#x} is not page aligned")
        end = start + page_align(length)
        if length <= 0 or not mm.covers(start, end):
            raise OutOfMemory(f"{what}: [{start:#x}, {end:#x}) is not entirely mapped")
        return end

    def _check_map_count(self, mm: AddressSpace, start: int, end: int, *, unmap: bool) -> None:
        """ENOMEM if cutting VMAs at start and end would pass vm.max_map_count (__split_vma)."""
        hit = mm.overlapping(start, end)
        cuts = sum(1 for v in hit for at in (start, end) if v.start < at < v.end)
        # munmap then removes one piece per VMA it touched
        after = len(mm.vmas) + cuts - (len(hit) if unmap else 0)
        if cuts and after > self.max_map_count and after > len(mm.vmas):
            raise OutOfMemory(f"{'munmap' if unmap else 'mprotect'}: splitting mappings at "
                              f"{start:#x}-{end:#x} would make {after} mappings, more than "
                              f"vm.max_map_count ({self.max_map_count})")

    def mprotect(self, proc, start: int, length: int, prot: int) -> None:
        mm = proc.mm
        end = self._mapped_range(mm, "mprotect", start, length)
        self._check_map_count(mm, start, end, unmap=False)
        charge = sum(min(end, v.end) - max(start, v.start) for v in mm.overlapping(start, end)
                     if prot & VM_WRITE and not v.flags & (VM_ACCOUNT | VM_WRITE | VM_SHARED)) // PAGE
        if charge and not self.charge(charge, mm):
            raise OutOfMemory(self._refusal("mprotect", charge))
        for vma in mm.isolate(start, end):
            newflags = (vma.flags & ~PROT_BITS) | prot
            if prot & VM_WRITE and not vma.flags & (VM_ACCOUNT | VM_WRITE | VM_SHARED):
                newflags |= VM_ACCOUNT
            vma.flags = newflags
            self._reprotect(mm, vma)
        for vma in list(mm.overlapping(start, end)):
            if vma in mm.vmas:
                mm.try_merge_around(vma)
        mm.update_hiwater()

    def _reprotect(self, mm: AddressSpace, vma: Vma) -> None:
        """Rewrite the entries of vma's pages for its (new) protection (change_pte_range)."""
        ft = self.ft
        keep = P.ACCESSED | P.DIRTY | P.SOFT_DIRTY | P.SPECIAL
        for t, base, lo, hi in self.leaf_tables(mm, vma.start, vma.end):
            view = np.frombuffer(t, dtype=np.uint64)[lo:hi]
            for k in np.flatnonzero(view):
                i = lo + int(k)
                e = t[i]
                if not e & (P.P | P.PROTNONE):
                    continue
                pfn = P.pfn_of(e)
                if not vma.flags & PROT_BITS:
                    present = (pfn << 12) | (e & keep) | P.P | P.US
                    t[i] = P.make_protnone(present)
                    continue
                writable = vma.writable and not e & P.SPECIAL and (
                    vma.shared or (ft.flags[pfn] & TYPE_MASK == ANON and ft.mapcount[pfn] == 1
                                   and not ft.flags[pfn] & SWAPCACHE))
                t[i] = (pfn << 12) | (e & keep) | self._pte_bits(vma, writable, False)

    def madvise(self, proc, start: int, length: int, advice: str) -> int:
        mm = proc.mm
        end = self._mapped_range(mm, "madvise", start, length)
        vmas = mm.overlapping(start, end)
        if advice == "dontneed":
            return sum(self.zap(mm, max(start, v.start), min(end, v.end)) for v in vmas)
        if advice == "free":
            for v in vmas:
                if v.file is not None or v.shared:
                    raise InvalidArgument(f"madvise: free applies to private anonymous memory; "
                                          f"{v.start:#x}-{v.end:#x} is a {'shared' if v.shared else 'file'} "
                                          f"mapping")
            return sum(self._lazyfree(mm, max(start, v.start), min(end, v.end)) for v in vmas)
        if advice in ("hugepage", "nohugepage"):
            self._check_map_count(mm, start, end, unmap=False)
            for b in (start, end):                   # no huge page may straddle a VMA's edge
                if b & ~HPAGE_MASK and (b >> 21) in mm.thp:
                    self.split_huge_pmd(mm, b >> 21)
            on, off = (VM_HUGEPAGE, VM_NOHUGEPAGE) if advice == "hugepage" else \
                (VM_NOHUGEPAGE, VM_HUGEPAGE)
            for vma in mm.isolate(start, end):
                vma.flags = (vma.flags & ~off) | on
            for vma in list(mm.overlapping(start, end)):
                if vma in mm.vmas:
                    mm.try_merge_around(vma)
            return 0
        raise InvalidArgument(f"madvise: unknown advice {advice!r} (dontneed, free, hugepage "
                              f"or nohugepage)")

    def _lazyfree(self, mm: AddressSpace, start: int, end: int) -> int:
        """MADV_FREE: exclusively owned pages become clean and discardable (madvise_free_pte_range)."""
        ft = self.ft
        n = 0
        for t, base, lo, hi in self.leaf_tables(mm, start, end):
            view = np.frombuffer(t, dtype=np.uint64)[lo:hi]
            for k in np.flatnonzero(view):
                i = lo + int(k)
                e = t[i]
                if not e & (P.P | P.PROTNONE):              # swapped out: dropped at once
                    t[i] = 0
                    self.swap.put(P.swp_type(e), P.swp_offset(e))
                    mm.swap_ents -= 1
                    continue
                if not e & P.P or e & P.SPECIAL:
                    continue
                pfn = (e & PFN_MASK) >> 12
                if ft.flags[pfn] & TYPE_MASK != ANON or ft.mapcount[pfn] != 1 \
                        or ft.flags[pfn] & SWAPCACHE:
                    continue
                t[i] = e & ~(P.DIRTY | P.ACCESSED)
                if not ft.flags[pfn] & LAZYFREE:
                    ft.flags[pfn] |= LAZYFREE
                    self.events[VmEvent.PGLAZYFREE] += 1
                n += 1
        return n

    # ------------------------------------------------------------------
    # fork and exit
    # ------------------------------------------------------------------

    def dup_mm(self, parent, child) -> None:
        """Copy parent's address space into child (dup_mmap): COW for private pages.

        Shared and never-written private file areas are not copied: the child
        faults them in from the page cache, as Linux skips VMAs without anon_vma.
        On failure (commit limit, no frame) the child's half-built space is torn
        down and OutOfMemory is raised; the parent is unchanged.
        """
        src = parent.mm
        dst = child.mm
        charge = sum(v.pages for v in src.vmas if v.flags & VM_ACCOUNT)
        if not self.charge(charge, dst):
            self.exit_mm(child)                  # gives back the child's page-table root
            raise OutOfMemory(self._refusal("fork", charge))
        for k in ("start_code", "end_code", "start_data", "end_data", "start_brk", "brk",
                  "start_stack", "hiwater_vm"):
            setattr(dst, k, getattr(src, k))
        try:
            for vma in src.vmas:
                new = vma.copy(vma.start, vma.end)
                dst.insert(new)
                if vma.file is not None:
                    vma.file.maps += 1
                if not vma.shared and vma.has_anon:
                    self._copy_range(src, dst, vma, child)
        except FaultOom:
            self.exit_mm(child)
            raise OutOfMemory("fork: no frames left for the child's page tables") from None
        dst.hiwater_rss = dst.rss

    def _copy_range(self, src: AddressSpace, dst: AddressSpace, vma: Vma, child) -> None:
        """copy_pte_range, vectorised per PTE table: the child gets every non-none entry, made
        old; mapped frames gain a mapping each; a writable VMA's writable entries become
        read-only in both (copy-on-write). The zero page is shared but never counted."""
        mapcount = self.ft.mapcount_np()
        flags = self.ft.flags_np()
        for t, base, lo, hi in self.leaf_tables(src, vma.start, vma.end):
            view = np.frombuffer(t, dtype=U64)[lo:hi]
            nz = np.flatnonzero(view)
            if not nz.size:
                continue
            ct = self.leaf(dst, base, alloc=True, cpu=child.cpu, node=child.node, proc=child)
            ents = view[nz]
            mapped = (ents & U64(P.P | P.PROTNONE)) != 0
            if not mapped.all():                        # swap entries: the slot gains a holder
                swp = ents[~mapped]
                types = (swp >> U64(P.SWP_TYPE_SHIFT)).astype(np.int64).tolist()
                offs = ((~swp << U64(P.SWP_TYPE_BITS)) >> U64(P.SWP_OFFSET_SHIFT)).astype(np.int64)
                for st, off in zip(types, offs.tolist()):
                    self.swap.dup(st, off)
                dst.swap_ents += swp.size
            page = mapped & ((ents & U64(P.SPECIAL)) == 0)
            pfns = _pfns(ents[page])
            if pfns.size:
                uniq, cnt = np.unique(pfns, return_counts=True)
                now = mapcount[uniq].astype(np.int64) + cnt
                if (now > 0xFFFF).any():
                    pfn = int(uniq[np.argmax(now > 0xFFFF)])
                    bug_on(True, "fork", f"pfn {pfn:#x} mapped 65535 times")
                mapcount[uniq] = now
                types = flags[pfns] & TYPE_MASK
                nr_anon = int(np.count_nonzero(types == ANON))
                nr_shmem = int(np.count_nonzero(types == SHMEM))
                dst.rss_anon += nr_anon
                dst.rss_shmem += nr_shmem
                dst.rss_file += pfns.size - nr_anon - nr_shmem
                if vma.writable:
                    cow = page & ((ents & U64(P.RW)) != 0)
                    ents[cow] &= ~U64(P.RW)
                    view[nz] = ents
            np.frombuffer(ct, dtype=U64)[lo + nz] = ents & ~U64(P.ACCESSED)   # pte_mkold

    def exit_mm(self, proc) -> None:
        """Tear down an address space: every page, every table, every charge."""
        mm = proc.mm
        for vma in list(mm.vmas):
            self.zap(mm, vma.start, vma.end)
            mm.remove(vma)
            self._drop_file_ref(vma.file)
        if mm.committed:
            self.uncharge(mm.committed, mm)
        self._free_tree(mm, mm.pgd, 0)
        proc.mm = None
        self.unregister(proc)

    def _free_tree(self, mm: AddressSpace, pfn: int, level: int) -> None:
        t = self.tables[pfn]
        if level < 3:
            for k in np.flatnonzero(np.frombuffer(t, dtype=np.uint64)):
                self._free_tree(mm, (t[int(k)] & PFN_MASK) >> 12, level + 1)
        else:
            bug_on(np.frombuffer(t, dtype=U64).any(), "exit_mm",
                   f"PTE table {pfn:#x} still maps pages at exit")
        self._free_table(mm if level else None, pfn)

    # ------------------------------------------------------------------
    # what a program does with its memory (the per-process ctl verbs)
    # ------------------------------------------------------------------

    def touch(self, proc, start: int, length: int, write: bool) -> int:
        """Access every page of [start, start+length); returns pages touched."""
        if length > 0 and start >> 12 == (start + length - 1) >> 12:
            # One page (most of a program's writes): the access alone, without the
            # range walk's set-up; at the page's address, as the range walk reports it.
            self.access(proc, start & ~(PAGE - 1), write)
            proc.mm.update_hiwater_rss()
            return 1
        n = self._access_range(proc, start, start + length, write)
        proc.mm.update_hiwater_rss()
        return n

    def write_value(self, proc, va: int, value: int) -> None:
        pfn = self.access(proc, va, True)
        self.ft.content[pfn] = value

    def read_value(self, proc, va: int) -> int:
        return int(self.ft.content[self.access(proc, va, False)])

    def fill(self, proc, start: int, length: int, seed: int) -> int:
        content = self.ft.content_np()

        def put(va: int, pfns: list) -> None:
            # Written after the run's faults: no fault reads a frame that another
            # page of the same run writes (written frames are this mapping's own).
            content[pfns] = fill_values(va, len(pfns), seed)

        n = self._access_range(proc, start, start + length, True, put)
        proc.mm.update_hiwater_rss()
        return n

    def verify(self, proc, start: int, length: int, seed: int) -> int:
        """Pages in the range whose value is not what fill wrote (reading them as a CPU would)."""
        content = self.ft.content_np()
        bad = 0

        def check(va: int, pfns: list) -> None:
            nonlocal bad
            bad += int(np.count_nonzero(content[pfns] != fill_values(va, len(pfns), seed)))

        self._access_range(proc, start, start + length, False, check)
        proc.mm.update_hiwater_rss()
        return bad

    # ------------------------------------------------------------------
    # accessing a range: what touch, fill, verify and populate share
    # ------------------------------------------------------------------

    def _access_range(self, proc, start: int, end: int, write: bool, apply=None) -> int:
        """Access the pages of [start, end) in address order, as access() would one by one.

        apply(va, pfns), if given, receives the frames of consecutive pages from
        va, a PTE table's worth at a time; when a fault raises (Segv, FaultOom)
        it first receives the pages accessed before it. Returns pages accessed.
        """
        mm = proc.mm
        va = start & ~(PAGE - 1)
        n = 0
        if mm.limit is not None:                   # one page at a time, past the policy
            while va < end:
                pfn = self._limited_access(proc, va, write)
                if apply is not None:
                    apply(va, [pfn])
                va += PAGE
                n += 1
            return n
        while va < end:
            vma = mm.find(va)
            if vma is None or not vma.flags & (VM_WRITE if write else VM_READ | VM_WRITE):
                # A hole or a refused access: access() grows the stack or raises Segv.
                pfn = self.access(proc, va, write)
                if apply is not None:
                    apply(va, [pfn])
                va += PAGE
                n += 1
                continue
            stop = min(end, vma.end)
            while va < stop:
                nxt = min(stop, (va | 0x1FFFFF) + 1)
                pfns = []
                done = [0]
                if apply is not None:
                    def flush(va=va, pfns=pfns, done=done):
                        # Pages accessed so far get their apply before reclaim may take one.
                        k = done[0]
                        if len(pfns) > k:
                            apply(va + (k << 12), pfns[k:])
                            done[0] = len(pfns)
                    self.flush = flush
                try:
                    self._access_table(proc, vma, va, nxt, write, pfns)
                finally:
                    self.flush = None
                    if apply is not None and len(pfns) > done[0]:
                        apply(va + (done[0] << 12), pfns[done[0]:])
                n += len(pfns)
                va = nxt
        return n

    def _access_table(self, proc, vma: Vma, va: int, end: int, write: bool, pfns: list) -> None:
        """access() for the pages of [va, end), all in vma and one PTE table; vma allows the access.

        This is the loop every touched page goes through, so it is written out
        by hand: one page-table walk for the whole run; inline, the present-entry
        fast path (access()), anonymous demand-zero faults (_fault_none) and
        private write-protect faults (_wp_fault), each doing exactly what those
        do; any other fault through _handle_fault.
        """
        mm = proc.mm
        if (va >> 21) in mm.thp or self.thp_eligible(vma, va):
            # One huge PMD covers the whole run: an access through it, or a THP fault.
            if (va >> 21) in mm.thp:
                pfn = self.huge_access(proc, va, write)
            else:
                pfn = self.huge_fault(proc, vma, va, write)
                if pfn is not None:
                    mm.update_hiwater_rss()
            if pfn is not None:
                pfns.extend(range(pfn, pfn + ((end - va + PAGE - 1) >> 12)))
                return
        flags = self.ft.flags
        mapcount = self.ft.mapcount
        new_anon = self._new_anon
        t = self.leaf(mm, va)
        first = (va >> 12) & 511
        base = va - (first << 12)
        need = (P.P | P.RW) if write else P.P          # present entries that need no fault
        mark = (P.ACCESSED | P.DIRTY | P.SOFT_DIRTY) if write else P.ACCESSED
        # Anonymous private VMAs map only anonymous frames and the zero page: no
        # file frame to dirty there.
        file_dirty = write and vma.file is not None
        demand_zero = vma.file is None
        zero_pfn = self.zero_pfn
        zero_entry = (zero_pfn << 12) | self._pte_bits(vma, False, False) | P.SPECIAL
        anon_bits = self._pte_bits(vma, True, True)
        cow = write and not vma.shared                 # a write to a present page copies it
        content = self.ft.content
        # The inline faults' counters, added to the real ones once at the end (nothing
        # reads them meanwhile): pgfault is counted before the frame is allocated,
        # minflt and rss once the fault succeeded, as fault() does.
        faults = minflt = anon = 0
        faulted = False                # a fault succeeded: fault() would update the hiwater marks
        append = pfns.append
        record = self.trace.fault
        pid = proc.pid
        try:
            for i in range(first, first + ((end - va + PAGE - 1) >> 12)):
                e = t[i] if t is not None else 0
                if e & need == need:
                    if e & mark != mark:
                        t[i] = e | mark
                    pfn = (e & PFN_MASK) >> 12
                    if file_dirty and flags[pfn] & TYPE_MASK == FILE:
                        self._set_dirty(pfn)
                    append(pfn)
                    continue
                at = base + (i << 12)
                if t is None:
                    t = self.leaf(mm, at, alloc=True, cpu=proc.cpu, node=proc.node, proc=proc)
                if e == 0 and demand_zero:                      # do_anonymous_page
                    faults += 1
                    if write:
                        pfn = new_anon(proc, at)
                        t[i] = (pfn << 12) | anon_bits
                        mapcount[pfn] = 1
                        anon += 1
                        record(pid, at, "write anon")
                    else:
                        t[i] = zero_entry
                        pfn = zero_pfn
                        record(pid, at, "read zero")
                    minflt += 1
                elif cow and e & P.P and not flags[(e & PFN_MASK) >> 12] & SWAPCACHE:
                    faults += 1                                 # do_wp_page, private
                    pfn = (e & PFN_MASK) >> 12
                    if not e & P.SPECIAL and flags[pfn] & TYPE_MASK == ANON and mapcount[pfn] == 1:
                        t[i] = e | P.RW | P.ACCESSED | P.DIRTY | P.SOFT_DIRTY  # wp_page_reuse
                        self.events[VmEvent.PGREUSE] += 1
                        record(pid, at, "write reuse")
                    else:                                       # wp_page_copy
                        record(pid, at, "write cow")
                        if not e & P.SPECIAL:
                            self.pinned.add(pfn)
                        try:
                            new = new_anon(proc, at)
                        finally:
                            self.pinned.discard(pfn)
                        content[new] = 0 if e & P.SPECIAL else content[pfn]
                        if not e & P.SPECIAL:
                            self._unmap_frame(mm, pfn, e)
                        t[i] = (new << 12) | anon_bits
                        mapcount[new] = 1
                        anon += 1
                        pfn = new
                    minflt += 1
                else:
                    pfn = self._handle_fault(proc, vma, at, t, i, write)
                faulted = True
                append(pfn)
        finally:
            if faults:
                self.events[VmEvent.PGFAULT] += faults
                proc.minflt += minflt
                if anon:
                    mm.rss_anon += anon
                    vma.has_anon = True
            if faulted:
                mm.update_hiwater_rss()
