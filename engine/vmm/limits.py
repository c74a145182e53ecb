"""The VMM's half of resident-set limits: every access of a limited process goes past its
policy (engine/reclaim/limit.py), and the pages the policy chooses are evicted here.

Eviction takes one page away from one process, as reclaim's unmap does for one
entry: an anonymous page gets a swap slot (if it has none), its entry becomes
the swap entry, and once no one maps the frame its content is written to the
slot (zswap or the device) and the frame is freed; a zero-page mapping is
dropped; a file page is unmapped and stays in the page cache.
"""
from __future__ import annotations

import numpy as np

from . import pte as P
from ..errors import InvalidArgument
from ..pmm.frames import DIRTY as PG_DIRTY, SWAPCACHE, TYPE_MASK, PageType
from ..reclaim.limit import POLICIES, ResidentLimit, make_policy
from ..stats import PageStat

ANON = int(PageType.ANON)
FILE = int(PageType.FILE)
SHMEM = int(PageType.SHMEM)
PFN_MASK = P.PFN_MASK
U64 = np.uint64


class LimitMixin:
    # The host class (Vmm) provides ft, swap, leaf(), fault(), leaf_tables(), add_to_swap(),
    # swap_writepage(), free_anon_frame(), _gauge(), _set_dirty(), trace.

    def set_limit(self, proc, frames: int, policy: str) -> int:
        """Limit proc to `frames` resident pages under `policy`; 0 frames lifts the limit.
        The pages resident now enter the policy in address order; evictions bring them
        down to the limit. Returns the pages evicted."""
        mm = proc.mm
        if policy not in POLICIES:
            raise InvalidArgument(f"limit: policy={policy} is not one of {', '.join(POLICIES)}")
        if frames < 0:
            raise InvalidArgument(f"limit: frames={frames} must be 0 (no limit) or more")
        if frames == 0:
            mm.limit = None
            return 0
        future = None
        if policy == "opt":
            w = proc.workload
            if w is None or not hasattr(w, "future"):
                raise InvalidArgument("limit: policy=opt needs the future, which only a trace "
                                      "replay knows (spawn NAME workload=replay trace=PATH)")
            future = w.future()
        lim = ResidentLimit(frames, make_policy(policy, future))
        for vpn in self._resident_vpns(mm):
            lim.policy.pages[vpn] = 0
            if policy == "clock":
                lim.policy.circle.append(vpn)
        mm.limit = lim
        evicted = 0
        while len(lim.policy) > frames:
            if not self.evict_page(proc, lim.policy.victim() << 12):
                break
            evicted += 1
        return evicted

    def _resident_vpns(self, mm) -> list[int]:
        out = []
        for vma in mm.vmas:
            for t, base, lo, hi in self.leaf_tables(mm, vma.start, vma.end):
                view = np.frombuffer(t, dtype=U64)[lo:hi]
                hit = np.flatnonzero((view & U64(P.P | P.PROTNONE)) != 0)
                out.extend(((base >> 12) + lo + hit).tolist())
        return out

    def _limited_access(self, proc, va: int, write: bool) -> int:
        """access() for a process with a resident-set limit: the policy sees every access."""
        mm = proc.mm
        lim = mm.limit
        pol = lim.policy
        vpn = va >> 12
        t = self.leaf(mm, va)
        e = t[vpn & 511] if t is not None else 0
        resident = bool(e & (P.P | P.PROTNONE))
        if resident and vpn in pol:
            pol.hit(vpn)
        else:
            if not resident:
                lim.faults += 1
            while len(pol) >= lim.frames:
                victim = pol.victim()
                if not self.evict_page(proc, victim << 12):
                    lim.stuck += 1                  # no swap space: the limit cannot hold
                    break
                lim.evictions += 1
        if e & P.P and (not write or e & P.RW):     # present: as access()'s fast path
            i = vpn & 511
            t[i] = e | (P.ACCESSED | P.DIRTY | P.SOFT_DIRTY if write else P.ACCESSED)
            pfn = (e & PFN_MASK) >> 12
            if write and self.ft.flags[pfn] & TYPE_MASK == FILE:
                self._set_dirty(pfn)
        else:
            pfn = self.fault(proc, va, write)
        if vpn not in pol:
            pol.load(vpn)
        return pfn

    def evict_page(self, proc, va: int) -> bool:
        """Take the page at va away from proc alone. False if it cannot go (no swap slot)."""
        mm = proc.mm
        ft = self.ft
        vpn = va >> 12
        t = self.leaf(mm, va)
        i = vpn & 511
        e = t[i] if t is not None else 0
        if not e & (P.P | P.PROTNONE):
            mm.limit.forget(vpn)                    # gone already
            return True
        if e & P.SPECIAL:                           # the zero page: nothing to keep
            t[i] = 0
            mm.limit.forget(vpn)
            return True
        pfn = P.pfn_of(e)
        ptype = ft.flags[pfn] & TYPE_MASK
        if ptype == ANON:
            if not ft.flags[pfn] & SWAPCACHE and not self.add_to_swap(pfn):
                return False
            area, off = self.slot_of(pfn)
            t[i] = P.swp_entry(area.type, off)
            self.swap.dup(area.type, off)
            mm.rss_anon -= 1
            mm.swap_ents += 1
            if e & P.DIRTY:
                ft.flags[pfn] |= PG_DIRTY
            ft.mapcount[pfn] -= 1
            if ft.mapcount[pfn] == 0:
                self._gauge(pfn, PageStat.ANON, -1)
                if ft.flags[pfn] & PG_DIRTY:
                    self.swap_writepage(pfn)
                self.free_anon_frame(pfn)
        else:
            t[i] = 0
            ft.mapcount[pfn] -= 1
            if ptype == SHMEM:
                mm.rss_shmem -= 1
            else:
                mm.rss_file -= 1
                if e & P.DIRTY:
                    self._set_dirty(pfn)
            if ft.mapcount[pfn] == 0:
                self._gauge(pfn, PageStat.FILE_MAPPED, -1)
        mm.limit.forget(vpn)
        self.eviction_clock += 1
        self.trace.emit(proc.pid, "evict", f"{va:#x} policy={mm.limit.policy.name}")
        return True
