"""The virtio balloon on the small machine (engine/devices/balloon.py).

The small machine (config/small.yaml): 13825 pages managed, DMA 3840 and DMA32
9985; 128 MiB of swap on /dev/vdb behind zswap. Figures worked out by hand:

  watermarks  min_free_kbytes = int_sqrt(16 x 55300) = 940 kB = 235 pages, shared by
              managed pages: DMA 235 x 3840 / 13825 = 65, DMA32 235 x 9985 / 13825 = 169;
              low = min + max(min/4, managed x 10/10000): DMA 81, DMA32 211; high = min +
              min/2: DMA 97, DMA32 253. A Movable allocation in DMA also leaves
              lowmem_reserve 9985 / 256 = 39 pages: DMA gives nothing once it is at
              65 + 39 = 104 free, DMA32 once it is at 169.
  the most    an idle machine can put 13825 - 104 - 169 = 13552 pages in the balloon.
  rate        2048 pages a tick: target 5000 -> 2048, 4096, 5000; from 5000 to target
              1000 -> 2952, 1000; target 20000 on the idle machine -> 2048 ... 12288
              after 6 ticks, 13552 after the 7th, then no more.
  MemAvail    free - totalreserve (pagecache 0): totalreserve = (97 + 39) + 253 = 389;
              fresh 13825 - 389 = 13436 pages = 55033856 bytes.
  hot-plug    memory_probe(4 GiB) adds block 32 (pfns 0x100000-0x107fff, 32768 pages),
              its memmap (512 pages) taken from DMA32; online_movable makes it the
              Movable zone, first in a Movable allocation's zonelist, so the balloon
              inflates there. Offlining it moves every balloon page below 4 GiB: MemTotal
              back to 13825, MemFree 13825 - 512 - balloon pages.

Each scenario ends with check_invariants (the balloon's frames are exactly the
BALLOON frames, each with its owner and index in rmap).

Tests marked xfail(strict=True) assert the correct behaviour where the engine
gets it wrong today; each reason names the bug.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from engine.errors import Busy, InvalidArgument, OutOfMemory
from vmm_common import MIB, PAGE, RW, SMALL_MEMTOTAL, event

KPF_OFFLINE = 1 << 23
DMA_FLOOR, DMA32_FLOOR = 104, 169             # where a Movable allocation stops, see above
MOST = SMALL_MEMTOTAL - DMA_FLOOR - DMA32_FLOOR  # 13552
BLOCK32 = 0x100000                             # first pfn of the probed block
STAT_NAMES = ["swap-in", "swap-out", "major-faults", "minor-faults", "free-memory",
              "total-memory", "available-memory", "disk-caches", "hugetlb-allocations",
              "hugetlb-failures", "oom-kills", "alloc-stalls", "async-scans", "direct-scans",
              "async-reclaims", "direct-reclaims"]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def events(m, *names):
    d = dict(m.vmstat())
    return {n: d[n] for n in names}


def hog(m, size, seed, name="hog", **spawn):
    """A process (exec's stack page dropped) with `size` bytes filled with seed's values."""
    pid = m.tasks.spawn(name, **spawn)
    mm = m.tasks.procs[pid].mm
    m.tasks.madvise(pid, mm.start_stack, PAGE, "dontneed")
    a = m.tasks.mmap(pid, size, prot=RW)
    m.tasks.fill(pid, a, size, seed=seed)
    return pid, a


def frames(m) -> np.ndarray:
    """A copy of the balloon's frame numbers (a copy: a live view would pin the array)."""
    return np.array(m.balloon.frames, dtype=np.int64)


def kflags(m, pfn) -> int:
    return int.from_bytes(m.kpageflags(int(pfn), 1), "little")


def kmsg(m):
    return [re.sub(r"^\[\s*[\d.]+\] ", "", line) for line in m.kmsg_lines()]


def stats(m) -> dict:
    view = m.balloon_view()
    assert [k for k, _ in view["stats"]] == STAT_NAMES
    return dict(view["stats"])


def accounted(mi) -> int:
    """Every managed page is free, an anonymous page, a page table, zswap's pool or the
    balloon's (no file pages, no swap cache in these scenarios)."""
    return mi.free + mi.anon_pages + mi.page_tables + mi.zswap + mi.balloon


# ---------------------------------------------------------------------------
# inflate and deflate on an idle machine
# ---------------------------------------------------------------------------

def test_inflate_and_deflate_move_2048_pages_a_tick(small, invariants):
    """Target 5000: 2048, 4096, 5000, 5000. MemTotal stays 13825 (DEFLATE_ON_OOM); MemFree
    falls by exactly the pages in the balloon; Balloon, nr_balloon_pages and
    balloon_inflate follow actual. Target 1000: 2952, 1000; then 0."""
    m = small
    assert m.balloon_view()["target"] == m.balloon.actual == 0
    m.balloon_set_target(5000)
    assert kmsg(m)[-1] == "virtio_balloon virtio0: target 5000 pages (20000 kB), actual 0"
    assert m.balloon.actual == 0, "nothing moves before a tick"
    for want in (2048, 4096, 5000, 5000):
        m.step(1)
        mi = m.meminfo()
        assert m.balloon.actual == want
        assert (mi.total, mi.free, mi.balloon) == (SMALL_MEMTOTAL, SMALL_MEMTOTAL - want, want)
        assert m.meminfo(0).balloon == want
        assert events(m, "nr_balloon_pages", "balloon_inflate", "balloon_deflate") == {
            "nr_balloon_pages": want, "balloon_inflate": want, "balloon_deflate": 0}
        invariants(m)
    assert m.balloon_view()["target"] == 5000 and m.balloon_view()["actual"] == 5000

    m.balloon_set_target(1000)
    assert kmsg(m)[-1] == "virtio_balloon virtio0: target 1000 pages (4000 kB), actual 5000"
    for want, deflated in ((2952, 2048), (1000, 4000), (1000, 4000)):
        m.step(1)
        mi = m.meminfo()
        assert m.balloon.actual == want
        assert (mi.total, mi.free, mi.balloon) == (SMALL_MEMTOTAL, SMALL_MEMTOTAL - want, want)
        assert events(m, "nr_balloon_pages", "balloon_inflate", "balloon_deflate") == {
            "nr_balloon_pages": want, "balloon_inflate": 5000, "balloon_deflate": deflated}
        invariants(m)

    m.balloon_set_target(0)
    m.step(1)
    assert m.balloon.actual == 0
    mi = m.meminfo()
    assert (mi.total, mi.free, mi.available, mi.balloon) == (SMALL_MEMTOTAL, SMALL_MEMTOTAL,
                                                              13436, 0)
    assert events(m, "balloon_inflate", "balloon_deflate", "oom_kill") == {
        "balloon_inflate": 5000, "balloon_deflate": 5000, "oom_kill": 0}
    invariants(m)


def test_balloon_frames_are_offline_in_kpageflags_and_free_again_after_deflate(small, invariants):
    m = small
    m.balloon_set_target(3000)
    m.step(2)
    held = frames(m)
    assert held.size == len(set(held.tolist())) == 3000
    for pfn in held[[0, 1, 1500, 2999]]:
        assert kflags(m, pfn) & KPF_OFFLINE, f"pfn {pfn:#x} is in the balloon"
    m.balloon_set_target(0)
    m.step(2)
    assert m.balloon.actual == 0
    for pfn in held[[0, 1, 1500, 2999]]:
        assert not kflags(m, pfn) & KPF_OFFLINE, f"pfn {pfn:#x} was given back"
    invariants(m)


@pytest.mark.parametrize("bad", [-1, 1 << 32, 1 << 40])
def test_a_target_outside_u32_is_refused_and_changes_nothing(small, invariants, bad):
    m = small
    m.balloon_set_target(100)
    lines = len(m.kmsg_lines())
    with pytest.raises(InvalidArgument, match="num_pages is a u32"):
        m.balloon_set_target(bad)
    assert m.balloon_view()["target"] == 100 and len(m.kmsg_lines()) == lines
    m.balloon_set_target((1 << 32) - 1)               # the largest u32 is a valid target
    assert m.balloon_view()["target"] == (1 << 32) - 1
    invariants(m)


def test_a_target_beyond_what_can_be_had_stops_without_oom_and_tries_again(small, invariants):
    """1000 frames held by a driver (palloc), target 20000: 2048 a tick up to 12288, then
    13552 - 1000 = 12552 on the 7th tick, and no more: no OOM kill, every zone left at
    its floor (DMA 104, DMA32 169). Each tick that finds nothing is one failed
    allocation with one round of reclaim (allocstall). When the driver frees its 1000
    frames the next tick takes them."""
    m = small
    runs = m.palloc(count=1000)
    assert sum(n for _, n in runs) == 1000
    m.balloon_set_target(20000)
    for want in (2048, 4096, 6144, 8192, 10240, 12288, MOST - 1000):
        m.step(1)
        assert m.balloon.actual == want
    m.step(3)
    assert m.balloon.actual == MOST - 1000
    zones = {z.name: z.free_pages for z in m.zones if z.managed_pages}
    assert zones == {"DMA": DMA_FLOOR, "DMA32": DMA32_FLOOR}
    assert m.meminfo().free == DMA_FLOOR + DMA32_FLOOR
    assert event(m, "oom_kill") == 0
    assert not any("Out of memory" in x or "oom-killer" in x for x in kmsg(m))
    assert stats(m)["alloc-stalls"] == 4, "ticks 7, 8, 9, 10 each stalled once"
    invariants(m)

    assert m.pfree(runs) == 1000
    m.step(1)
    assert m.balloon.actual == MOST
    assert m.meminfo().free == DMA_FLOOR + DMA32_FLOOR
    assert m.meminfo().total == SMALL_MEMTOTAL
    invariants(m)


@pytest.fixture
def noswap(machine_from_yaml, builtin_yaml):
    """The small machine built without any swap area."""
    text = builtin_yaml("small")
    lines = "swap:\n  - {name: /dev/vdb, size: 128M}\n"
    assert lines in text
    return machine_from_yaml(text.replace(lines, ""))


def test_without_swap_the_balloon_takes_only_free_memory_and_never_kills(noswap, invariants):
    """A 30 MiB process and no swap: reclaim has nothing to take, so the balloon gets the
    free pages down to the floors (MemFree 104 + 169) and stops; nobody is killed. When
    the process exits, the next ticks take its memory too, up to 13552."""
    m = noswap
    pid, a = hog(m, 30 * MIB, seed=1)
    free0 = m.meminfo().free
    assert free0 > 2048 * 2
    m.balloon_set_target(20000)
    m.step(5)
    assert m.balloon.actual == free0 - DMA_FLOOR - DMA32_FLOOR
    assert m.meminfo().free == DMA_FLOOR + DMA32_FLOOR
    assert m.has_pid(pid) and event(m, "oom_kill") == 0
    assert events(m, "pswpout", "zswpout") == {"pswpout": 0, "zswpout": 0}
    assert m.tasks.verify(pid, a, 30 * MIB, seed=1) == 0
    invariants(m)
    m.tasks.kill(pid)
    m.step(5)
    assert m.balloon.actual == MOST
    invariants(m)


# ---------------------------------------------------------------------------
# inflating under a workload: reclaim
# ---------------------------------------------------------------------------

def test_inflating_under_a_workload_reclaims_and_deflating_gives_the_memory_back(small, invariants):
    """A process writes 40 MiB (10240 pages): about 3560 pages stay free. A target of
    8192 pages can only be met by reclaim: the process's pages go to zswap and swap, still
    2048 a tick, and nobody is killed. Every page stays accounted: free + anon + page
    tables + zswap pool + balloon = 13825. Deflating (2048 a tick) gives the 8192 back:
    MemFree ends at least where it was before the inflate, and above it by no more than
    the anonymous pages reclaim pushed out."""
    m = small
    pid, a = hog(m, 40 * MIB, seed=3)
    mm = m.tasks.procs[pid].mm
    mi0 = m.meminfo()
    assert mm.rss == mi0.anon_pages == 10240 and mm.swap_ents == 0
    assert accounted(mi0) == SMALL_MEMTOTAL
    ev0 = dict(m.vmstat())
    assert ev0["pswpout"] == ev0["zswpout"] == 0

    m.balloon_set_target(8192)
    for want in (2048, 4096, 6144, 8192):
        m.step(1)
        assert m.balloon.actual == want
        mi = m.meminfo()
        assert mi.total == SMALL_MEMTOTAL and mi.balloon == want
        assert mi.swap_cached == 0 and accounted(mi) == SMALL_MEMTOTAL
    ev = dict(m.vmstat())
    mi1 = m.meminfo()
    assert ev["zswpout"] + ev["pswpout"] > 0, "the balloon pushed the guest into swap"
    assert ev["pgsteal_direct"] > 0 and ev["pgscan_direct"] >= ev["pgsteal_direct"]
    assert sum(v for k, v in ev.items() if k.startswith("allocstall_")) > 0
    assert mm.rss + mm.swap_ents == 10240, "every page resident or in swap"
    assert mm.swap_ents >= 8192 - mi0.free, "at least what the balloon could not find free"
    assert ev["oom_kill"] == 0 and m.has_pid(pid)
    assert ev["balloon_inflate"] == 8192
    invariants(m)

    m.balloon_set_target(0)
    for want in (6144, 4096, 2048, 0):
        m.step(1)
        assert m.balloon.actual == want
    mi2 = m.meminfo()
    assert mi2.total == SMALL_MEMTOTAL and mi2.balloon == 0
    assert mi2.swap_cached == 0 and accounted(mi2) == SMALL_MEMTOTAL
    reclaimed = mi0.anon_pages - mi2.anon_pages
    assert reclaimed > 0
    assert mi2.free - mi1.free >= 8192, "every balloon page came back"
    assert mi0.free <= mi2.free <= mi0.free + reclaimed
    assert event(m, "balloon_deflate") == 8192
    invariants(m)
    assert m.tasks.verify(pid, a, 40 * MIB, seed=3) == 0
    assert event(m, "pswpin") + event(m, "zswpin") > 0
    invariants(m)


def test_every_value_reads_back_while_the_balloon_is_inflated(small, invariants):
    m = small
    pid, a = hog(m, 40 * MIB, seed=5)
    m.balloon_set_target(8192)
    m.step(4)
    assert m.balloon.actual == 8192
    assert m.tasks.verify(pid, a, 40 * MIB, seed=5) == 0
    assert m.balloon.actual == 8192, "the process's swap-ins do not deflate the balloon"
    assert event(m, "oom_kill") == 0 and event(m, "balloon_deflate") == 0
    invariants(m)


def test_inflating_with_swap_full_stops_and_kills_nobody(small, invariants):
    """Only a 4 MiB swap file: a 40 MiB process and a target of 20000. Reclaim fills swap
    (and zswap's pool) for the balloon, then finds nothing more: the balloon stops short
    of its target, MemFree at the floors 104 + 169, swap full, nobody killed, every value
    intact."""
    m = small
    m.swapoff("/dev/vdb")
    m.swapon("/swapfile", 4 * MIB)
    pid, a = hog(m, 40 * MIB, seed=4)
    m.balloon_set_target(20000)
    m.step(3)
    stuck = m.balloon.actual
    assert 2048 < stuck < 20000
    m.step(5)
    assert m.balloon.actual == stuck
    mi = m.meminfo()
    assert mi.free == DMA_FLOOR + DMA32_FLOOR and mi.swap_free == 0
    assert event(m, "oom_kill") == 0 and m.has_pid(pid)
    assert not any("oom-killer" in x for x in kmsg(m))
    invariants(m)
    assert m.tasks.verify(pid, a, 40 * MIB, seed=4) == 0
    invariants(m)


TWO_NODES = ("    - {id: 0, start: 0, end: 32M, cpus: [0]}\n"
             "    - {id: 1, start: 32M, end: 64M, cpus: [1]}\n"
             "  distance: [[10, 21], [21, 10]]\n")


def test_balloon_pages_are_counted_on_the_node_they_come_from(machine_from_yaml, builtin_yaml,
                                                             invariants):
    """The small machine split into two nodes of 32 MiB. The driver allocates on node 0
    and falls back to node 1 once node 0's zones are at their low marks: node meminfo's
    Balloon and nr_balloon_pages split actual between the nodes, and each node's
    MemFree falls by exactly its share while its MemTotal stays."""
    text = builtin_yaml("small")
    one = "    - {id: 0, start: 0, end: 64M, cpus: [0]}\n"
    assert one in text and "  cpus: 1\n" in text
    m = machine_from_yaml(text.replace(one, TWO_NODES).replace("  cpus: 1\n", "  cpus: 2\n"))
    totals = [m.meminfo(n).total for n in (0, 1)]
    assert sum(totals) == m.meminfo().total and min(totals) > 4096
    m.balloon_set_target(totals[0] + 2048)
    m.step(2)
    assert [m.meminfo(n).balloon for n in (0, 1)] == [4096, 0], "node 0 first"
    m.step(4)
    actual = m.balloon.actual
    assert actual == totals[0] + 2048
    per_node = [m.meminfo(n).balloon for n in (0, 1)]
    assert per_node[1] > 2048 and sum(per_node) == actual == m.meminfo().balloon
    for n in (0, 1):
        mi = m.meminfo(n)
        assert (mi.total, mi.free) == (totals[n], totals[n] - per_node[n])
        assert dict(m.node_stats(n))["nr_balloon_pages"] == per_node[n]
    assert event(m, "nr_balloon_pages") == actual
    invariants(m)


# ---------------------------------------------------------------------------
# deflate on OOM
# ---------------------------------------------------------------------------

@pytest.fixture
def tiny_swap(small):
    """The small machine with only a 4 MiB swap file (1023 slots): RAM and swap run out
    soon."""
    small.swapoff("/dev/vdb")
    small.swapon("/swapfile", 4 * MIB)
    assert small.meminfo().swap_total == 1023
    return small


def test_deflate_on_oom_empties_the_balloon_before_the_oom_killer_kills(tiny_swap, invariants):
    """keeper (-1000) 8 MiB, the balloon 2048 pages, then grower writes 56 MiB: RAM (54 MiB)
    and swap (4 MiB) cannot hold 8 + 8 + 56. Before any kill the balloon gives back 256
    pages at a time, 2048 / 256 = 8 times; only when it is empty is grower (the worst,
    and the one faulting) killed. On the next tick the driver inflates again: the target
    still asks for 2048."""
    m = tiny_swap
    keeper, ka = hog(m, 8 * MIB, seed=1, name="keeper", oom_score_adj=-1000)
    m.balloon_set_target(2048)
    m.step(1)
    assert m.balloon.actual == 2048
    before = len(m.kmsg_lines())
    grower = m.tasks.spawn("grower")
    ga = m.tasks.mmap(grower, 56 * MIB, prot=RW)
    with pytest.raises(OutOfMemory, match=f"OOM killer chose {grower} \\(grower\\)"):
        m.tasks.fill(grower, ga, 56 * MIB, seed=2)
    lines = kmsg(m)[before:]
    released = [i for i, x in enumerate(lines)
                if x == "virtio_balloon virtio0: Out of memory: released 256 pages"]
    invoked = [i for i, x in enumerate(lines) if "invoked oom-killer" in x]
    killed = [i for i, x in enumerate(lines) if x.startswith("Out of memory: Killed process")]
    assert len(released) == 8
    assert len(invoked) == 1 and len(killed) == 1
    assert max(released) < invoked[0] < killed[0], "the balloon emptied before the killer ran"
    assert lines[killed[0]].startswith(f"Out of memory: Killed process {grower} (grower)")
    assert m.balloon.actual == 0
    assert events(m, "balloon_inflate", "balloon_deflate", "oom_kill") == {
        "balloon_inflate": 2048, "balloon_deflate": 2048, "oom_kill": 1}
    assert stats(m)["oom-kills"] == 1
    assert not m.has_pid(grower) and m.has_pid(keeper)
    invariants(m)

    m.step(1)
    assert m.balloon.actual == 2048, "the target still asks for 2048"
    assert event(m, "balloon_inflate") == 4096
    assert m.tasks.verify(keeper, ka, 8 * MIB, seed=1) == 0
    invariants(m)


def test_deflate_on_oom_alone_can_satisfy_the_allocation(tiny_swap, invariants):
    """The balloon holds 4096 pages (16 MiB); grower writes 44 MiB = 11264 pages. RAM left
    is 13825 - 4096 = 9729 pages, swap 1023 slots: at least 11264 - 9729 - 1023 = 512
    more pages are needed, so the balloon gives back at least 512 / 256 = 2 lots of 256
    (more, as zswap's pool and page tables take frames too), the allocation then
    succeeds, and nobody is killed."""
    m = tiny_swap
    m.balloon_set_target(4096)
    m.step(2)
    assert m.balloon.actual == 4096
    before = len(m.kmsg_lines())
    grower, ga = hog(m, 44 * MIB, seed=3, name="grower")
    lots = sum(x == "virtio_balloon virtio0: Out of memory: released 256 pages"
               for x in kmsg(m)[before:])
    assert 2 <= lots < 16
    assert m.balloon.actual == 4096 - 256 * lots
    assert event(m, "balloon_deflate") == 256 * lots
    assert event(m, "oom_kill") == 0 and m.has_pid(grower)
    assert not any("oom-killer" in x for x in kmsg(m)[before:])
    invariants(m)
    assert m.tasks.verify(grower, ga, 44 * MIB, seed=3) == 0
    invariants(m)


# ---------------------------------------------------------------------------
# page migration: memory offline
# ---------------------------------------------------------------------------

@pytest.fixture
def movable(small):
    """The small machine with block 32 (4 GiB, 32768 pages) probed and onlined movable:
    MemTotal 13825 + 32768 = 46593, MemFree 46593 - 512 (the block's memmap) = 46081."""
    i = small.memory_probe(4 << 30)
    assert i == 32
    small.memory_block_set(32, "online_movable")
    mi = small.meminfo()
    assert (mi.total, mi.free) == (46593, 46081)
    return small


def test_balloon_pages_migrate_when_their_memory_block_goes_offline(movable, invariants):
    """3000 balloon pages, all in the Movable block (first in the zonelist). Offlining it
    migrates each one below 4 GiB: balloon_migrate 3000, actual 3000, the frames
    still OFFLINE in kpageflags; MemTotal 13825, MemFree 13825 - 512 - 3000 = 10313."""
    m = movable
    m.balloon_set_target(3000)
    m.step(2)
    held = frames(m)
    assert held.size == 3000 and (held >= BLOCK32).all() and (held < BLOCK32 + 32768).all()
    assert m.meminfo().free == 46081 - 3000
    migrated = event(m, "pgmigrate_success")
    invariants(m)

    m.memory_block_set(32, "offline")
    moved = frames(m)
    assert m.balloon.actual == 3000 and m.balloon_view()["target"] == 3000
    assert (moved < BLOCK32).all(), "every balloon page now lies below 4 GiB"
    assert len(set(moved.tolist())) == 3000
    assert event(m, "balloon_migrate") == 3000
    assert event(m, "pgmigrate_success") - migrated == 3000
    assert events(m, "balloon_inflate", "balloon_deflate") == {"balloon_inflate": 3000,
                                                              "balloon_deflate": 0}
    mi = m.meminfo()
    assert (mi.total, mi.free, mi.balloon) == (SMALL_MEMTOTAL, 10313, 3000)
    assert event(m, "nr_balloon_pages") == 3000
    for pfn in moved[[0, 1499, 2999]]:
        assert kflags(m, pfn) & KPF_OFFLINE
    invariants(m)

    m.balloon_set_target(0)
    m.step(2)
    assert m.balloon.actual == 0 and m.meminfo().free == SMALL_MEMTOTAL - 512
    invariants(m)


def test_an_offline_without_room_for_the_balloon_pages_is_busy_and_changes_nothing(
        movable, invariants):
    """20000 balloon pages in the Movable block; below 4 GiB only 3840 - 65 + 9473 - 169 =
    13079 frames are free above the min marks: EBUSY, every page where it was."""
    m = movable
    m.balloon_set_target(20000)
    m.step(10)
    assert m.balloon.actual == 20000
    held = frames(m)
    assert (held >= BLOCK32).all()
    with pytest.raises(Busy, match="20000 pages to migrate"):
        m.memory_block_set(32, "offline")
    assert np.array_equal(frames(m), held)
    assert event(m, "balloon_migrate") == 0
    assert m.memory_block_view(32)["online"]
    mi = m.meminfo()
    assert (mi.total, mi.free, mi.balloon) == (46593, 46081 - 20000, 20000)
    invariants(m)


def test_a_soft_offlined_balloon_page_migrates_and_a_hard_offline_is_refused(small, invariants):
    """soft_offline_page migrates a balloon page like any movable page (balloon_migrate 1,
    actual unchanged, the old frame poisoned: HardwareCorrupted 1 page). A hard offline
    of a balloon page cannot be recovered: EBUSY, Ignored, nothing changes. Deflated,
    13825 - 1 poisoned frame are free."""
    m = small
    m.balloon_set_target(100)
    m.step(1)
    held = frames(m)
    with pytest.raises(Busy, match="recovery action for balloon page: Ignored"):
        m.offline_page(int(held[5]) << 12, hard=True)
    assert np.array_equal(frames(m), held) and m.meminfo().hardware_corrupted == 0
    invariants(m)
    m.offline_page(int(held[6]) << 12, hard=False)
    after = frames(m)
    assert m.balloon.actual == 100 and int(held[6]) not in after.tolist()
    assert np.array_equal(np.delete(after, 6), np.delete(held, 6))
    assert event(m, "balloon_migrate") == 1
    assert m.meminfo().hardware_corrupted == 1
    assert kflags(m, after[6]) & KPF_OFFLINE
    invariants(m)
    m.balloon_set_target(0)
    m.step(1)
    assert m.meminfo().free == SMALL_MEMTOTAL - 1
    invariants(m)


# ---------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------

def test_stats_of_an_idle_machine_worked_out_by_hand(small, invariants):
    """Fresh: free = total = 13825 pages = 56627200 bytes, available 13436 pages =
    55033856. After inflating 5000 pages: free 8825 pages = 36147200 bytes, available
    8825 - 389 = 8436 pages = 34553856 bytes; total unchanged; every count 0."""
    m = small
    zero = {k: 0 for k in STAT_NAMES}
    assert stats(m) == {**zero, "free-memory": 56627200, "total-memory": 56627200,
                        "available-memory": 55033856}
    m.balloon_set_target(5000)
    m.step(3)
    assert stats(m) == {**zero, "free-memory": 36147200, "total-memory": 56627200,
                        "available-memory": 34553856}
    invariants(m)


def test_stats_follow_vmstat_and_meminfo_under_reclaim(small, invariants):
    """After inflating under a workload and reading everything back: each statistic is
    its vmstat or meminfo figure, in bytes (x 4096) or as a count (virtio's units)."""
    m = small
    pid, a = hog(m, 40 * MIB, seed=9)
    m.balloon_set_target(8192)
    m.step(4)
    assert m.tasks.verify(pid, a, 40 * MIB, seed=9) == 0
    m.step(3)                                         # kswapd has its turn
    s = stats(m)
    ev = dict(m.vmstat())
    mi = m.meminfo()
    stalls = sum(v for k, v in ev.items() if k.startswith("allocstall_"))
    assert s == {
        "swap-in": ev["pswpin"] * PAGE, "swap-out": ev["pswpout"] * PAGE,
        "major-faults": ev["pgmajfault"], "minor-faults": ev["pgfault"],
        "free-memory": mi.free * PAGE, "total-memory": SMALL_MEMTOTAL * PAGE,
        "available-memory": mi.available * PAGE, "disk-caches": mi.file_pages * PAGE,
        "hugetlb-allocations": ev["htlb_buddy_alloc_success"],
        "hugetlb-failures": ev["htlb_buddy_alloc_fail"], "oom-kills": ev["oom_kill"],
        "alloc-stalls": stalls, "async-scans": ev["pgscan_kswapd"] * PAGE,
        "direct-scans": ev["pgscan_direct"] * PAGE,
        "async-reclaims": ev["pgsteal_kswapd"] * PAGE,
        "direct-reclaims": ev["pgsteal_direct"] * PAGE}
    # and the figures moved: this is a machine that swapped
    assert s["swap-out"] > 0 and s["swap-in"] > 0 and s["major-faults"] > 0
    assert s["minor-faults"] >= 10240, "every page of the area faulted once at least"
    assert s["direct-reclaims"] > 0 and s["direct-scans"] >= s["direct-reclaims"]
    assert s["alloc-stalls"] > 0 and s["oom-kills"] == 0
    assert s["free-memory"] % PAGE == 0 and s["free-memory"] < 8192 * PAGE
    invariants(m)


def test_free_page_reporting_every_two_seconds(small, invariants):
    """The first report is at 2 s (tick 200 at 10 ms a tick). Fresh, the free blocks of
    2 MiB and up are DMA 1 x 512 + 3 x 1024 and DMA32 1 x 512 + 9 x 1024 (buddyinfo):
    13312 pages, and they stay free."""
    m = small
    m.step(199)
    assert m.balloon_view()["reported"] == 0
    m.step(1)
    assert m.balloon_view()["reported"] == 13312
    assert m.meminfo().free == SMALL_MEMTOTAL
    blocks = sum(n << o for z in m.zoneinfo() for o, n in enumerate(z.free_by_order) if o >= 9)
    assert blocks == 13312
    invariants(m)
