"""The system calls a heap makes: its only way to reach the VMM.

A heap asks for address space (brk, mmap), gives it back (brk, munmap,
madvise dontneed) and writes its own bookkeeping into memory (a store to one
page, which may fault). Each call goes to the VMM as the process's own
system call would, and is traced.
"""
from __future__ import annotations

from ..vmm.vma import VM_READ, VM_WRITE


class ProcessSys:
    __slots__ = ("tasks", "p", "vmm", "trace")

    def __init__(self, tasks, p):
        self.tasks = tasks
        self.p = p
        self.vmm = tasks.vmm
        self.trace = tasks.m.trace

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
        """The heap stores a word at addr (a header, a link, a boundary tag)."""
        self.vmm.access(self.p, addr, True)

    def write_range(self, addr: int, length: int) -> None:
        if length > 0:
            self.vmm.touch(self.p, addr, length, True)

