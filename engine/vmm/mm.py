"""AddressSpace: one process's memory map — its VMAs, its page-table root, its counters.

The VMA list is kept sorted by start address (a short list, searched with
bisect, as xv6 keeps a flat table and Linux a maple tree). Nothing here
touches frames: the Vmm (vmm.py) owns frames and page tables and calls these
methods to find, split, insert and remove areas.

Layout of a fresh address space (x86-64 Linux without randomisation):

    0x400000            program text (r-x, private file mapping of the executable)
    after text          program data (rw-, private mapping of the executable)
    after data          [heap]: grows up from start_brk with brk
    ...                 mmap area: chosen top-down from MMAP_BASE
    0x7ffff7fff000      MMAP_BASE = TASK_SIZE - 128 MiB (stack rlimit gap)
    ...                 stack guard gap (1 MiB) kept below the stack as it grows
    0x7ffffffff000      TASK_SIZE: top of the stack, end of user space
"""
from __future__ import annotations

from bisect import bisect_right

from .vma import (VM_ACCOUNT, VM_EXEC, VM_GROWSDOWN, VM_SHARED, VM_WRITE, Vma)

PAGE = 4096
TASK_SIZE = 0x7FFFFFFFF000                  # end of user space (exclusive)
STACK_TOP = TASK_SIZE
STACK_RLIMIT = 8 << 20                      # RLIMIT_STACK default, 8 MiB
MMAP_GAP = 128 << 20                        # Linux's minimum gap for the stack (mmap_base)
MMAP_BASE = TASK_SIZE - MMAP_GAP            # 0x7ffff7fff000
MMAP_MIN_ADDR = 0x10000                     # vm.mmap_min_addr
STACK_GUARD_GAP = 256 * PAGE                # stack_guard_gap: 1 MiB
TEXT_START = 0x400000
TASK_UNMAPPED_BASE = (TASK_SIZE // 3) & ~(PAGE - 1)    # bottom-up fallback start


def page_align(n: int) -> int:
    return (n + PAGE - 1) & ~(PAGE - 1)


class AddressSpace:
    def __init__(self, pgd: int, uid: int):
        self.pgd = pgd
        # va >> 21 -> its PTE table, for the tables leaf() found, as a TLB remembers
        # translations; emptied whenever one of this space's tables is freed.
        self.leaf_cache: dict = {}
        self.uid = uid                        # the owner's user id (root skips the admin reserve)                        # pfn of the top-level table (PML4)
        self.vmas: list[Vma] = []
        self._starts: list[int] = []
        self.rss_anon = 0                     # resident pages, as Linux's MM_ANONPAGES ...
        self.rss_file = 0                     # ... MM_FILEPAGES
        self.rss_shmem = 0                    # ... MM_SHMEMPAGES
        self.swap_ents = 0                    # MM_SWAPENTS
        self.hiwater_rss = 0
        self.hiwater_vm = 0
        self.pt_pages = 0                     # PTE, PMD and PUD tables (not the PGD): VmPTE
        self.start_code = self.end_code = 0
        self.start_data = self.end_data = 0
        self.start_brk = self.brk = 0
        self.start_stack = 0
        self.committed = 0                    # pages this mm has charged to Committed_AS
        self.limit = None                     # a resident-set limit (reclaim/limit.py), or None
        # va >> 21 -> the PTE table deposited for the transparent huge page that a PMD entry
        # maps there (pgtable_trans_huge_deposit): splitting the PMD never allocates.
        self.thp: dict[int, int] = {}

    # ------------------------------------------------------------------
    # lookup
    # ------------------------------------------------------------------

    def find(self, va: int) -> Vma | None:
        """The VMA containing va, or None."""
        i = bisect_right(self._starts, va) - 1
        if i >= 0 and self.vmas[i].end > va:
            return self.vmas[i]
        return None

    def next_after(self, va: int) -> Vma | None:
        """The first VMA starting above va (Linux find_vma's answer when va is in a hole)."""
        i = bisect_right(self._starts, va)
        return self.vmas[i] if i < len(self.vmas) else None

    def prev_before(self, va: int) -> Vma | None:
        """The last VMA ending at or below va."""
        i = bisect_right(self._starts, va) - 1
        while i >= 0 and self.vmas[i].end > va:
            i -= 1
        return self.vmas[i] if i >= 0 else None

    def overlapping(self, start: int, end: int) -> list[Vma]:
        i = max(0, bisect_right(self._starts, start) - 1)
        out = []
        while i < len(self.vmas) and self.vmas[i].start < end:
            if self.vmas[i].end > start:
                out.append(self.vmas[i])
            i += 1
        return out

    def covers(self, start: int, end: int) -> bool:
        """Every page of [start, end) is inside some VMA."""
        at = start
        for v in self.overlapping(start, end):
            if v.start > at:
                return False
            at = v.end
        return at >= end

    def any_in(self, start: int, end: int) -> bool:
        return bool(self.overlapping(start, end))

    # ------------------------------------------------------------------
    # changing the list (the Vmm keeps page tables in step)
    # ------------------------------------------------------------------

    def insert(self, vma: Vma) -> None:
        i = bisect_right(self._starts, vma.start)
        self.vmas.insert(i, vma)
        self._starts.insert(i, vma.start)

    def remove(self, vma: Vma) -> None:
        i = self.vmas.index(vma)
        del self.vmas[i]
        del self._starts[i]

    def split(self, vma: Vma, at: int) -> tuple[Vma, Vma]:
        """Cut vma at address `at` into two VMAs; returns (low, high)."""
        low, high = vma.copy(vma.start, at), vma.copy(at, vma.end)
        i = self.vmas.index(vma)
        self.vmas[i:i + 1] = [low, high]
        self._starts[i:i + 1] = [low.start, high.start]
        if vma.file is not None:
            vma.file.maps += 1                  # two VMAs now hold it where one did
        return low, high

    def isolate(self, start: int, end: int) -> list[Vma]:
        """Split VMAs at start and end; return the VMAs now exactly inside [start, end)."""
        for v in self.overlapping(start, end):
            if v.start < start < v.end:
                self.split(v, start)
        for v in self.overlapping(start, end):
            if v.start < end < v.end:
                self.split(v, end)
        return self.overlapping(start, end)

    def try_merge_around(self, vma: Vma) -> Vma:
        """Merge vma with compatible neighbours (vma_merge); returns the surviving VMA."""
        i = self.vmas.index(vma)
        if i + 1 < len(self.vmas) and _mergeable(vma, self.vmas[i + 1]):
            nxt = self.vmas[i + 1]
            vma.end = nxt.end
            vma.has_anon |= nxt.has_anon
            del self.vmas[i + 1]
            del self._starts[i + 1]
            if nxt.file is not None:
                nxt.file.maps -= 1
        if i > 0 and _mergeable(self.vmas[i - 1], vma):
            prev = self.vmas[i - 1]
            prev.end = vma.end
            prev.has_anon |= vma.has_anon
            del self.vmas[i]
            del self._starts[i]
            if vma.file is not None:
                vma.file.maps -= 1
            return prev
        return vma

    # ------------------------------------------------------------------
    # placement
    # ------------------------------------------------------------------

    def unmapped_area(self, length: int) -> int | None:
        """A free range of `length` bytes, highest below MMAP_BASE first (top-down), else bottom-up."""
        bounds = [MMAP_MIN_ADDR] + [x for v in self.vmas for x in (v.start, v.end)] + [TASK_SIZE]
        gaps = []
        for k in range(0, len(bounds), 2):
            lo, hi = bounds[k], bounds[k + 1]
            above = self.vmas[k // 2] if k // 2 < len(self.vmas) else None
            if above is not None and above.flags & VM_GROWSDOWN:
                hi -= STACK_GUARD_GAP
            gaps.append((max(lo, MMAP_MIN_ADDR), hi))
        for lo, hi in reversed(gaps):
            hi = min(hi, MMAP_BASE)
            if hi - lo >= length:
                return hi - length
        for lo, hi in gaps:
            lo = max(lo, TASK_UNMAPPED_BASE)
            if hi - lo >= length:
                return lo
        return None

    # ------------------------------------------------------------------
    # sizes, as fs/proc/task_mmu.c derives them
    # ------------------------------------------------------------------

    @property
    def rss(self) -> int:
        return self.rss_anon + self.rss_file + self.rss_shmem

    def total_vm(self) -> int:
        return sum(v.pages for v in self.vmas)

    def exec_vm(self) -> int:
        return sum(v.pages for v in self.vmas
                   if v.flags & (VM_EXEC | VM_WRITE | VM_GROWSDOWN) == VM_EXEC)

    def stack_vm(self) -> int:
        return sum(v.pages for v in self.vmas if v.flags & VM_GROWSDOWN)

    def data_vm(self) -> int:
        return sum(v.pages for v in self.vmas
                   if v.flags & (VM_WRITE | VM_SHARED | VM_GROWSDOWN) == VM_WRITE)

    def text_pages(self) -> int:
        return (page_align(self.end_code) - (self.start_code & ~(PAGE - 1))) // PAGE

    def update_hiwater_rss(self) -> None:
        """After faults: VmHWM (cheap; faults never change the mappings)."""
        self.hiwater_rss = max(self.hiwater_rss, self.rss)

    def update_hiwater(self) -> None:
        """After the mappings changed: VmHWM and VmPeak."""
        self.hiwater_rss = max(self.hiwater_rss, self.rss)
        self.hiwater_vm = max(self.hiwater_vm, self.total_vm())

    def accounted_pages(self) -> int:
        return sum(v.pages for v in self.vmas if v.flags & VM_ACCOUNT)


def _mergeable(a: Vma, b: Vma) -> bool:
    if a.end != b.start or a.flags != b.flags or a.name != b.name or a.file is not b.file:
        return False
    # Linux also requires compatible anon_vmas; within one address space without
    # mremap that always holds, so flags, file, offset and name decide.
    return a.file is None or a.pgoff + a.pages == b.pgoff
