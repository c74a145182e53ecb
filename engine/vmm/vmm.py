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
from .mm import (MMAP_MIN_ADDR, PAGE, STACK_GUARD_GAP, STACK_RLIMIT, TASK_SIZE, AddressSpace,
                 page_align)
from .vma import (VM_ACCOUNT, VM_GROWSDOWN, VM_MAYEXEC, VM_MAYREAD, VM_MAYSHARE, VM_MAYWRITE,
                  VM_READ, VM_SHARED, VM_SOFTDIRTY, VM_WRITE, PROT_BITS, Vma)
from ..errors import Exists, InvalidArgument, OutOfMemory, bug_on
from ..pmm.frames import (DIRTY as PG_DIRTY, LAZYFREE, RMAP_INDEX_BITS, RMAP_INDEX_MASK, TYPE_MASK,
                          MigrateType, PageType)
from ..pmm.zone import ZONE_MOVABLE, ZONE_NORMAL
from ..stats import PageStat, VmEvent, page_gauges

ANON = int(PageType.ANON)
FILE = int(PageType.FILE)
SHMEM = int(PageType.SHMEM)
PAGETABLE = int(PageType.PAGETABLE)
TABLE_BYTES = bytes(P.ENTRIES * 8)
PFN_MASK = P.PFN_MASK


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
    """No frame for a page fault (the caller decides who the OOM killer takes)."""


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


class Vmm:
    def __init__(self, ft, pmm, events, zero_pfn: int, nr_zones: int):
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

    # ------------------------------------------------------------------
    # frames and their gauges
    # ------------------------------------------------------------------

    def _gauge(self, pfn: int, stat: int, delta: int) -> None:
        self.gauges[self.ft.pb_zone[pfn >> 9]][stat] += delta

    def _alloc(self, ptype: int, cpu: int, node: int) -> int:
        if ptype == PAGETABLE:
            pfn = self.pmm.try_alloc_page(node=node, cpu=cpu, highest=ZONE_NORMAL,
                                          mt=MigrateType.UNMOVABLE, ptype=PageType.PAGETABLE)
        else:
            pfn = self.pmm.try_alloc_page(node=node, cpu=cpu, highest=ZONE_MOVABLE,
                                          mt=MigrateType.MOVABLE, ptype=PageType(ptype))
        if pfn is None:
            raise FaultOom()
        return pfn

    def _new_anon(self, proc, va: int) -> int:
        pfn = self._alloc(ANON, proc.cpu, proc.node)
        self.ft.rmap[pfn] = (proc.anon_family << RMAP_INDEX_BITS) | (va >> 12)
        g = self.gauges[self.ft.pb_zone[pfn >> 9]]
        g[PageStat.ANON] += 1
        g[PageStat.INACTIVE_ANON] += 1
        return pfn

    def _free_anon(self, pfn: int) -> None:
        g = self.gauges[self.ft.pb_zone[pfn >> 9]]
        g[PageStat.ANON] -= 1
        g[PageStat.INACTIVE_ANON] -= 1
        self.pmm.free_page(pfn, cpu=0)

    # ------------------------------------------------------------------
    # page tables
    # ------------------------------------------------------------------

    def new_pgd(self, cpu: int, node: int) -> int:
        pfn = self._alloc(PAGETABLE, cpu, node)
        self.tables[pfn] = array("Q", TABLE_BYTES)
        self._gauge(pfn, PageStat.PAGETABLE, 1)
        return pfn

    def leaf(self, mm: AddressSpace, va: int, alloc: bool = False, cpu: int = 0, node: int = 0):
        """The PTE table covering va (or None); with alloc, build missing levels."""
        t = self.tables[mm.pgd]
        for shift in (39, 30, 21):
            i = (va >> shift) & 511
            e = t[i]
            if e & 1:
                t = self.tables[(e & PFN_MASK) >> 12]
                continue
            if not alloc:
                return None
            pfn = self._alloc(PAGETABLE, cpu, node)
            new = array("Q", TABLE_BYTES)
            self.tables[pfn] = new
            self._gauge(pfn, PageStat.PAGETABLE, 1)
            mm.pt_pages += 1
            t[i] = (pfn << 12) | P.PAGE_TABLE
            t = new
        return t

    def _free_table(self, mm: AddressSpace | None, pfn: int) -> None:
        del self.tables[pfn]
        self._gauge(pfn, PageStat.PAGETABLE, -1)
        if mm is not None:
            mm.pt_pages -= 1
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

    def leaf_tables(self, mm: AddressSpace, start: int, end: int):
        """(table, va of its entry 0, first index, end index) for each PTE table under [start, end)."""
        va = start
        while va < end:
            base = va & ~((1 << 21) - 1)
            nxt = base + (1 << 21)
            t = self.leaf(mm, va)
            if t is not None:
                yield t, base, (va - base) >> 12, (min(end, nxt) - base) >> 12
            va = nxt

    # ------------------------------------------------------------------
    # the page fault
    # ------------------------------------------------------------------

    def access(self, proc, va: int, write: bool) -> int:
        """Make the page at va accessible as a CPU access would, faulting if needed; its pfn."""
        mm = proc.mm
        t = self.leaf(mm, va)
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

    def fault(self, proc, va: int, write: bool) -> int:
        """handle_mm_fault: find the VMA, check the access, fix the entry. Returns the pfn."""
        mm = proc.mm
        vma = mm.find(va)
        if vma is None:
            vma = self._expand_stack(mm, va)
            if vma is None:
                raise Segv(va, write, False, why="no mapping at this address")
        if write and not vma.writable:
            raise Segv(va, write, True, why=f"write to a {vma.perms()} mapping")
        if not write and not vma.flags & (VM_READ | VM_WRITE):
            raise Segv(va, write, True, why=f"read of a {vma.perms()} mapping")
        t = self.leaf(mm, va, alloc=True, cpu=proc.cpu, node=proc.node)
        i = (va >> 12) & 511
        e = t[i]
        self.events[VmEvent.PGFAULT] += 1
        if e & 1:
            pfn = self._wp_fault(proc, vma, va, t, i, e)
            proc.minflt += 1
        elif e == 0:
            pfn = self._fault_none(proc, vma, va, t, i, write)
        else:
            # PROT_NONE entries sit only in PROT_NONE VMAs, refused above; swap entries
            # arrive with the swap layer.
            bug_on(True, "fault", f"entry {e:#018x} at {va:#x} in {vma!r}")
        mm.update_hiwater()
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
                return self.zero_pfn
            pfn = self._new_anon(proc, va)
            self._map_anon(mm, vma, t, i, pfn)
            proc.minflt += 1
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
        if write and not vma.shared:                            # do_cow_fault
            new = self._new_anon(proc, va)
            self.ft.content[new] = self.ft.content[pfn]
            self._map_anon(mm, vma, t, i, new)
            return new
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
        t[i] = (pfn << 12) | bits
        mc = self.ft.mapcount
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
        pfn = self._alloc(ptype, proc.cpu, proc.node)
        self.ft.rmap[pfn] = (f.ino << RMAP_INDEX_BITS) | index
        g = self.gauges[self.ft.pb_zone[pfn >> 9]]
        g[PageStat.FILE] += 1
        if f.shmem:
            g[PageStat.SHMEM] += 1
            g[PageStat.INACTIVE_ANON] += 1        # shmem is swap-backed: the anon LRU
        else:
            g[PageStat.INACTIVE_FILE] += 1
            self.ft.content[pfn] = int(f.disk[index])
            self.events[VmEvent.PGPGIN] += PAGE // 1024
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
            return pfn
        ft = self.ft
        if not e & P.SPECIAL and ft.flags[pfn] & TYPE_MASK == ANON and ft.mapcount[pfn] == 1:
            t[i] = e | P.RW | P.ACCESSED | P.DIRTY | P.SOFT_DIRTY      # wp_page_reuse
            self.events[VmEvent.PGREUSE] += 1
            return pfn
        new = self._new_anon(proc, va)                          # wp_page_copy
        ft.content[new] = 0 if e & P.SPECIAL else ft.content[pfn]
        if not e & P.SPECIAL:
            self._unmap_frame(mm, pfn)
        self._map_anon(mm, vma, t, i, new)
        return new

    def _unmap_frame(self, mm: AddressSpace, pfn: int) -> None:
        """One PTE mapping pfn went away: mapcount, rss and gauges follow."""
        ft = self.ft
        ptype = ft.flags[pfn] & TYPE_MASK
        ft.mapcount[pfn] -= 1
        left = ft.mapcount[pfn]
        if ptype == ANON:
            mm.rss_anon -= 1
            if left == 0:
                self._free_anon(pfn)
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
        """Clear every entry in [start, end), dropping what each mapped. Returns entries cleared."""
        cleared = 0
        for t, base, lo, hi in self.leaf_tables(mm, start, end):
            view = np.frombuffer(t, dtype=np.uint64)[lo:hi]
            for k in np.flatnonzero(view):
                i = lo + int(k)
                e = t[i]
                t[i] = 0
                cleared += 1
                if e & (P.P | P.PROTNONE):
                    if e & P.SPECIAL:
                        continue
                    pfn = P.pfn_of(e)
                    if e & P.DIRTY and self.ft.flags[pfn] & TYPE_MASK == FILE:
                        self._set_dirty(pfn)
                    self._unmap_frame(mm, pfn)
                else:
                    bug_on(True, "zap", f"swap entry {e:#018x} before the swap layer exists")
        return cleared

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
        if len(mm.vmas) + 1 > self.max_map_count:
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
            lo, hi = max(start, vma.start), min(end, vma.end)
            for va in range(lo, hi, PAGE):
                self.access(proc, va, write)

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
            g = self.gauges[self.ft.pb_zone[pfn >> 9]]
            g[PageStat.FILE] -= 1
            if f.shmem:
                g[PageStat.SHMEM] -= 1
                g[PageStat.INACTIVE_ANON] -= 1
            else:
                g[PageStat.INACTIVE_FILE] -= 1
                if self.ft.flags[pfn] & PG_DIRTY:          # write back before dropping
                    f.disk[index] = self.ft.content[pfn]
                    g[PageStat.FILE_DIRTY] -= 1
                    f.nr_dirty -= 1
                    self.events[VmEvent.PGPGOUT] += PAGE // 1024
            f.cache[index] = NO_FRAME
            f.nr_cached -= 1
            self.pmm.free_page(pfn, cpu=0)

    def mprotect(self, proc, start: int, length: int, prot: int) -> None:
        mm = proc.mm
        if start % PAGE:
            raise InvalidArgument(f"mprotect: address {start:#x} is not page aligned")
        end = start + page_align(length)
        if length <= 0 or not mm.covers(start, end):
            raise OutOfMemory(f"mprotect: [{start:#x}, {end:#x}) is not entirely mapped")
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
                    t[i] = P.make_protnone((e & ~(P.RW | P.NX)) | P.P)
                    continue
                writable = vma.writable and not e & P.SPECIAL and (
                    vma.shared or (ft.flags[pfn] & TYPE_MASK == ANON and ft.mapcount[pfn] == 1))
                t[i] = (pfn << 12) | (e & keep) | self._pte_bits(vma, writable, False)

    def madvise(self, proc, start: int, length: int, advice: str) -> int:
        mm = proc.mm
        if start % PAGE:
            raise InvalidArgument(f"madvise: address {start:#x} is not page aligned")
        end = start + page_align(length)
        if length <= 0 or not mm.covers(start, end):
            raise OutOfMemory(f"madvise: [{start:#x}, {end:#x}) is not entirely mapped")
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
        raise InvalidArgument(f"madvise: unknown advice {advice!r} (dontneed or free)")

    def _lazyfree(self, mm: AddressSpace, start: int, end: int) -> int:
        """MADV_FREE: exclusively owned pages become clean and discardable (madvise_free_pte_range)."""
        ft = self.ft
        n = 0
        for t, base, lo, hi in self.leaf_tables(mm, start, end):
            view = np.frombuffer(t, dtype=np.uint64)[lo:hi]
            for k in np.flatnonzero(view):
                i = lo + int(k)
                e = t[i]
                if not e & P.P or e & P.SPECIAL:
                    continue
                pfn = (e & PFN_MASK) >> 12
                if ft.flags[pfn] & TYPE_MASK != ANON or ft.mapcount[pfn] != 1:
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
        ft = self.ft
        mc = ft.mapcount
        cow = vma.writable
        for t, base, lo, hi in self.leaf_tables(src, vma.start, vma.end):
            view = np.frombuffer(t, dtype=np.uint64)[lo:hi]
            nz = np.flatnonzero(view)
            if not nz.size:
                continue
            ct = self.leaf(dst, base, alloc=True, cpu=child.cpu, node=child.node)
            for k in nz:
                i = lo + int(k)
                e = t[i]
                if e & (P.P | P.PROTNONE) and not e & P.SPECIAL:
                    pfn = P.pfn_of(e)
                    bug_on(mc[pfn] == 0xFFFF, "fork", f"pfn {pfn:#x} mapped 65535 times")
                    mc[pfn] += 1
                    ptype = ft.flags[pfn] & TYPE_MASK
                    if ptype == ANON:
                        dst.rss_anon += 1
                    elif ptype == SHMEM:
                        dst.rss_shmem += 1
                    else:
                        dst.rss_file += 1
                    if cow and e & P.RW:
                        e &= ~P.RW
                        t[i] = e
                ct[i] = e & ~P.ACCESSED          # the child's copy starts old (pte_mkold)

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

    def _free_tree(self, mm: AddressSpace, pfn: int, level: int) -> None:
        t = self.tables[pfn]
        if level < 3:
            for k in np.flatnonzero(np.frombuffer(t, dtype=np.uint64)):
                self._free_tree(mm, (t[int(k)] & PFN_MASK) >> 12, level + 1)
        else:
            bug_on(any(t), "exit_mm", f"PTE table {pfn:#x} still maps pages at exit")
        self._free_table(mm if level else None, pfn)

    # ------------------------------------------------------------------
    # what a program does with its memory (the per-process ctl verbs)
    # ------------------------------------------------------------------

    def touch(self, proc, start: int, length: int, write: bool) -> int:
        """Access every page of [start, start+length); returns pages touched."""
        end = start + length
        n = 0
        for va in range(start & ~(PAGE - 1), end, PAGE):
            self.access(proc, va, write)
            n += 1
        proc.mm.update_hiwater()
        return n

    def write_value(self, proc, va: int, value: int) -> None:
        pfn = self.access(proc, va, True)
        self.ft.content[pfn] = value

    def read_value(self, proc, va: int) -> int:
        return int(self.ft.content[self.access(proc, va, False)])

    def fill(self, proc, start: int, length: int, seed: int) -> int:
        content = self.ft.content
        n = 0
        for va in range(start & ~(PAGE - 1), start + length, PAGE):
            content[self.access(proc, va, True)] = fill_value(va, seed)
            n += 1
        proc.mm.update_hiwater()
        return n

    def verify(self, proc, start: int, length: int, seed: int) -> int:
        """Pages in the range whose value is not what fill wrote (reading them as a CPU would)."""
        content = self.ft.content
        bad = 0
        for va in range(start & ~(PAGE - 1), start + length, PAGE):
            if content[self.access(proc, va, False)] != fill_value(va, seed):
                bad += 1
        proc.mm.update_hiwater()
        return bad
