"""What the VMM engine tests share: the address-space constants they work values out
from, and small readers of a machine's state."""
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
