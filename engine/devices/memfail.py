"""Faulty RAM: hard and soft page offlining, and fault injection (mm/memory-failure.c).

A frame found bad is poisoned: typed HWPOISON, kept off the free lists for
good, and counted in meminfo's HardwareCorrupted. Machine.poisoned remembers
every poisoned frame, also across its block going offline and online again.

hard_offline(pfn) is memory_failure(): the frame's content is gone.

    free frame          taken off the buddy lists            Recovered
    clean page cache    unmapped and dropped (read again     Recovered
                        from the file on the next touch)
    dirty page cache    dropped, its unwritten data lost;    Recovered
                        every process mapping it is killed
    anonymous, shmem    every process that maps it (or       Recovered
                        holds its swap slot) is killed
                        with SIGBUS
    kernel, page table, refused (EBUSY): a kernel page       Ignored
    reserved, balloon   cannot be recovered

soft_offline(pfn) moves the content away first (page migration), so nothing
is lost and nobody dies; a frame that cannot move is refused with EBUSY.
Both log Linux's lines in kmsg ("Memory failure: 0x...: recovery action for
...", "soft offline: 0x...: ...").

Fault injection: inject(rate) hard-offlines random RAM frames, rate frames a
simulated second, from the machine's random generator (so a seed replays
it); frames that cannot be recovered are skipped (Ignored, as a real kernel
leaves them).
"""
from __future__ import annotations

import errno

from ..errors import Busy, EngineError, IoError, NoDevice
from ..pmm.frames import DIRTY as PG_DIRTY, RMAP_INDEX_BITS, SWAPCACHE, TYPE_MASK, PageType
from ..stats import PageStat
from ..vmm import pte as P

FREE, ANON, FILE, SHMEM = (int(PageType.FREE), int(PageType.ANON), int(PageType.FILE),
                           int(PageType.SHMEM))
HWPOISON, OFFLINE, NOPAGE = int(PageType.HWPOISON), int(PageType.OFFLINE), int(PageType.NOPAGE)
SIGBUS_EXIT = 128 + 7
KIND = {FREE: "free buddy page", ANON: "dirty LRU page", FILE: "clean page cache",
        SHMEM: "dirty page cache"}


class AlreadyPoisoned(EngineError):
    errno = getattr(errno, "EHWPOISON", 133)         # Linux's EHWPOISON


class MemoryFailure:
    def __init__(self, machine):
        self.m = machine
        self.rate = 0                    # injected failures a simulated second
        self.soft = False
        self._owed = 0.0

    def _log(self, line: str) -> None:
        self.m.kmsg.log(self.m.clock.uptime_us, line)

    def _check(self, pfn: int, what: str) -> int:
        """The frame's type; ENXIO if pfn is no RAM, and for an offline block's frame ENXIO
        (hard: pfn_to_online_page finds none) or EIO (soft)."""
        ft = self.m.ft
        if pfn >= ft.max_pfn or ft.flags[pfn] & TYPE_MASK == NOPAGE:
            raise NoDevice(f"{what}: {pfn << 12:#x} is not RAM")
        t = ft.flags[pfn] & TYPE_MASK
        if t == OFFLINE:
            err = NoDevice if what.startswith("hard") else IoError
            raise err(f"{what}: pfn {pfn:#x} is in a memory block that is offline")
        return t

    # ------------------------------------------------------------------

    def hard_offline(self, pfn: int) -> list[int]:
        """memory_failure; returns the pids killed."""
        m, ft, vmm = self.m, self.m.ft, self.m.vmm
        t = self._check(pfn, "hard_offline_page")
        if t == HWPOISON:
            raise AlreadyPoisoned(f"Memory failure: {pfn:#x}: already hardware poisoned")
        if t not in KIND:
            what = {int(PageType.KERNEL): "unmovable kernel page", int(PageType.PAGETABLE):
                    "page table", int(PageType.RESERVED): "reserved kernel page",
                    int(PageType.BALLOON): "balloon page"}.get(t, PageType(t).name)
            raise Busy(f"Memory failure: {pfn:#x}: recovery action for {what}: Ignored")
        kind = KIND[t]
        killed = []
        if t == FILE and ft.flags[pfn] & PG_DIRTY:
            kind = "dirty page cache"
        if t == FILE and kind == "clean page cache":
            vmm.try_to_unmap(pfn)
            vmm.remove_from_cache(pfn)
        elif t != FREE:
            for p in self._users(pfn):
                self._log(f"Memory failure: {pfn:#x}: Sending SIGBUS to {p.comm}:{p.pid} due to "
                          f"hardware memory corruption")
                m.tasks.exit_with(p, SIGBUS_EXIT)
                killed.append(p.pid)
            self._forget(pfn)
        self._take(pfn)
        self._log(f"Memory failure: {pfn:#x}: recovery action for {kind}: Recovered")
        return killed

    def soft_offline(self, pfn: int) -> bool:
        """soft_offline_page: migrate the content away and poison the frame. Returns whether
        a page was migrated."""
        ft, vmm = self.m.ft, self.m.vmm
        t = self._check(pfn, "soft_offline_page")
        if t == HWPOISON:
            self._log(f"soft offline: {pfn:#x} page already poisoned")
            return False
        if t == FREE:
            self._take(pfn)
            self._log(f"soft offline: {pfn:#x}: free page isolated")
            return False
        if not vmm.movable(pfn):
            raise Busy(f"soft offline: {pfn:#x}: unknown non-movable page type "
                       f"({PageType(t).name})")
        new = vmm.migration_target(pfn)
        if new is None:
            raise Busy(f"soft offline: {pfn:#x}: page migration failed: no free frame")
        vmm.migrate_page(pfn, new)
        ft.content[pfn] = 0
        self._poison(pfn)
        self._log(f"soft offline: {pfn:#x}: page migrated to {new:#x}")
        return True

    # ------------------------------------------------------------------

    def _users(self, pfn: int) -> list:
        """The processes that map pfn or hold its swap slot in a PTE; for shared memory, every
        process with a mapping of that page (the page has no other copy: one that has not
        touched it yet would read zeros)."""
        ft, vmm = self.m.ft, self.m.vmm
        users = {p.pid: p for p, _va, _t, _i in vmm.mappings(pfn)}
        if ft.flags[pfn] & TYPE_MASK == SHMEM:
            word = ft.rmap[pfn]
            f, index = vmm.inodes[word >> RMAP_INDEX_BITS], word & ((1 << RMAP_INDEX_BITS) - 1)
            for fam in vmm.mms.values():
                for p in fam:
                    if p.mm is not None and any(
                            v.file is f and v.pgoff <= index < v.pgoff + v.pages
                            for v in p.mm.vmas):
                        users[p.pid] = p
        if ft.flags[pfn] & SWAPCACHE:
            area, off = vmm.slot_of(pfn)
            entry = P.swp_entry(area.type, off)
            va = (ft.rmap[pfn] & ((1 << RMAP_INDEX_BITS) - 1)) << 12
            for p in vmm.mms.get(ft.rmap[pfn] >> RMAP_INDEX_BITS, ()):
                if p.mm is None:
                    continue
                tbl = vmm.leaf(p.mm, va)
                if tbl is not None and tbl[(va >> 12) & 511] == entry:
                    users[p.pid] = p
        return sorted(users.values(), key=lambda p: p.pid)

    def _forget(self, pfn: int) -> None:
        """After its users died: a page still held (page cache, a swap-cache page) leaves."""
        ft, vmm = self.m.ft, self.m.vmm
        t = ft.flags[pfn] & TYPE_MASK
        if t == FREE:
            return
        if t == ANON:
            vmm.free_anon_frame(pfn)
            return
        if ft.flags[pfn] & PG_DIRTY:                  # the unwritten data is lost
            ft.flags[pfn] &= ~PG_DIRTY
            if t == FILE:
                vmm._gauge(pfn, PageStat.FILE_DIRTY, -1)
                vmm.inodes[ft.rmap[pfn] >> RMAP_INDEX_BITS].nr_dirty -= 1
        if ft.mapcount[pfn]:
            vmm.try_to_unmap(pfn)
        vmm.remove_from_cache(pfn)

    def _take(self, pfn: int) -> None:
        """The now free frame leaves the allocator for good."""
        m = self.m
        z = m.pmm.zone_of(pfn)
        z.drain_pcp()
        z.take_range(pfn, pfn + 1)
        self._poison(pfn)

    def _poison(self, pfn: int) -> None:
        self.m.ft.flags[pfn] = HWPOISON
        self.m.ft.content[pfn] = 0
        self.m.poisoned.add(pfn)

    # ------------------------------------------------------------------
    # fault injection
    # ------------------------------------------------------------------

    def tick(self, tick: int) -> None:
        if not self.rate:
            return
        self._owed += self.rate * self.m.config.clock.tick_ms / 1000
        m = self.m
        while self._owed >= 1:
            self._owed -= 1
            ranges = [r for rs in m.node_ram for r in rs]
            total = sum(e - s for s, e in ranges)
            k = m.rng.randrange(total)
            for s, e in ranges:
                if k < e - s:
                    pfn = s + k
                    break
                k -= e - s
            t = m.ft.flags[pfn] & TYPE_MASK
            if t in (HWPOISON, OFFLINE):
                continue
            try:
                self.soft_offline(pfn) if self.soft else self.hard_offline(pfn)
            except EngineError as e:
                self._log(e.reason)
