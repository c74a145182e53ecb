"""What the VMM engine tests share: the address-space constants they work values out
from, and small readers of a machine's state."""
import numpy as np

from engine.vmm import pte as P
from engine.vmm.vma import VM_READ, VM_WRITE

PAGE = 4096
MIB = 1 << 20
RW = VM_READ | VM_WRITE
MMAP_BASE = 0x7FFFF7FFF000          # mmap's top-down start: TASK_SIZE - 128 MiB
STACK_TOP = 0x7FFFFFFFF000          # TASK_SIZE
FIRST_PID = 5_000_002               # kthreadd is 5000001
SMALL_MEMTOTAL = 13825              # pages of the small machine


def free(m) -> int:
    return m.meminfo().free


def event(m, name) -> int:
    return dict(m.vmstat())[name]


def ptes(m, pid) -> dict:
    """va -> raw entry of every non-none PTE of pid."""
    out = {}
    for _, _, vas, ents, *_ in m.pte_dump(pid).vmas:
        out.update(zip(vas.tolist(), ents.tolist()))
    return out


def kcount(m, pfn) -> int:
    return int.from_bytes(m.kpagecount(pfn, 1), "little")


def peek(m, pid, a, pages) -> np.ndarray:
    """The values of a range's pages as the machine holds them, without touching anything:
    a mapped page's frame; a swapped page's swap-cache frame if it has one, else its
    slot (zswap or the device: the value is the slot's data either way); none: zero."""
    vmm = m.vmm
    mm = m.tasks.procs[pid].mm
    content = m.ft.content_np()
    out = np.zeros(pages, dtype=np.uint64)
    U64 = np.uint64
    for t, base, lo, hi in vmm.leaf_tables(mm, a, a + pages * PAGE):
        ents = np.frombuffer(t, dtype=U64)[lo:hi]
        at = (base + lo * PAGE - a) // PAGE + np.arange(hi - lo)
        mapped = (ents & U64(P.P | P.PROTNONE)) != 0
        raw = np.where((ents & U64(P.P)) != 0, ents, ~ents)
        pfns = ((raw & U64(P.PFN_MASK)) >> U64(12)).astype(np.int64)
        page = mapped & ((ents & U64(P.SPECIAL)) == 0)
        out[at[page]] = content[pfns[page]]
        for k in np.flatnonzero((ents != 0) & ~mapped).tolist():
            e = int(ents[k])
            area = m.swap.areas[P.swp_type(e)]
            off = P.swp_offset(e)
            cached = area.cache[off]
            out[at[k]] = content[cached - 1] if cached else area.data[off]
    return out
