"""The reverse map: from a frame to the page-table entries that map it (mm/rmap.c).

Every user frame records its owner in the frame table's rmap column (owner
<< 36 | index): for an anonymous page the anon family (a process and its
forks, which share the page at the same virtual address) and the virtual
page number; for page cache the file's inode and the page of the file. The
walk visits exactly the places that can map the frame:

    anon   every address space of the family, at that one address
    file   every VMA of every address space that maps that file page

and stops when it has found as many entries as the frame's mapcount. On
these walks reclaim asks whether a page was referenced (the accessed bits,
test-and-clear: folio_referenced) and takes a page away from every process
that maps it (try_to_unmap): an anonymous page's entries become its swap
entry, a file page's entries are cleared (the page is read again from the
file on the next touch). A written PTE's dirty bit moves to the frame.
"""
from __future__ import annotations

from . import pte as P
from ..errors import bug_on
from ..pmm.frames import (DIRTY as PG_DIRTY, LAZYFREE, RMAP_INDEX_BITS, RMAP_INDEX_MASK, SWAPCACHE,
                          TYPE_MASK, PageType)
from ..stats import PageStat

ANON = int(PageType.ANON)
FILE = int(PageType.FILE)
SHMEM = int(PageType.SHMEM)
PFN_MASK = P.PFN_MASK
MAPPED = P.P | P.PROTNONE


class RmapMixin:
    # The host class (Vmm) provides ft, mms, inodes, leaf(), swap, lru, gauges, _set_dirty.

    # --- who has an address space (the anon families) --------------------

    def register(self, proc) -> None:
        """proc has an address space now: rmap walks of its family visit it."""
        self.mms.setdefault(proc.anon_family, []).append(proc)

    def unregister(self, proc) -> None:
        fam = self.mms.get(proc.anon_family)
        if fam is not None and proc in fam:
            fam.remove(proc)
            if not fam:
                del self.mms[proc.anon_family]

    # --- the walk --------------------------------------------------------

    def mappings(self, pfn: int) -> list:
        """[(proc, va, table, index)] of every entry mapping pfn (present or PROT_NONE)."""
        ft = self.ft
        want = ft.mapcount[pfn]
        out = []
        if not want:
            return out
        word = ft.rmap[pfn]
        owner, index = word >> RMAP_INDEX_BITS, word & RMAP_INDEX_MASK
        if ft.flags[pfn] & TYPE_MASK == ANON:
            va = index << 12
            for proc in self.mms.get(owner, ()):
                if proc.mm is None:
                    continue
                self._match(proc, va, pfn, out)
                if len(out) == want:
                    return out
        else:
            f = self.inodes[owner]
            for fam in self.mms.values():
                for proc in fam:
                    if proc.mm is None:
                        continue
                    for vma in proc.mm.vmas:
                        if vma.file is f and vma.pgoff <= index < vma.pgoff + vma.pages:
                            self._match(proc, vma.start + ((index - vma.pgoff) << 12), pfn, out)
                    if len(out) == want:
                        return out
        bug_on(True, "rmap", f"pfn {pfn:#x} has mapcount {want} but {len(out)} entries map it")
        return out

    def _match(self, proc, va: int, pfn: int, out: list) -> None:
        t = self.leaf(proc.mm, va)
        if t is None:
            return
        i = (va >> 12) & 511
        e = t[i]
        if e & MAPPED and not e & P.SPECIAL and P.pfn_of(e) == pfn:
            out.append((proc, va, t, i))

    def referenced(self, pfn: int) -> tuple[int, bool]:
        """(entries that had the accessed bit, any of them in an executable VMA); clears the bits."""
        n = 0
        exec_ = False
        for proc, va, t, i in self.mappings(pfn):
            e = t[i]
            if e & P.ACCESSED:
                t[i] = e & ~P.ACCESSED
                n += 1
                if not e & P.NX:
                    exec_ = True
        return n, exec_

    # --- taking a page away from its processes ---------------------------

    def try_to_unmap(self, pfn: int) -> bool:
        """Clear every entry mapping pfn; anon entries become its swap entry (it must be in
        the swap cache). Dirty bits move to the frame. True if the frame was written to."""
        ft = self.ft
        ptype = ft.flags[pfn] & TYPE_MASK
        dirty = False
        if ptype == ANON:
            bug_on(not ft.flags[pfn] & SWAPCACHE, "rmap", f"anon pfn {pfn:#x} unmapped outside the swap cache")
            area, off = self.slot_of(pfn)
            swp_type = area.type
            entry = P.swp_entry(swp_type, off)
        maps = self.mappings(pfn)
        for proc, va, t, i in maps:
            e = t[i]
            mm = proc.mm
            if e & P.DIRTY:
                dirty = True
            if ptype == ANON:
                t[i] = entry
                self.swap.dup(swp_type, off)
                mm.rss_anon -= 1
                mm.swap_ents += 1
            else:
                t[i] = 0
                if ptype == SHMEM:
                    mm.rss_shmem -= 1
                else:
                    mm.rss_file -= 1
            if mm.limit is not None:
                mm.limit.forget(va >> 12)
            ft.mapcount[pfn] -= 1
        bug_on(ft.mapcount[pfn] != 0, "rmap", f"pfn {pfn:#x} still mapped after try_to_unmap")
        if maps:
            self._gauge(pfn, PageStat.ANON if ptype == ANON else PageStat.FILE_MAPPED, -1)
        if dirty:
            if ptype == ANON:
                ft.flags[pfn] |= PG_DIRTY
            elif ptype == FILE:
                self._set_dirty(pfn)
        return dirty

    def discard_lazyfree(self, pfn: int) -> bool:
        """A MADV_FREE page nobody wrote since: its entries are cleared (the process will read
        zeros) and the frame freed without a write. False if an entry is dirty again."""
        ft = self.ft
        maps = self.mappings(pfn)
        if any(t[i] & P.DIRTY for _, _, t, i in maps):
            ft.flags[pfn] &= ~LAZYFREE
            return False
        for proc, va, t, i in maps:
            t[i] = 0
            proc.mm.rss_anon -= 1
            if proc.mm.limit is not None:
                proc.mm.limit.forget(va >> 12)
            ft.mapcount[pfn] -= 1
        if maps:
            self._gauge(pfn, PageStat.ANON, -1)
        self.free_anon_frame(pfn)
        return True
