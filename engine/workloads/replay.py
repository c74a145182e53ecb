"""replay: plays a memory-access trace in Valgrind Lackey's format.

`valgrind --tool=lackey --trace-mem=yes PROGRAM` writes one line per access:

    I  0040074a,3        instruction fetch of 3 bytes
     L 1ffefffd78,8      load
     S 1ffefffd78,8      store
     M 0060103c,4        modify (load and store: one access that writes)

Lines starting with `==` are Valgrind's own messages; a gzip-compressed trace
is read as it is. The whole trace is read
and checked when the process is spawned (a bad line is refused with its line
number), into two compact arrays: the page of each access and whether it
writes. An access that straddles a page boundary touches both pages. A
modify counts as a write: x86 reports the fault of a read-modify-write
instruction as a write fault, so the page is not first mapped to the zero page.

The process has no program text or stack of its own: its address space is
what the trace touches. Each tick it plays rate= accesses as a CPU would
(faults and all); an access to a page nothing maps first maps that page
(anonymous, private, read-write). When the trace ends the process sleeps
(state S) with its counters intact until it is killed.
"""
from __future__ import annotations

import gzip

import numpy as np

from .base import INT, PATH, Workload
from ..errors import InvalidArgument
from ..units import PAGE_SIZE
from ..vmm.mm import MMAP_MIN_ADDR, TASK_SIZE
from ..vmm.vma import VM_READ, VM_WRITE

MAX_ACCESSES = 50_000_000


def parse_lackey(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(page addresses, write flags) of every access in the trace file, in order."""
    pages: list[int] = []
    writes: list[bool] = []
    try:
        f = open(path, "rb")
        if f.read(2) == b"\x1f\x8b":                # gzip-compressed: read through it
            f.close()
            f = gzip.open(path, "rb")
        else:
            f.seek(0)
    except OSError as e:
        raise InvalidArgument(f"replay: cannot read trace={path}: {e.strerror}") from None
    with f:
        try:
            _read_accesses(path, f, pages, writes)
        except (OSError, EOFError) as e:          # a truncated or corrupt gzip file
            raise InvalidArgument(f"replay: cannot read trace={path}: {e}") from None
    if not pages:
        raise InvalidArgument(f"replay: {path} holds no Lackey accesses")
    return np.array(pages, dtype=np.uint64), np.array(writes, dtype=bool)


def _read_accesses(path: str, f, pages: list, writes: list) -> None:
    """Append each access of the open trace f to pages and writes (one entry per page)."""
    for lineno, raw in enumerate(f, 1):
        line = raw.strip()
        if not line or line.startswith(b"=="):
            continue
        kind, _, rest = line.partition(b" ")
        addr_text, comma, size_text = rest.strip().partition(b",")
        try:
            if kind not in (b"I", b"L", b"S", b"M") or not comma:
                raise ValueError
            addr = int(addr_text, 16)
            size = int(size_text)
        except ValueError:
            raise InvalidArgument(
                f"replay: {path} line {lineno}: {raw[:60].decode(errors='replace').rstrip()!r} "
                f"is not a Lackey access (I|L|S|M ADDR,SIZE)") from None
        if size <= 0 or addr < MMAP_MIN_ADDR or addr + size > TASK_SIZE:
            raise InvalidArgument(f"replay: {path} line {lineno}: access {addr:#x},{size} is "
                                  f"outside user space [{MMAP_MIN_ADDR:#x}, {TASK_SIZE:#x})")
        write = kind in (b"S", b"M")
        first = addr & ~(PAGE_SIZE - 1)
        last = (addr + size - 1) & ~(PAGE_SIZE - 1)
        pages.append(first)
        writes.append(write)
        if last != first:                       # straddles a page boundary
            pages.append(last)
            writes.append(write)
        if len(pages) > MAX_ACCESSES:
            raise InvalidArgument(f"replay: {path} has more than {MAX_ACCESSES} accesses")


class Replay(Workload):
    kind = "replay"
    compress_ratio = 2.5          # a traced program's data, unknown: a typical ratio
    summary = "plays a Valgrind Lackey trace (trace=PATH on the host), rate= accesses a tick"
    options = {"trace": (PATH, None, 0, 0), "rate": (INT, 1000, 1, 1 << 24)}
    has_program = False

    def __init__(self, opts):
        super().__init__(opts)
        self.pages, self.writes = parse_lackey(self.opts["trace"])
        self.pos = 0
        self.done = False
        self.seen: set[int] = set()              # pages already found mapped (or mapped here)

    def future(self) -> tuple[np.ndarray, int]:
        """The page number of every access and how many were played (for OPT)."""
        return self.pages >> np.uint64(12), self.pos

    def describe(self) -> str:
        return f"replay trace={self.opts['trace']} rate={self.opts['rate']} " \
               f"({len(self.pages)} accesses)"

    def step(self, tasks, p) -> bool:
        if self.done:
            return False
        vmm = tasks.vmm
        mm = p.mm
        end = min(self.pos + self.opts["rate"], len(self.pages))
        pages = self.pages[self.pos:end].tolist()
        writes = self.writes[self.pos:end].tolist()
        seen = self.seen
        for va in pages:
            if va not in seen:                   # first access to this page: is it mapped?
                if mm.find(va) is None:
                    vmm.mmap(p, PAGE_SIZE, addr=va, prot=VM_READ | VM_WRITE, shared=False,
                             file=None, offset=0, populate=False)
                seen.add(va)
        try:
            vmm.access_many(p, pages, writes)
        finally:
            self.pos = end
        if self.pos == len(self.pages):
            self.done = True
            tasks.m.trace.emit(p.pid, "replay-done", f"accesses={len(self.pages)} "
                               f"faults={p.minflt + p.majflt} rss_pages={mm.rss}")
            tasks._log(f"replay: {p.pid} ({p.comm}) played {len(self.pages)} accesses: "
                       f"{p.minflt + p.majflt} faults, {mm.rss} pages resident")
        return True
