"""The system calls a heap makes: its only way to reach the VMM.

A heap asks for address space (brk, mmap), gives it back (brk, munmap,
madvise dontneed) and writes its own bookkeeping into memory (a store to one
page, which may fault). Each call goes to the VMM as the process's own
system call would, and is traced.

The heap's stores (poke) are most of its calls, and nearly all of them go to
pages it has written before. A store to a page whose entry is present,
writable, accessed, dirty and soft-dirty, and not a file page, changes
nothing (the write access would set bits that are set already, and only a
file page has its frame dirtied), so poke looks at the entry first and only
asks the VMM for the others, which may fault. It keeps the PTE table of the
last 2 MiB it stored into: a table the VMM has since freed (munmap, exit)
reads all zeros, which sends the store to the VMM, as does any entry that
changed (write-protected by fork or mprotect, cleared by madvise).
"""
from __future__ import annotations

from ..errors import OutOfMemory
from ..pmm.frames import TYPE_MASK, PageType
from ..vmm import pte as P
from ..vmm.vma import VM_READ, VM_WRITE

# What poke (and the replay workload, which skips accesses the same way) looks for:
SETTLED = P.P | P.RW | P.ACCESSED | P.DIRTY | P.SOFT_DIRTY   # an entry a store leaves unchanged
READ_SETTLED = P.P | P.ACCESSED                               # an entry a load leaves unchanged
PFN_MASK = P.PFN_MASK
FILE = int(PageType.FILE)


class ProcessSys:
    __slots__ = ("tasks", "p", "vmm", "trace", "region", "table")

    def __init__(self, tasks, p):
        self.tasks = tasks
        self.p = p
        self.vmm = tasks.vmm
        self.trace = tasks.m.trace
        self.region = -1                 # the 2 MiB region (va >> 21) whose PTE table poke holds
        self.table = None

    def brk_now(self) -> int:
        return self.p.mm.brk

    def set_brk(self, addr: int) -> None:
        self.tasks.do_brk(self.p, addr)
        self.trace.emit(self.p.pid, "brk", f"{addr:#x}")

    def mmap(self, length: int) -> int:
        addr = self.vmm.mmap(self.p, length, addr=None, prot=VM_READ | VM_WRITE, shared=False,
                             file=None, offset=0, populate=False)
        self.trace.emit(self.p.pid, "mmap", f"{addr:#x} {length}")
        return addr

    def munmap(self, addr: int, length: int) -> None:
        self.vmm.munmap(self.p, addr, length)
        self.trace.emit(self.p.pid, "munmap", f"{addr:#x} {length}")

    def madvise_dontneed(self, addr: int, length: int) -> int:
        pages = self.vmm.madvise(self.p, addr, length, "dontneed")
        self.trace.emit(self.p.pid, "madvise", f"{addr:#x} {length} dontneed freed={pages}")
        return pages

    def poke(self, addr: int) -> None:
        """The heap stores a word at addr (a header, a link, a boundary tag): as
        vmm.access(p, addr, True), which it calls unless the store changes nothing."""
        page = addr >> 12
        vmm = self.vmm
        region = addr >> 21
        if region == self.region:
            t = self.table
        else:
            t = vmm.leaf(self.p.mm, addr)
            self.region, self.table = (region, t) if t is not None else (-1, None)
        if t is not None:
            e = t[page & 511]
            if e & SETTLED == SETTLED and vmm.ft.flags[(e & PFN_MASK) >> 12] & TYPE_MASK != FILE:
                return
        vmm.access(self.p, addr, True)
        self.region = -1                 # the fault may have built the table: look again next time

    def write_range(self, addr: int, length: int) -> None:
        if length > 0:
            self.vmm.touch(self.p, addr, length, True)


__all__ = ["ProcessSys", "OutOfMemory"]
