"""Snapshots of processes for the renderers: numbers gathered under the lock, no text.

What fs/proc/task_mmu.c and array.c compute, computed the same way:
ProcView carries status/statm/stat's figures; VmaView one maps/smaps entry with
its page statistics (smaps_account: Rss, Pss with 12 fractional bits, shared
vs private by mapcount, dirty by PTE or page flag, referenced by the accessed
bit, the zero page never counted); the pagemap and kpage* functions build
the binary entries for just the range asked, vectorised over page tables.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import pte as P
from .mm import PAGE
from .process import Process
from ..pmm.zone import NR_ZONES
from ..pmm.frames import (ACTIVE as PG_ACTIVE, BUDDY, DIRTY as PG_DIRTY, LAZYFREE, LRU as PG_LRU,
                          ORDER_MASK, REFERENCED as PG_REFERENCED, SWAPCACHE as PG_SWAPCACHE,
                          THP_HEAD, THP_TAIL, TYPE_MASK, PageType)

PSS_SHIFT = 12
U64 = np.uint64


@dataclass(frozen=True)
class MemStats:
    """smaps figures, in bytes (pss* with PSS_SHIFT fractional bits)."""
    rss: int = 0
    pss: int = 0
    pss_dirty: int = 0
    pss_anon: int = 0
    pss_file: int = 0
    pss_shmem: int = 0
    shared_clean: int = 0
    shared_dirty: int = 0
    private_clean: int = 0
    private_dirty: int = 0
    referenced: int = 0
    anonymous: int = 0
    lazyfree: int = 0
    swap: int = 0
    swap_pss: int = 0
    anon_huge: int = 0          # mapped by PMD-level transparent huge pages

    def __add__(self, o: "MemStats") -> "MemStats":
        return MemStats(*(a + b for a, b in zip(self.astuple(), o.astuple())))

    def astuple(self) -> tuple:
        return tuple(getattr(self, k) for k in self.__dataclass_fields__)


@dataclass(frozen=True)
class VmaView:
    start: int
    end: int
    perms: str                  # "rw-p"
    pgoff: int                  # bytes
    dev: str                    # "fd:00"
    ino: int
    path: str                   # "" for plain anonymous memory
    vmflags: str                # "rd wr mr mw me ac sd "
    stats: MemStats | None = None
    thp_eligible: bool = False  # smaps THPeligible


@dataclass(frozen=True)
class ProcView:
    pid: int
    comm: str
    cmdline: tuple[str, ...]
    state: str
    ppid: int
    uid: int
    kthread: bool
    cpu: int
    minflt: int
    majflt: int
    start_tick: int
    oom_score_adj: int
    oom_score: int
    utime: int = 0              # ticks it ran
    nvcsw: int = 0
    nivcsw: int = 0
    nr_threads: int = 1
    # address-space figures in pages (all 0 for a kernel thread)
    total_vm: int = 0
    hiwater_vm: int = 0
    rss_anon: int = 0
    rss_file: int = 0
    rss_shmem: int = 0
    hiwater_rss: int = 0
    data_vm: int = 0
    stack_vm: int = 0
    exec_vm: int = 0
    text: int = 0               # statm text / VmExe pages
    swap: int = 0
    pt_bytes: int = 0           # VmPTE * 1024
    start_code: int = 0
    end_code: int = 0
    start_data: int = 0
    end_data: int = 0
    start_brk: int = 0
    brk: int = 0
    start_stack: int = 0
    vmas: tuple[VmaView, ...] = field(default=())

    @property
    def rss(self) -> int:
        return self.rss_anon + self.rss_file + self.rss_shmem


def oom_score(m, p: Process) -> int:
    """/proc/PID/oom_score: oom_badness scaled to 0..2000 then by 2/3 (proc_oom_score)."""
    if p.mm is None or p.oom_score_adj == -1000:
        return 0
    totalpages = m.total_ram_pages() + m.total_swap_pages()
    mm = p.mm
    points = mm.rss + mm.swap_ents + (mm.pt_pages + 1)
    points += p.oom_score_adj * (totalpages // 1000)
    # C's signed division truncates toward zero (a negative badness rounds up).
    scaled = abs(points) * 1000 // totalpages
    return max(0, (1000 + (scaled if points >= 0 else -scaled)) * 2 // 3)


def proc_view(m, p: Process, *, vmas: bool = False, stats: bool = False) -> ProcView:
    base = dict(pid=p.pid, comm=p.comm, cmdline=tuple(p.cmdline), state=p.state, ppid=p.ppid,
                uid=p.uid, kthread=p.kthread, cpu=p.cpu, minflt=p.minflt, majflt=p.majflt,
                start_tick=p.start_tick, oom_score_adj=p.oom_score_adj, oom_score=oom_score(m, p),
                utime=p.utime, nvcsw=p.nvcsw, nivcsw=p.nivcsw)
    mm = p.mm
    if mm is None:
        return ProcView(**base)
    total = mm.total_vm()
    exec_vm = mm.exec_vm()
    rows = tuple(vma_view(m, mm, v, stats) for v in mm.vmas) if vmas else ()
    return ProcView(
        **base, total_vm=total, hiwater_vm=max(mm.hiwater_vm, total), rss_anon=mm.rss_anon,
        rss_file=mm.rss_file, rss_shmem=mm.rss_shmem, hiwater_rss=max(mm.hiwater_rss, mm.rss),
        data_vm=mm.data_vm(), stack_vm=mm.stack_vm(), exec_vm=exec_vm,
        text=min(mm.text_pages(), exec_vm), swap=mm.swap_ents,
        pt_bytes=mm.pt_pages * PAGE, start_code=mm.start_code, end_code=mm.end_code,
        start_data=mm.start_data, end_data=mm.end_data, start_brk=mm.start_brk, brk=mm.brk,
        start_stack=mm.start_stack, vmas=rows)


def vma_view(m, mm, v, stats: bool) -> VmaView:
    if v.file is None:
        dev, ino, path = "00:00", 0, v.name or ""
    elif v.file.shmem:
        dev, ino, path = "00:01", v.file.ino, "/dev/zero (deleted)"
    else:
        dev, ino, path = "fd:00", v.file.ino, v.file.path
    return VmaView(v.start, v.end, v.perms(), v.pgoff * PAGE if v.file else 0, dev, ino, path,
                   v.vmflags(), vma_stats(m, mm, v) if stats else None,
                   mm.limit is None and m.vmm.thp_vma_ok(v))


def _entries(m, mm, start: int, end: int):
    """(vas, entries) of the non-none entries in [start, end), as arrays."""
    vas, ents = [], []
    for t, base, lo, hi in m.vmm.leaf_tables(mm, start, end, split=False):
        view = np.frombuffer(t, dtype=U64)[lo:hi]
        nz = np.flatnonzero(view)
        if nz.size:
            vas.append(base + (nz.astype(np.int64) + lo) * PAGE)
            ents.append(view[nz])
    if not vas:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=U64)
    return np.concatenate(vas), np.concatenate(ents)


def _pfns(ents: np.ndarray) -> np.ndarray:
    present = (ents & U64(P.P)) != 0
    raw = np.where(present, ents, ~ents)
    return ((raw & U64(P.PFN_MASK)) >> U64(12)).astype(np.int64)


def vma_stats(m, mm, v) -> MemStats:
    _, ents = _entries(m, mm, v.start, v.end)
    mapped = (ents & U64(P.P | P.PROTNONE)) != 0
    swapped = ~mapped & (ents != 0) & ((ents >> U64(P.SWP_TYPE_SHIFT)) < U64(P.MAX_SWAPFILES))
    page = mapped & ((ents & U64(P.SPECIAL)) == 0)           # the zero page is never counted
    e = ents[page]
    pfns = _pfns(e)
    ft = m.ft
    flags = ft.flags_np()[pfns]
    ptype = flags & TYPE_MASK
    mapcount = np.maximum(ft.mapcount_np()[pfns].astype(np.int64), 1)
    dirty = ((e & U64(P.DIRTY)) != 0) | ((flags & PG_DIRTY) != 0)
    young = (e & U64(P.ACCESSED)) != 0
    anon = ptype == PageType.ANON
    shmem = ptype == PageType.SHMEM
    shared = mapcount >= 2
    size = PAGE
    pss_each = (size << PSS_SHIFT) // mapcount
    n_swap = int(swapped.sum())
    return MemStats(
        rss=int(page.sum()) * size,
        pss=int(pss_each.sum()),
        pss_dirty=int(pss_each[dirty].sum()),
        pss_anon=int(pss_each[anon].sum()),
        pss_file=int(pss_each[~anon & ~shmem].sum()),
        pss_shmem=int(pss_each[shmem].sum()),
        shared_clean=int((shared & ~dirty).sum()) * size,
        shared_dirty=int((shared & dirty).sum()) * size,
        private_clean=int((~shared & ~dirty).sum()) * size,
        private_dirty=int((~shared & dirty).sum()) * size,
        referenced=int(young.sum()) * size,
        anonymous=int(anon.sum()) * size,
        lazyfree=int((anon & ((flags & LAZYFREE) != 0) & ~dirty).sum()) * size,
        swap=n_swap * size,
        swap_pss=n_swap * (size << PSS_SHIFT),
        anon_huge=sum(v.start <= r << 21 < v.end for r in mm.thp) * (PAGE << 9))


@dataclass(frozen=True)
class NumaView:
    """One numa_maps line's figures (show_numa_map / gather_stats), in pages."""
    start: int
    policy: str                 # mpol_to_str of the policy in force: `default`, `bind:1`, ...
    where: str                  # " file=PATH", " heap", " stack" or ""
    pages: int = 0              # mapped pages (the zero page and swap entries not counted)
    anon: int = 0
    dirty: int = 0
    mapmax: int = 0             # the highest map count among them
    swapcache: int = 0
    active: int = 0
    nodes: tuple[tuple[int, int], ...] = ()     # (node, pages on it), nodes in order


def numa_maps(m, p: Process) -> list[NumaView]:
    """Every VMA of p with where its pages are (fs/proc/task_mmu.c show_numa_map). A task
    policy shows on every VMA (none of them has its own)."""
    mm = p.mm
    if mm is None:
        return []
    policy = p.mempolicy.text() if p.mempolicy is not None else "default"
    ft = m.ft
    out = []
    for v in mm.vmas:
        if v.file is not None:
            where = " file=" + ("/dev/zero (deleted)" if v.file.shmem else v.file.path)
        elif v.name in ("[heap]", "[stack]"):
            where = " " + v.name[1:-1]
        else:
            where = ""
        _, ents = _entries(m, mm, v.start, v.end)
        page = ((ents & U64(P.P | P.PROTNONE)) != 0) & ((ents & U64(P.SPECIAL)) == 0)
        e = ents[page]
        if not e.size:
            out.append(NumaView(v.start, policy, where))
            continue
        pfns = _pfns(e)
        flags = ft.flags_np()[pfns]
        node = ft.pb_zone_np()[pfns >> 9] // NR_ZONES
        counts = np.bincount(node)
        out.append(NumaView(
            v.start, policy, where, pages=int(e.size),
            anon=int(((flags & TYPE_MASK) == PageType.ANON).sum()),
            dirty=int((((e & U64(P.DIRTY)) != 0) | ((flags & PG_DIRTY) != 0)).sum()),
            mapmax=int(ft.mapcount_np()[pfns].max()),
            swapcache=int(((flags & PG_SWAPCACHE) != 0).sum()),
            active=int(((flags & PG_ACTIVE) != 0).sum()),
            nodes=tuple((n, int(c)) for n, c in enumerate(counts.tolist()) if c)))
    return out


# ---------------------------------------------------------------------------
# the pte dump
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class PteDump:
    pgd: int                                  # pfn of the PGD
    tables: tuple[tuple[str, int, int], ...]  # (level name, va covered, pfn) of every table
    vmas: tuple[tuple[VmaView, str, np.ndarray, np.ndarray, np.ndarray], ...]
    # per VMA: its view, what a none entry means there, vas, entries, frame types


def pte_dump(m, p: Process) -> PteDump:
    mm = p.mm
    tables = []
    _collect_tables(m, mm.pgd, 0, 0, tables)
    tables += [("PTE (deposited for the huge page)", region << 21, dep)
               for region, dep in sorted(mm.thp.items())]
    rows = []
    for v in mm.vmas:
        vas, ents = _entries(m, mm, v.start, v.end)
        pfns = _pfns(ents)
        mapped = (ents & U64(P.P | P.PROTNONE)) != 0
        types = np.where(mapped, m.ft.flags_np()[np.where(mapped, pfns, 0)] & TYPE_MASK, 0)
        if v.file is None:
            none_means = "demand-zero"
        elif v.file.shmem:
            none_means = "shared memory page, zero until written"
        else:
            none_means = f"read from {v.file.path} at offset {v.pgoff * PAGE:#x} + (va - start)"
        rows.append((vma_view(m, mm, v, False), none_means, vas, ents, types,
                     _swap_notes(m, ents[~mapped])))
    return PteDump(mm.pgd, tuple(tables), tuple(rows))


def _swap_notes(m, ents: np.ndarray) -> dict:
    """entry -> where its page is: zswap, the swap cache (which frame), or the device."""
    notes = {}
    for e in ents.tolist():
        t, off = P.swp_type(e), P.swp_offset(e)
        area = m.swap.areas[t] if t < len(m.swap.areas) else None
        if area is None or off > area.nr_slots:
            continue
        if area.cache[off]:
            notes[e] = f"in the swap cache at pfn {area.cache[off] - 1:#x}"
        elif area.zsize[off]:
            notes[e] = f"zswap, {area.zsize[off] - 1} bytes compressed"
        else:
            notes[e] = f"on {area.name}"
    return notes


def _collect_tables(m, pfn: int, level: int, va: int, out: list) -> None:
    out.append((P.LEVEL_NAMES[level], va, pfn))
    if level == 3:
        return
    t = m.vmm.tables[pfn]
    for k in np.flatnonzero(np.frombuffer(t, dtype=U64)):
        if t[int(k)] & P.PSE:
            continue                          # a PMD mapping a huge page, not a table
        child_va = va | (int(k) << P.LEVEL_SHIFTS[level])
        _collect_tables(m, (t[int(k)] & P.PFN_MASK) >> 12, level + 1, child_va, out)


# ---------------------------------------------------------------------------
# binary files: pagemap, kpagecount, kpageflags
# ---------------------------------------------------------------------------

PM_SOFT_DIRTY = U64(1 << 55)
PM_MMAP_EXCLUSIVE = U64(1 << 56)
PM_FILE = U64(1 << 61)
PM_SWAP = U64(1 << 62)
PM_PRESENT = U64(1 << 63)


def pagemap(m, p: Process, first_vpn: int, count: int) -> bytes:
    """count little-endian u64 pagemap entries from virtual page first_vpn."""
    out = np.zeros(count, dtype=U64)
    mm = p.mm
    if mm is None:
        return out.tobytes()
    lo_va, hi_va = first_vpn * PAGE, (first_vpn + count) * PAGE
    ft = m.ft
    for v in mm.overlapping(lo_va, hi_va):
        s, e = max(v.start, lo_va), min(v.end, hi_va)
        a, b = (s - lo_va) // PAGE, (e - lo_va) // PAGE
        if v.flags & 0x8000000:                       # VM_SOFTDIRTY
            out[a:b] |= PM_SOFT_DIRTY
        vas, ents = _entries(m, mm, s, e)
        if not vas.size:
            continue
        idx = (vas - lo_va) // PAGE
        mapped = (ents & U64(P.P | P.PROTNONE)) != 0
        pfns = _pfns(ents)
        val = np.zeros(ents.size, dtype=U64)
        # present: PFN, present bit, exclusive when mapped once, file when not private anon
        special = (ents & U64(P.SPECIAL)) != 0
        safe = np.where(mapped, pfns, 0)
        mc = ft.mapcount_np()[safe]
        ptype = ft.flags_np()[safe] & TYPE_MASK
        val[mapped] = pfns[mapped].astype(U64) | PM_PRESENT
        val[mapped & ~special & (mc == 1)] |= PM_MMAP_EXCLUSIVE
        val[mapped & ~special & (ptype != PageType.ANON)] |= PM_FILE
        sd = mapped & ((ents & U64(P.SOFT_DIRTY)) != 0)
        val[sd] |= PM_SOFT_DIRTY
        # swap-style entries: type | offset << 5, swapped bit
        sw = ~mapped
        if sw.any():
            t = ents[sw] >> U64(P.SWP_TYPE_SHIFT)
            off = ((~ents[sw]) << U64(P.SWP_TYPE_BITS)) >> U64(P.SWP_OFFSET_SHIFT)
            val[sw] = (t | (off << U64(5))) | PM_SWAP
        out[idx] |= val
    return out.tobytes()


def kpagecount(m, first_pfn: int, count: int) -> bytes:
    end = min(first_pfn + count, m.ft.max_pfn)
    if end <= first_pfn:
        return b""
    return m.ft.mapcount_np()[first_pfn:end].astype(U64).tobytes()


KPF_REFERENCED, KPF_UPTODATE, KPF_DIRTY, KPF_LRU, KPF_ACTIVE = 2, 3, 4, 5, 6
KPF_BUDDY, KPF_MMAP, KPF_ANON, KPF_SWAPCACHE, KPF_SWAPBACKED = 10, 11, 12, 13, 14
KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL, KPF_THP = 15, 16, 22
KPF_HUGE = 17
KPF_HWPOISON, KPF_NOPAGE, KPF_ZERO_PAGE, KPF_OFFLINE, KPF_PGTABLE, KPF_RESERVED = (
    19, 20, 24, 23, 26, 32)


def kpageflags(m, first_pfn: int, count: int) -> bytes:
    """kpageflags entries for [first_pfn, first_pfn + count) (stops at the last frame)."""
    end = min(first_pfn + count, m.ft.max_pfn)
    if end <= first_pfn:
        return b""
    flags = m.ft.flags_np()[first_pfn:end]
    mc = m.ft.mapcount_np()[first_pfn:end]
    ptype = flags & TYPE_MASK
    out = np.zeros(end - first_pfn, dtype=U64)

    def bit(mask, b):
        out[mask] |= U64(1 << b)

    user = (ptype == PageType.ANON) | (ptype == PageType.FILE) | (ptype == PageType.SHMEM)
    bit((ptype == PageType.NOPAGE) | (ptype == PageType.OFFLINE), KPF_NOPAGE)
    bit(ptype == PageType.RESERVED, KPF_RESERVED)
    bit((flags & BUDDY) != 0, KPF_BUDDY)
    bit(ptype == PageType.PAGETABLE, KPF_PGTABLE)
    bit(ptype == PageType.HWPOISON, KPF_HWPOISON)
    bit(ptype == PageType.BALLOON, KPF_OFFLINE)
    bit(user, KPF_UPTODATE)
    bit((flags & PG_LRU) != 0, KPF_LRU)
    bit((flags & PG_ACTIVE) != 0, KPF_ACTIVE)
    bit((flags & PG_REFERENCED) != 0, KPF_REFERENCED)
    bit((flags & PG_SWAPCACHE) != 0, KPF_SWAPCACHE)
    bit(user & (mc > 0), KPF_MMAP)
    bit(ptype == PageType.ANON, KPF_ANON)
    bit((ptype == PageType.ANON) & ((flags & LAZYFREE) == 0), KPF_SWAPBACKED)
    bit(ptype == PageType.SHMEM, KPF_SWAPBACKED)
    bit((flags & PG_DIRTY) != 0, KPF_DIRTY)
    thp = ((flags & ORDER_MASK) != 0) & (ptype == PageType.ANON)     # a PMD-mapped THP's frames
    bit(thp, KPF_THP)
    bit(thp & ((flags & ORDER_MASK) == THP_HEAD), KPF_COMPOUND_HEAD)
    bit(thp & ((flags & ORDER_MASK) == THP_TAIL), KPF_COMPOUND_TAIL)
    huge = ptype == PageType.HUGETLB          # a hugetlb pool page's frames; its head 512-aligned
    if huge.any():
        bit(huge, KPF_HUGE)
        head = (np.arange(first_pfn, end) & 511) == 0
        bit(huge & head, KPF_COMPOUND_HEAD)
        bit(huge & ~head, KPF_COMPOUND_TAIL)
    zp = m.vmm.zero_pfn
    if first_pfn <= zp < end:
        out[zp - first_pfn] |= U64(1 << KPF_ZERO_PAGE)
    return out.tobytes()
