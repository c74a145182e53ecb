"""Virtual memory areas: one contiguous range of an address space with one meaning.

Flags are Linux's vm_flags bits (include/linux/mm.h), so smaps' VmFlags line
is a direct translation. A VMA maps anonymous memory (file None), a simulated
file at page offset `pgoff`, or shared anonymous memory (a shmem MemFile).
"""
from __future__ import annotations

VM_READ = 0x1
VM_WRITE = 0x2
VM_EXEC = 0x4
VM_SHARED = 0x8
VM_MAYREAD = 0x10
VM_MAYWRITE = 0x20
VM_MAYEXEC = 0x40
VM_MAYSHARE = 0x80
VM_GROWSDOWN = 0x100
VM_ACCOUNT = 0x100000         # its pages are charged to Committed_AS
VM_NORESERVE = 0x200000
VM_SOFTDIRTY = 0x8000000
VM_HUGEPAGE = 0x20000000      # madvise(MADV_HUGEPAGE)
VM_NOHUGEPAGE = 0x40000000    # madvise(MADV_NOHUGEPAGE)

# smaps VmFlags mnemonics for the flags memfs sets (fs/proc/task_mmu.c show_smap_vma_flags).
VMFLAG_NAMES = ((VM_READ, "rd"), (VM_WRITE, "wr"), (VM_EXEC, "ex"), (VM_SHARED, "sh"),
                (VM_MAYREAD, "mr"), (VM_MAYWRITE, "mw"), (VM_MAYEXEC, "me"), (VM_MAYSHARE, "ms"),
                (VM_GROWSDOWN, "gd"), (VM_ACCOUNT, "ac"), (VM_NORESERVE, "nr"),
                (VM_SOFTDIRTY, "sd"), (VM_HUGEPAGE, "hg"), (VM_NOHUGEPAGE, "nh"))

PROT_BITS = VM_READ | VM_WRITE | VM_EXEC


def parse_prot(text: str) -> int | None:
    """'r', 'rw', 'rx', 'rwx', 'none', any order of r/w/x -> VM_READ|VM_WRITE|VM_EXEC bits."""
    if text == "none":
        return 0
    bits = 0
    for ch in text:
        bit = {"r": VM_READ, "w": VM_WRITE, "x": VM_EXEC}.get(ch)
        if bit is None or bits & bit:
            return None
        bits |= bit
    return bits if text else None


def prot_text(flags: int) -> str:
    return "".join(c if flags & b else "-" for b, c in ((VM_READ, "r"), (VM_WRITE, "w"),
                                                        (VM_EXEC, "x")))


class Vma:
    __slots__ = ("start", "end", "flags", "file", "pgoff", "name", "has_anon")

    def __init__(self, start: int, end: int, flags: int, file=None, pgoff: int = 0,
                 name: str | None = None):
        self.start = start
        self.end = end
        self.flags = flags
        self.file = file              # MemFile or None
        self.pgoff = pgoff            # file page at self.start
        self.name = name              # "[heap]", "[stack]", or None
        self.has_anon = False         # an anonymous page was ever faulted in (Linux: anon_vma)

    @property
    def pages(self) -> int:
        return (self.end - self.start) >> 12

    @property
    def shared(self) -> bool:
        return bool(self.flags & VM_SHARED)

    @property
    def readable(self) -> bool:
        return bool(self.flags & VM_READ)

    @property
    def writable(self) -> bool:
        return bool(self.flags & VM_WRITE)

    @property
    def executable(self) -> bool:
        return bool(self.flags & VM_EXEC)

    @property
    def is_anon(self) -> bool:
        return self.file is None

    @property
    def is_stack(self) -> bool:
        return bool(self.flags & VM_GROWSDOWN)

    def file_index(self, va: int) -> int:
        return self.pgoff + ((va - self.start) >> 12)

    def copy(self, start: int, end: int) -> "Vma":
        """The part [start, end) of this VMA, as a new VMA."""
        v = Vma(start, end, self.flags, self.file, self.pgoff + ((start - self.start) >> 12),
                self.name)
        v.has_anon = self.has_anon
        return v

    def perms(self) -> str:
        return prot_text(self.flags) + ("s" if self.shared else "p")

    def vmflags(self) -> str:
        return "".join(f"{name} " for bit, name in VMFLAG_NAMES if self.flags & bit)

    def __repr__(self) -> str:
        return f"<Vma {self.start:x}-{self.end:x} {self.perms()} {self.name or ''}>"
