"""pagemap, kpagecount and kpageflags against the page tables, on the small machine.

pagemap bits (reference/linux-mm-interfaces.md 5.7): 63 present, 61 file or
shared anonymous, 56 exclusively mapped, 55 soft-dirty (every new area starts
VM_SOFTDIRTY, so every page inside a VMA has it), PFN in bits 0-54.
kpageflags bits (5.8): 3 UPTODATE, 4 DIRTY, 5 LRU, 10 BUDDY, 11 MMAP, 12 ANON,
14 SWAPBACKED, 20 NOPAGE, 24 ZERO_PAGE, 26 PGTABLE, 32 RESERVED.
"""
import numpy as np

from engine.vmm import pte as P
from engine.vmm.vma import VM_READ
from vmm_common import PAGE, RW, MMAP_BASE, ptes, kcount


PRESENT = 1 << 63
FILE = 1 << 61
EXCLUSIVE = 1 << 56
SOFT_DIRTY = 1 << 55

UPTODATE, DIRTY, LRU, BUDDY, MMAP, ANON, SWAPBACKED = (1 << b for b in (3, 4, 5, 10, 11, 12, 14))
NOPAGE, ZERO_PAGE, PGTABLE, RESERVED = (1 << b for b in (20, 24, 26, 32))


def pagemap(m, pid, va, count) -> list[int]:
    return np.frombuffer(m.pagemap(pid, va >> 12, count), dtype="<u8").tolist()


def kflags(m, pfn) -> int:
    return int.from_bytes(m.kpageflags(pfn, 1), "little")


def agrees(m, pid) -> None:
    """Every PTE of pid shows in pagemap with its pfn; exclusive exactly when kpagecount is 1."""
    zero = m.vmm.zero_pfn
    for va, e in ptes(m, pid).items():
        (pm,) = pagemap(m, pid, va, 1)
        assert pm & PRESENT, hex(va)
        assert pm & ((1 << 55) - 1) == P.pfn_of(e), hex(va)
        assert pm & SOFT_DIRTY, hex(va)
        pfn = P.pfn_of(e)
        if pfn == zero:
            assert not pm & (EXCLUSIVE | FILE)
        else:
            assert bool(pm & EXCLUSIVE) == (kcount(m, pfn) == 1), hex(va)
            assert bool(pm & FILE) == (m.ft.type_of(pfn).name != "ANON"), hex(va)


def test_pagemap_of_anonymous_pages_in_every_state(small, invariants):
    pid = small.tasks.spawn("a")
    a = small.tasks.mmap(pid, 4 * PAGE, prot=RW)
    assert a == MMAP_BASE - 4 * PAGE
    small.tasks.write(pid, a, 1)
    small.tasks.read(pid, a + PAGE)
    pfn = P.pfn_of(ptes(small, pid)[a])
    zero = small.vmm.zero_pfn
    assert pagemap(small, pid, a - PAGE, 6) == [
        0,                                              # below the area: no VMA
        PRESENT | EXCLUSIVE | SOFT_DIRTY | pfn,         # written: private anon, mapped once
        PRESENT | SOFT_DIRTY | zero,                    # read: the zero page, never counted
        SOFT_DIRTY,                                     # untouched, inside the VMA
        SOFT_DIRTY,
        0,                                              # MMAP_BASE: the gap below the stack
    ]
    agrees(small, pid)
    invariants(small)

    child = small.tasks.fork(pid)
    assert pagemap(small, pid, a, 1) == [PRESENT | SOFT_DIRTY | pfn]     # shared now
    assert pagemap(small, child, a, 1) == [PRESENT | SOFT_DIRTY | pfn]
    small.tasks.write(child, a, 2)
    copy = P.pfn_of(ptes(small, child)[a])
    assert pagemap(small, child, a, 1) == [PRESENT | EXCLUSIVE | SOFT_DIRTY | copy]
    assert pagemap(small, pid, a, 1) == [PRESENT | EXCLUSIVE | SOFT_DIRTY | pfn]
    agrees(small, pid)
    agrees(small, child)
    invariants(small)


def test_pagemap_of_file_shared_and_protnone_pages(small, invariants):
    small.tasks.create_file("/data", 4 * PAGE)
    p1, p2 = small.tasks.spawn("a"), small.tasks.spawn("b")
    f1 = small.tasks.mmap(p1, 4 * PAGE, prot=RW, shared=True, file="/data")
    small.tasks.write(p1, f1, 3)
    fpfn = P.pfn_of(ptes(small, p1)[f1])
    assert pagemap(small, p1, f1, 1) == [PRESENT | FILE | EXCLUSIVE | SOFT_DIRTY | fpfn]
    f2 = small.tasks.mmap(p2, 4 * PAGE, prot=VM_READ, shared=True, file="/data")
    small.tasks.read(p2, f2)
    assert pagemap(small, p1, f1, 1) == [PRESENT | FILE | SOFT_DIRTY | fpfn]
    assert pagemap(small, p2, f2, 1) == [PRESENT | FILE | SOFT_DIRTY | fpfn]

    s = small.tasks.mmap(p1, 2 * PAGE, prot=RW, shared=True)
    small.tasks.write(p1, s, 4)
    spfn = P.pfn_of(ptes(small, p1)[s])
    assert pagemap(small, p1, s, 2) == [PRESENT | FILE | EXCLUSIVE | SOFT_DIRTY | spfn, SOFT_DIRTY]

    a = small.tasks.mmap(p1, PAGE, prot=RW)
    small.tasks.write(p1, a, 5)
    apfn = P.pfn_of(ptes(small, p1)[a])
    small.tasks.mprotect(p1, a, PAGE, 0)
    assert pagemap(small, p1, a, 1) == [PRESENT | EXCLUSIVE | SOFT_DIRTY | apfn]
    agrees(small, p1)
    agrees(small, p2)
    invariants(small)


def test_pagemap_of_a_kernel_thread_reads_zero(small):
    assert pagemap(small, small.pids()[0], 0x400000, 4) == [0, 0, 0, 0]


def test_kpageflags_of_each_kind_of_frame(small, invariants):
    small.tasks.create_file("/data", 4 * PAGE)
    pid = small.tasks.spawn("a")
    a = small.tasks.mmap(pid, PAGE, prot=RW)
    small.tasks.write(pid, a, 1)
    f = small.tasks.mmap(pid, 4 * PAGE, prot=RW, shared=True, file="/data")
    small.tasks.write(pid, f, 2)                        # dirty file page
    small.tasks.read(pid, f + PAGE)                     # clean file page
    s = small.tasks.mmap(pid, PAGE, prot=RW, shared=True)
    small.tasks.write(pid, s, 3)
    e = ptes(small, pid)
    anon, dirty, clean, shm = (P.pfn_of(e[va]) for va in (a, f, f + PAGE, s))
    assert kflags(small, anon) == UPTODATE | LRU | MMAP | ANON | SWAPBACKED
    assert kflags(small, dirty) == UPTODATE | DIRTY | LRU | MMAP
    assert kflags(small, clean) == UPTODATE | LRU | MMAP
    assert kflags(small, shm) == UPTODATE | LRU | MMAP | SWAPBACKED
    for _, _, pfn in small.pte_dump(pid).tables:
        assert kflags(small, pfn) == PGTABLE
        assert kcount(small, pfn) == 0
    assert kflags(small, small.vmm.zero_pfn) == ZERO_PAGE | RESERVED
    assert kflags(small, 0x100) == BUDDY                 # head of DMA's order-8 free block
    assert kflags(small, 0x101) == 0                     # inside it
    assert kflags(small, 0) == NOPAGE                    # firmware's page: not RAM
    assert kflags(small, 0x1000) == RESERVED             # the kernel image
    invariants(small)

    small.tasks.munmap(pid, f, 4 * PAGE)                 # cached, no longer mapped
    assert kflags(small, clean) == UPTODATE | LRU
    assert kcount(small, clean) == 0
    assert kflags(small, dirty) == UPTODATE | DIRTY | LRU
    invariants(small)


def test_kpagecount_counts_every_mapping(small, invariants):
    pid = small.tasks.spawn("a")
    a = small.tasks.mmap(pid, 2 * PAGE, prot=RW)
    small.tasks.fill(pid, a, 2 * PAGE, seed=1)
    kids = [small.tasks.fork(pid) for _ in range(3)]
    pfn = P.pfn_of(ptes(small, pid)[a])
    assert kcount(small, pfn) == 4
    small.tasks.exit(kids[0])
    assert kcount(small, pfn) == 3
    counts = np.frombuffer(small.kpagecount(0, small.ft.max_pfn), dtype="<u8")
    assert counts.size == small.ft.max_pfn
    assert int(counts.sum()) == sum(len(ptes(small, p)) for p in [pid] + kids[1:])
    assert small.kpagecount(small.ft.max_pfn, 1) == b""  # past the last frame: EOF
    invariants(small)
