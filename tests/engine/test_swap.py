"""Swap on the small machine (64 MiB of RAM, 128 MiB of swap on /dev/vdb, zswap in front).

What a process writes to more memory than there is comes back intact; the
counters (pswpout, pswpin, zswpout, SwapFree) show the traffic; the swap cache
spares a clean page a second write; fork shares swapped pages by slot; munmap
and madvise give slots back; swapoff brings everything in or, without room,
changes nothing; swapon checks what it is given. The last part corrupts the
swap bookkeeping by hand and checks that check_invariants names the break.
"""
from __future__ import annotations

import numpy as np
import pytest

from engine.errors import Busy, InternalError, InvalidArgument, OutOfMemory
from engine.pmm.frames import DIRTY, LRU, SWAPCACHE, PageType
from engine.reclaim.swap import HAS_CACHE
from engine.vmm import pte as P
from vmm_common import MIB, PAGE, RW, SMALL_MEMTOTAL, event

SWAP_SLOTS = 32767                    # 128 MiB = 32768 pages, slot 0 is the header


def events(m, *names):
    d = dict(m.vmstat())
    return {n: d[n] for n in names}


def hog(m, size, seed, name="hog"):
    """A process (exec's stack page dropped, so only its area counts) with `size` bytes
    filled with seed's values: (pid, start)."""
    pid = m.tasks.spawn(name)
    mm = m.tasks.procs[pid].mm
    m.tasks.madvise(pid, mm.start_stack, PAGE, "dontneed")
    a = m.tasks.mmap(pid, size, prot=RW)
    m.tasks.fill(pid, a, size, seed=seed)
    return pid, a


def mm_of(m, pid):
    return m.tasks.procs[pid].mm


def area(m, name="/dev/vdb"):
    return m.swap.by_name(name)


def counts(m, name="/dev/vdb"):
    return np.frombuffer(area(m, name).count, dtype=np.uint16).copy()


def used_slots(m):
    mi = m.meminfo()
    return mi.swap_total - mi.swap_free


def entry(m, pid, va):
    mm = mm_of(m, pid)
    t = m.vmm.leaf(mm, va)
    return 0 if t is None else t[(va >> 12) & 511]


# ---------------------------------------------------------------------------
# more than RAM
# ---------------------------------------------------------------------------

def test_a_process_writing_more_than_ram_reads_every_value_back(small, invariants):
    m = small
    assert m.meminfo().swap_total == SWAP_SLOTS and m.meminfo().swap_free == SWAP_SLOTS
    size = 80 * MIB                                   # 20480 pages; RAM is 13825
    pid, a = hog(m, size, seed=7)
    mm = mm_of(m, pid)
    mi = m.meminfo()
    ev = events(m, "pswpout", "zswpout", "zswpwb", "pswpin", "zswpin")
    assert mm.rss + mm.swap_ents == size // PAGE
    assert mm.swap_ents > size // PAGE - SMALL_MEMTOTAL
    # every swapped page holds a slot; slots held beyond the entries are swap-cache pages
    assert mm.swap_ents <= used_slots(m) <= mm.swap_ents + mi.swap_cached
    assert ev["zswpout"] > 0 and ev["pswpout"] > 0   # zswap first; its oldest on to the device
    assert ev["zswpwb"] > 0 and ev["pswpout"] >= ev["zswpwb"]
    assert ev["zswpout"] + ev["pswpout"] - ev["zswpwb"] >= mm.swap_ents
    assert ev["pswpin"] == ev["zswpin"] == 0
    assert mi.zswapped == m.swap.zswap.stored_pages > 0 and mi.zswap == len(m.swap.zswap.frames) > 0
    invariants(m)

    assert m.tasks.verify(pid, a, size, seed=7) == 0
    after = events(m, "pswpin", "zswpin", "pgmajfault")
    assert after["pswpin"] + after["zswpin"] > 0
    assert after["pgmajfault"] > 0
    assert m.tasks.procs[pid].majflt > 0
    invariants(m)
    assert m.tasks.verify(pid, a, 16 * MIB, seed=7) == 0   # again: what the first read evicted
    invariants(m)


@pytest.fixture
def nozswap(machine_from_yaml, builtin_yaml):
    """The small machine with zswap off: every swapped page goes to /dev/vdb."""
    text = builtin_yaml("small")
    assert "zswap: {enabled: true" in text
    return machine_from_yaml(text.replace("zswap: {enabled: true", "zswap: {enabled: false"))


def test_without_zswap_every_swapped_page_is_written_to_the_device(nozswap, invariants):
    m = nozswap
    pid, a = hog(m, 64 * MIB, seed=3)
    mm = mm_of(m, pid)
    ev = events(m, "pswpout", "zswpout", "zswpwb")
    assert ev["zswpout"] == ev["zswpwb"] == 0
    assert ev["pswpout"] >= mm.swap_ents > 0
    assert m.meminfo().zswapped == m.meminfo().zswap == 0
    assert m.tasks.verify(pid, a, 64 * MIB, seed=3) == 0
    assert event(m, "pswpin") > 0 and event(m, "zswpin") == 0
    invariants(m)


def test_swap_free_follows_the_slots_in_use(small, invariants):
    """SwapFree = total - slots in use, and a slot is in use while an entry or the swap
    cache holds it: after the whole area is unmapped every slot is free again."""
    m = small
    pid, a = hog(m, 64 * MIB, seed=1)
    mm = mm_of(m, pid)
    used = used_slots(m)
    assert used == int(np.count_nonzero(counts(m)))
    assert used >= mm.swap_ents > 0
    m.tasks.munmap(pid, a, 64 * MIB)
    assert mm.swap_ents == 0 and mm.rss == 0
    assert m.meminfo().swap_free == SWAP_SLOTS
    assert m.meminfo().swap_cached == 0 and m.meminfo().zswapped == 0
    invariants(m)


# ---------------------------------------------------------------------------
# the swap cache
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("zswap", [False, True])
def test_a_clean_page_swapped_in_and_evicted_again_is_not_written_again(small, nozswap,
                                                                       invariants, zswap):
    """Fill more than RAM, read the first 4 MiB back: read from the device they come in
    clean and stay in the swap cache. With everything else unmapped, a squeeze makes
    reclaim take them again: their slots still hold them, so nothing is written. (With
    zswap, 80 MiB: the pool is full and its oldest pages, these, went on to the device.)"""
    m = small if zswap else nozswap
    size = 80 * MIB if zswap else 64 * MIB
    pid, a = hog(m, size, seed=1)
    mm = mm_of(m, pid)
    R = 4 * MIB
    before = events(m, "pswpin", "zswpin")
    assert m.tasks.verify(pid, a, R, seed=1) == 0
    after = events(m, "pswpin", "zswpin")
    assert after["pswpin"] - before["pswpin"] >= R // PAGE     # from the device
    assert after["zswpin"] == before["zswpin"]
    m.tasks.munmap(pid, a + R, size - R)
    assert mm.rss == R // PAGE and mm.swap_ents == 0
    # each page still has its slot (pages read ahead past R may linger in the cache too)
    assert m.meminfo().swap_cached >= R // PAGE
    assert used_slots(m) == m.meminfo().swap_cached
    invariants(m)
    written = events(m, "pswpout", "zswpout")
    m.squeeze(50 * MIB, ticks=30)
    m.step(10)
    assert mm.swap_ents > 0, "the squeeze should have made reclaim evict some of the pages"
    assert mm.rss + mm.swap_ents == R // PAGE
    assert events(m, "pswpout", "zswpout") == written
    invariants(m)
    m.step(30)                                       # the squeeze ends
    assert m.tasks.verify(pid, a, R, seed=1) == 0
    invariants(m)


def test_a_swapped_in_page_written_to_leaves_the_swap_cache(small, invariants):
    """A write fault on a page only this process holds takes it out of the swap cache at
    once (its slot's copy is stale): the slot is freed."""
    m = small
    pid, a = hog(m, 80 * MIB, seed=1)
    mm = mm_of(m, pid)
    e = entry(m, pid, a)
    assert e and not e & (P.P | P.PROTNONE)          # the first page is swapped out
    st, off = P.swp_type(e), P.swp_offset(e)
    assert m.swap.areas[st].count[off] == 1
    m.tasks.write(pid, a, 42)
    assert m.swap.areas[st].count[off] == 0 and m.swap.areas[st].cache[off] == 0
    pfn = P.pfn_of(entry(m, pid, a))
    assert not m.ft.flags[pfn] & SWAPCACHE
    assert m.tasks.read(pid, a) == 42
    invariants(m)
    # a read fault keeps the page in the cache, clean, with its slot
    e = entry(m, pid, a + PAGE)
    st, off = P.swp_type(e), P.swp_offset(e)
    m.tasks.read(pid, a + PAGE)
    pfn = P.pfn_of(entry(m, pid, a + PAGE))
    assert m.ft.flags[pfn] & SWAPCACHE and not m.ft.flags[pfn] & DIRTY
    assert m.swap.areas[st].count[off] == HAS_CACHE and m.swap.areas[st].cache[off] == pfn + 1
    assert mm.rss + mm.swap_ents == 80 * MIB // PAGE
    invariants(m)


def test_pages_of_zeros_cost_zswap_nothing(small, invariants):
    """Pages written but holding zeros are "same filled": zswap keeps them without a byte
    of pool and without a frame; none goes to the device; they read back as zeros."""
    m = small
    pid = m.tasks.spawn("zeros")
    m.tasks.madvise(pid, mm_of(m, pid).start_stack, PAGE, "dontneed")   # exec's one value
    a = m.tasks.mmap(pid, 64 * MIB, prot=RW)
    m.tasks.touch(pid, a, 64 * MIB, True)            # written: private frames, all zero
    z = m.swap.zswap
    mm = mm_of(m, pid)
    assert mm.swap_ents > 0
    assert z.stored_pages == z.same_filled >= mm.swap_ents
    assert z.pool_bytes == 0 and len(z.frames) == 0 and m.meminfo().zswap == 0
    assert event(m, "pswpout") == 0
    invariants(m)
    assert m.tasks.read(pid, a) == 0 and m.tasks.read(pid, a + 8 * MIB) == 0
    invariants(m)


def test_idle_prefetch_brings_swapped_pages_back_as_minor_faults(small, invariants):
    """With memory free again and the CPU idle, background prefetch reads swapped pages into
    the swap cache, a batch at a time; a later touch finds them there (swap_ra_hit, no
    major fault)."""
    m = small
    pid, a = hog(m, 64 * MIB, seed=1)
    mm = mm_of(m, pid)
    m.tasks.munmap(pid, a + 32 * MIB, 32 * MIB)     # room: more than twice the high marks
    swapped = mm.swap_ents
    assert swapped > 1000 and m.meminfo().swap_cached == 0
    reads = events(m, "pswpin", "zswpin")
    m.step(200)
    fetched = m.pressure_src.prefetched
    assert fetched > 0
    assert m.meminfo().swap_cached == fetched
    assert mm.swap_ents == swapped                    # still swap entries: nothing mapped
    after = events(m, "pswpin", "zswpin")
    assert sum(after.values()) - sum(reads.values()) == fetched
    invariants(m)
    hits, majflt = event(m, "swap_ra_hit"), m.tasks.procs[pid].majflt
    assert m.tasks.verify(pid, a, 32 * MIB, seed=1) == 0
    assert event(m, "swap_ra_hit") - hits >= fetched - 1
    assert m.tasks.procs[pid].majflt - majflt <= swapped - fetched + 1
    invariants(m)


# ---------------------------------------------------------------------------
# fork
# ---------------------------------------------------------------------------

def test_fork_then_swap_both_processes_read_their_values(small, invariants):
    """The child shares the parent's 30 MiB copy-on-write; a third process pushes both out.
    Each swapped page is one slot held by both entries (count 2), and both read it back."""
    m = small
    pid, a = hog(m, 16 * MIB, seed=1, name="parent")
    child = m.tasks.fork(pid)
    other, b = hog(m, 48 * MIB, seed=2, name="other")
    pm, cm = mm_of(m, pid), mm_of(m, child)
    assert pm.swap_ents > 0 and cm.swap_ents > 0
    c = counts(m)
    assert int(np.count_nonzero((c & 0x7FFF) == 2)) >= min(pm.swap_ents, cm.swap_ents)
    invariants(m)
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0
    assert m.tasks.verify(child, a, 16 * MIB, seed=1) == 0
    assert m.tasks.verify(other, b, 48 * MIB, seed=2) == 0
    invariants(m)
    # the child writes its own values: copies, while the parent keeps the old ones
    m.tasks.fill(child, a, 16 * MIB, seed=3)
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0
    assert m.tasks.verify(child, a, 16 * MIB, seed=3) == 0
    invariants(m)


def test_exit_of_processes_sharing_swapped_pages_frees_every_slot(small, invariants):
    """Parent and child hold one slot per swapped page. The parent reads a page back (a
    swap-cache frame, mapped by the parent, slot still held by the child), then both
    exit: nothing may stay behind."""
    m = small
    pid, a = hog(m, 16 * MIB, seed=1, name="parent")
    child = m.tasks.fork(pid)
    other, b = hog(m, 48 * MIB, seed=2, name="other")
    e = entry(m, pid, a)
    assert e and not e & P.P and area(m).count[P.swp_offset(e)] == 2
    assert m.tasks.read(pid, a) != 0
    invariants(m)
    for p in (pid, child, other):
        m.tasks.kill(p)
    invariants(m)
    assert m.meminfo().swap_cached == 0
    assert m.meminfo().swap_free == SWAP_SLOTS


def test_a_child_forked_while_pages_are_swapped_shares_their_slots(small, invariants):
    m = small
    pid, a = hog(m, 64 * MIB, seed=4)
    pm = mm_of(m, pid)
    before = counts(m)
    child = m.tasks.fork(pid)
    cm = mm_of(m, child)
    assert cm.swap_ents == pm.swap_ents > 0
    # each slot held before gained the child's entry (the child's page tables may have
    # pushed some more pages out meanwhile: those slots are new)
    after = counts(m)
    held = (before & 0x7FFF) > 0
    assert ((after[held] & 0x7FFF) == (before[held] & 0x7FFF) * 2).all()
    invariants(m)
    assert m.tasks.verify(child, a, 64 * MIB, seed=4) == 0
    assert m.tasks.verify(pid, a, 16 * MIB, seed=4) == 0
    invariants(m)


# ---------------------------------------------------------------------------
# giving swapped pages up: munmap, madvise, exit
# ---------------------------------------------------------------------------

def test_munmap_of_a_swapped_range_frees_its_slots(small, invariants):
    m = small
    pid, a = hog(m, 64 * MIB, seed=1)
    mm = mm_of(m, pid)
    # the first 8 MiB are all swapped out (the oldest pages go first)
    first = 8 * MIB // PAGE
    ents = [entry(m, pid, a + k * PAGE) for k in range(first)]
    assert all(e and not e & (P.P | P.PROTNONE) for e in ents)
    slots = {P.swp_offset(e) for e in ents}
    used, swapped = used_slots(m), mm.swap_ents
    m.tasks.munmap(pid, a, 8 * MIB)
    assert mm.swap_ents == swapped - first
    assert used_slots(m) == used - first
    c = counts(m)
    assert all(c[s] == 0 for s in slots)
    assert set(slots) <= set(np.frombuffer(area(m).free, dtype=np.uint32).tolist())
    invariants(m)
    assert m.tasks.verify(pid, a + 8 * MIB, 8 * MIB, seed=1) == 0
    invariants(m)


def test_munmap_frees_the_slots_of_pages_read_ahead(nozswap, invariants):
    """Swap readahead brings a swapped page's neighbours into the swap cache. When the
    range is unmapped, each such page loses the last entry for its slot: the slot and
    the frame should go with it (Linux: free_swap_and_cache reclaims an unmapped swap-cache
    folio), leaving SwapFree where it started."""
    m = nozswap
    pid, a = hog(m, 64 * MIB, seed=1)
    mm = mm_of(m, pid)
    m.tasks.munmap(pid, a + 32 * MIB, 32 * MIB)      # room: readahead needs free memory
    ra = event(m, "swap_ra")
    for k in range(256):                            # sequential: readahead's window opens
        m.tasks.read(pid, a + k * PAGE)
    assert event(m, "swap_ra") > ra
    invariants(m)
    m.tasks.munmap(pid, a, 32 * MIB)
    assert mm.rss == 0 and mm.swap_ents == 0
    invariants(m)
    assert m.meminfo().swap_cached == 0
    assert m.meminfo().swap_free == SWAP_SLOTS


def test_the_readahead_window_follows_hits_and_adjacent_offsets(nozswap):
    """swapin_nr_pages with page-cluster 3 (at most 8 slots), worked by hand: no hits and a
    slot not next to the previous one reads 1; the next slot reads 2; hits h read h + 2
    rounded up to a power of two, at least 4, at most 8; the window never shrinks by more
    than half a read."""
    v = nozswap.vmm
    assert nozswap.sysctl["page-cluster"] == 3
    steps = [(0, 100, 1), (0, 101, 2), (2, 5000, 4), (5, 7000, 8), (40, 9000, 8),
             (0, 200, 4), (0, 900, 2), (0, 400, 1), (0, 401, 2), (0, 399, 1)]
    for hits, off, win in steps:
        v.ra_hits = hits
        assert v.ra_window(off) == win, (hits, off)
        assert v.ra_hits == 0


def test_random_swap_ins_read_little_ahead_and_sequential_ones_read_whole_windows(nozswap):
    """Readahead pays where it is used. With free memory to read into (the area's resident
    tail unmapped), random swap-ins hit no read-ahead page, so the window stays at one page
    and nothing is read ahead (a fixed 8-page window would read about 7 pages a fault, 93%
    of them wasted); a sequential pass then finds more pages read ahead than it faults in,
    and uses nearly every one."""
    m = nozswap
    pid, a = hog(m, 96 * MIB, seed=3)
    m.tasks.munmap(pid, a + 64 * MIB, 32 * MIB)
    proc = m.tasks.procs[pid]
    majflt, ra = proc.majflt, event(m, "swap_ra")
    for k in np.random.default_rng(5).integers(0, 64 * MIB // PAGE, 2000):
        m.tasks.read(pid, a + int(k) * PAGE)
    majors = proc.majflt - majflt
    assert majors > 500
    assert event(m, "swap_ra") - ra < majors // 4, "random reads: little read ahead"
    majflt, ra, hits = proc.majflt, event(m, "swap_ra"), event(m, "swap_ra_hit")
    assert m.tasks.verify(pid, a, 64 * MIB, seed=3) == 0
    read_ahead, used = event(m, "swap_ra") - ra, event(m, "swap_ra_hit") - hits
    assert used > proc.majflt - majflt, "sequential: most pages come from readahead"
    assert used >= read_ahead * 9 // 10, "and what is read ahead is used"


def test_exit_frees_every_slot_and_the_pool(small, invariants):
    m = small
    pid, a = hog(m, 64 * MIB, seed=2)
    assert used_slots(m) > 0 and m.meminfo().zswapped > 0
    m.tasks.kill(pid)
    mi = m.meminfo()
    assert (mi.swap_free, mi.swap_cached, mi.zswapped, mi.zswap) == (SWAP_SLOTS, 0, 0, 0)
    assert m.swap.zswap.pool_bytes == 0
    invariants(m)


def test_madvise_dontneed_drops_swapped_pages_and_their_slots(small, invariants):
    m = small
    pid, a = hog(m, 64 * MIB, seed=1)
    mm = mm_of(m, pid)
    n = 4 * MIB // PAGE
    assert all(not entry(m, pid, a + k * PAGE) & P.P for k in range(n))
    used, swapped = used_slots(m), mm.swap_ents
    assert m.tasks.madvise(pid, a, 4 * MIB, "dontneed") == n
    assert all(entry(m, pid, a + k * PAGE) == 0 for k in range(n))
    assert mm.swap_ents == swapped - n and used_slots(m) == used - n
    invariants(m)
    # the range reads as fresh zeros now: every page differs from the old values
    assert m.tasks.verify(pid, a, 4 * MIB, seed=1) == n
    assert m.tasks.read(pid, a) == 0
    assert m.tasks.verify(pid, a + 4 * MIB, 12 * MIB, seed=1) == 0
    invariants(m)


def test_madvise_free_drops_swapped_pages_at_once(small, invariants):
    """MADV_FREE on a swapped-out page: its content may go, so the entry and slot go now."""
    m = small
    pid, a = hog(m, 64 * MIB, seed=1)
    mm = mm_of(m, pid)
    n = 4 * MIB // PAGE
    used, swapped = used_slots(m), mm.swap_ents
    m.tasks.madvise(pid, a, 4 * MIB, "free")
    assert all(entry(m, pid, a + k * PAGE) == 0 for k in range(n))
    assert mm.swap_ents == swapped - n and used_slots(m) == used - n
    invariants(m)
    assert m.tasks.read(pid, a + PAGE) == 0
    assert m.tasks.verify(pid, a + 4 * MIB, 12 * MIB, seed=1) == 0
    invariants(m)


def test_madvise_free_pages_are_discarded_by_reclaim_without_a_write(small, invariants):
    """Resident pages given up with MADV_FREE and not written since: reclaim frees them
    (pglazyfreed) instead of swapping them; the process reads zeros there."""
    m = small
    pid, a = hog(m, 30 * MIB, seed=1)
    mm = mm_of(m, pid)
    assert mm.swap_ents == 0
    m.tasks.madvise(pid, a, 30 * MIB, "free")
    written = events(m, "pswpout", "zswpout")
    other, b = hog(m, 40 * MIB, seed=2, name="other")
    assert event(m, "pglazyfreed") > 0
    assert mm.swap_ents == 0 and mm.rss < 30 * MIB // PAGE
    out = events(m, "pswpout", "zswpout")
    assert sum(out.values()) - sum(written.values()) <= mm_of(m, other).swap_ents + \
        m.meminfo().swap_cached
    assert m.tasks.verify(other, b, 40 * MIB, seed=2) == 0
    invariants(m)


# ---------------------------------------------------------------------------
# swapoff and swapon
# ---------------------------------------------------------------------------

def test_swapoff_brings_every_page_back(small, invariants):
    m = small
    pid, a = hog(m, 64 * MIB, seed=5)
    mm = mm_of(m, pid)
    m.tasks.munmap(pid, a + 40 * MIB, 24 * MIB)     # the resident tail goes: room for the rest
    swapped = mm.swap_ents
    assert swapped > 0
    brought = m.swapoff("/dev/vdb")
    assert 0 < brought <= swapped
    assert m.swaps() == [] and m.meminfo().swap_total == 0 and m.meminfo().swap_free == 0
    assert mm.swap_ents == 0 and mm.rss == 40 * MIB // PAGE
    assert m.meminfo().swap_cached == 0 and m.meminfo().zswapped == 0
    assert "swapoff: /dev/vdb" in m.kmsg_lines()[-1]
    invariants(m)
    assert m.tasks.verify(pid, a, 40 * MIB, seed=5) == 0
    invariants(m)


def test_swapoff_of_an_area_holding_shared_slots_maps_each_page_in_both(small, invariants):
    m = small
    pid, a = hog(m, 32 * MIB, seed=5)
    child = m.tasks.fork(pid)
    other, b = hog(m, 32 * MIB, seed=6, name="other")
    m.tasks.kill(other)                              # its pushing done, its memory freed
    pm, cm = mm_of(m, pid), mm_of(m, child)
    assert pm.swap_ents > 0 and cm.swap_ents > 0
    m.swapoff("/dev/vdb")
    assert pm.swap_ents == cm.swap_ents == 0
    assert pm.rss == cm.rss == 32 * MIB // PAGE
    invariants(m)
    assert m.tasks.verify(pid, a, 32 * MIB, seed=5) == 0
    assert m.tasks.verify(child, a, 32 * MIB, seed=5) == 0
    invariants(m)


def snapshot(m):
    """Everything swapoff may not change when it fails."""
    mi = m.meminfo()
    return (mi, m.swaps(), {a.name: (bytes(a.count), bytes(a.cache), bytes(a.zsize), bytes(a.data),
                                     len(a.free)) for a in m.swap.active()},
            [(p.pid, p.mm.rss, p.mm.swap_ents) for p in m.tasks.procs.values() if p.mm])


def test_swapoff_with_too_little_ram_fails_and_changes_nothing(small, invariants):
    m = small
    pid, a = hog(m, 64 * MIB, seed=9)
    before = snapshot(m)
    with pytest.raises(OutOfMemory, match="nothing was changed"):
        m.swapoff("/dev/vdb")
    assert snapshot(m) == before
    invariants(m)
    assert m.tasks.verify(pid, a, 64 * MIB, seed=9) == 0
    invariants(m)


def test_swapoff_of_an_unknown_area_is_refused(small, invariants):
    with pytest.raises(InvalidArgument, match="not an active swap area"):
        small.swapoff("/dev/vdz")
    assert [s.name for s in small.swaps()] == ["/dev/vdb"]
    invariants(small)


@pytest.mark.parametrize("name,size,prio,exc,words", [
    ("swapfile", 8 * PAGE, None, InvalidArgument, "absolute path"),
    ("/swap file", 8 * PAGE, None, InvalidArgument, "absolute path"),
    ("", 8 * PAGE, None, InvalidArgument, "absolute path"),
    ("/swapfile", 8 * PAGE + 1, None, InvalidArgument, "whole number of pages"),
    ("/swapfile", PAGE, None, InvalidArgument, "at least two"),
    ("/swapfile", 0, None, InvalidArgument, "at least two"),
    ("/swapfile", 8 * PAGE, -2, InvalidArgument, "prio=-2"),
    ("/swapfile", 8 * PAGE, -1, InvalidArgument, "prio=-1"),
    ("/swapfile", 8 * PAGE, 32768, InvalidArgument, "prio=32768"),
    ("/swapfile", (1 << 27) * PAGE + PAGE, None, InvalidArgument, "per area"),
    ("/dev/vdb", 8 * PAGE, None, Busy, "already in use"),
])
def test_swapon_with_bad_arguments_is_refused(small, invariants, name, size, prio, exc, words):
    before = small.swaps()
    with pytest.raises(exc, match=words):
        small.swapon(name, size, prio)
    assert small.swaps() == before
    invariants(small)


def test_swapon_adds_an_area_and_the_higher_priority_fills_first(small, invariants):
    m = small
    m.swapon("/swapfile", 4 * MIB, 5)
    sw = {s.name: s for s in m.swaps()}
    assert sw["/swapfile"].size_kb == 4 * 1024 - 4 and sw["/swapfile"].priority == 5
    assert sw["/swapfile"].kind == "file" and sw["/dev/vdb"].kind == "partition"
    assert m.meminfo().swap_total == SWAP_SLOTS + 1023
    assert "Adding 4092k swap on /swapfile.  Priority:5" in m.kmsg_lines()[-1]
    pid, a = hog(m, 64 * MIB, seed=1)
    hi = area(m, "/swapfile")
    assert hi.used_slots == hi.nr_slots                  # the higher priority filled up first
    assert area(m).used_slots > 0
    invariants(m)
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0
    invariants(m)


def test_swapon_without_priority_counts_down_and_equal_priorities_take_turns(small, invariants):
    m = small
    m.swapon("/swap1", 2 * MIB)
    m.swapon("/swap2", 2 * MIB, 3)
    m.swapon("/swap3", 2 * MIB, 3)
    prio = {s.name: s.priority for s in m.swaps()}
    assert prio == {"/dev/vdb": -2, "/swap1": -3, "/swap2": 3, "/swap3": 3}
    pid, a = hog(m, 64 * MIB, seed=1)
    s2, s3 = area(m, "/swap2"), area(m, "/swap3")
    # 3 and 3 share the slots out in turn until both are full; then -2, never -3
    assert s2.used_slots == s3.used_slots == 511
    assert area(m).used_slots > 0 and area(m, "/swap1").used_slots == 0
    invariants(m)
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0
    invariants(m)


def test_a_swapped_off_type_is_reused_by_the_next_swapon(small, invariants):
    m = small
    m.swapon("/swap1", 2 * MIB, 1)
    assert area(m, "/swap1").type == 1
    m.swapoff("/dev/vdb")
    assert m.swap.areas[0] is None
    m.swapon("/swap2", 2 * MIB)
    assert area(m, "/swap2").type == 0
    m.swapoff("/swap1")
    assert len(m.swap.areas) == 1
    invariants(m)


# ---------------------------------------------------------------------------
# check_invariants catches broken swap bookkeeping
# ---------------------------------------------------------------------------

def broken(invariants, m, *words):
    with pytest.raises(InternalError) as info:
        invariants(m)
    msg = str(info.value)
    for w in words:
        assert w in msg, f"expected {w!r} in the message, got {msg!r}"


@pytest.fixture
def swapped(nozswap):
    """The small machine without zswap, 60 MiB filled, one page read back clean from the
    device into the swap cache: (machine, pid, start, first page's slot)."""
    m = nozswap
    pid, a = hog(m, 60 * MIB, seed=1)
    e = entry(m, pid, a)
    m.tasks.read(pid, a + 64 * PAGE)
    pfn = P.pfn_of(entry(m, pid, a + 64 * PAGE))
    assert m.ft.flags[pfn] & SWAPCACHE and not m.ft.flags[pfn] & DIRTY
    return m, pid, a, P.swp_offset(e)


def test_a_slot_count_one_too_high_is_caught(swapped, invariants):
    m, pid, a, off = swapped
    area(m).count[off] += 1
    broken(invariants, m, "/dev/vdb", f"slot {off} counts 2 references, 1 page-table entries")


def test_a_used_slot_on_the_free_stack_is_caught(swapped, invariants):
    m, pid, a, off = swapped
    area(m).free.append(off)
    broken(invariants, m, f"slot {off}", "on the free stack")


def test_a_free_slot_lost_from_the_free_stack_is_caught(swapped, invariants):
    m, pid, a, off = swapped
    area(m).free.pop()
    broken(invariants, m, "is not on the free stack")


def test_a_swap_cache_frame_without_its_slot_is_caught(swapped, invariants):
    m, pid, a, off = swapped
    pfn = P.pfn_of(entry(m, pid, a + 64 * PAGE))
    word = m.ft.swp[pfn]
    area(m).cache[word & ((1 << 27) - 1)] = 0
    broken(invariants, m, f"swap-cache pfn {pfn:#x}", "cache entry is 0")


def test_an_unmapped_anon_frame_outside_the_swap_cache_is_leaked(swapped, invariants):
    m, pid, a, off = swapped
    (pfn, _), = m.palloc(count=1)
    m.ft.flags[pfn] = PageType.ANON | LRU
    broken(invariants, m, f"{pfn:#x}", "not in the swap cache", "leaked")


def test_a_clean_swap_cache_page_that_differs_from_its_slot_is_caught(swapped, invariants):
    m, pid, a, off = swapped
    pfn = P.pfn_of(entry(m, pid, a + 64 * PAGE))
    m.ft.content[pfn] ^= 1
    broken(invariants, m, "clean swap-cache", f"{pfn:#x}")


def test_a_wrong_zswap_total_is_caught(small, invariants):
    m = small
    hog(m, 60 * MIB, seed=1)
    assert m.swap.zswap.stored_pages > 0
    invariants(m)
    m.swap.zswap.stored_pages += 1
    broken(invariants, m, "zswap: stored_pages says")


def test_a_frame_off_its_lru_list_is_caught(swapped, invariants):
    m, pid, a, off = swapped
    pfn = P.pfn_of(entry(m, pid, a + 64 * PAGE))
    lru = m.vmm.lru
    lru.delete(pfn)
    m.ft.flags[pfn] |= LRU                            # still says it is on a list
    broken(invariants, m, f"pfn {pfn:#x}", "on no LRU list")


def test_a_broken_lru_back_link_is_caught(swapped, invariants):
    m, pid, a, off = swapped
    head = m.vmm.lru.head[0][0]
    second = m.ft.lru_next[head]
    m.ft.lru_prev[second] = second
    broken(invariants, m, "inactive_anon", f"pfn {second:#x} has lru_prev")


def test_an_lru_gauge_moved_to_the_wrong_list_is_caught(swapped, invariants):
    from engine.stats import PageStat
    m, pid, a, off = swapped
    zid = next(z.zid for z in m.zones if z.name == "DMA32")
    m.vmm.gauges[zid][PageStat.INACTIVE_ANON] -= 1
    m.vmm.gauges[zid][PageStat.ACTIVE_ANON] += 1
    broken(invariants, m, "DMA32", "anon LRU list")
