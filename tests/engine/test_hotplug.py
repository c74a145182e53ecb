"""Memory hot-plug, page migration and faulty RAM on the small machine.

The small machine: 64 MiB of RAM in block 0 (DMA 3840 and DMA32 9985 managed
pages, MemTotal 13825), memory blocks of 128 MiB (32768 pages), struct page
64 bytes, so a block's memmap takes 32768 x 64 / 4096 = 512 pages, allocated
as KERNEL frames from memory already online when the block is added.
`memory_probe(4 GiB)` adds block 32 (pfns 0x100000-0x107fff, 1048576-1081343).

Parts: probe, online and offline with their accounting (MemTotal, the
zones' span/present/managed, min_free_kbytes, watermarks, lowmem protection,
zonelists); what offlining migrates (anonymous pages, swap-cache pages, page
cache, pages shared after fork, zswap's pool); the refusals (EBUSY and EINVAL,
which change nothing); DIMMs; faulty RAM (hard and soft page offlining, the
poisoned set across offline/online, fault injection).
"""
from __future__ import annotations

import numpy as np
import pytest

from engine import Machine, load
from engine.devices.memfail import AlreadyPoisoned
from engine.errors import Busy, Exists, Fault, InvalidArgument, IoError, NoDevice, TooBig
from engine.pmm.frames import DIRTY, SWAPCACHE, TYPE_MASK, PageType
from engine.pmm.zone import ZONE_MOVABLE
from engine.vmm import pte as P
from memfs.machines import builtin
from vmm_common import MIB, PAGE, RW, SMALL_MEMTOTAL, event, kcount

G = 1 << 30
BLOCK = 128 * MIB
BP = BLOCK // PAGE                      # 32768 pages a block
MEMMAP = BP * 64 // PAGE                # 512 pages of struct page a block
B32 = 32                                # the block memory_probe(4 GiB) adds
FREE_T, ANON_T, FILE_T, KERNEL_T = (int(PageType.FREE), int(PageType.ANON), int(PageType.FILE),
                                    int(PageType.KERNEL))
HWPOISON_T, OFFLINE_T = int(PageType.HWPOISON), int(PageType.OFFLINE)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def span(i):
    return i * BP, (i + 1) * BP


def in_block(i, pfn) -> bool:
    s, e = span(i)
    return s <= pfn < e


def probe(m, how=None, addr=4 * G) -> int:
    i = m.memory_probe(addr)
    if how:
        m.memory_block_set(i, how)
    return i


def pte(m, pid, va) -> int:
    t = m.vmm.leaf(m.tasks.procs[pid].mm, va)
    return 0 if t is None else t[(va >> 12) & 511]


def frame(m, pid, va) -> int:
    e = pte(m, pid, va)
    assert P.is_present(e), f"{va:#x} of {pid} is not mapped ({e:#x})"
    return P.pfn_of(e)


def frames(m, pid, a, pages) -> list[int]:
    return [frame(m, pid, a + k * PAGE) for k in range(pages)]


def types(m, i) -> dict:
    s, e = span(i)
    t = m.ft.flags_np()[s:e] & TYPE_MASK
    vals, counts = np.unique(t, return_counts=True)
    return {PageType(int(v)).name: int(c) for v, c in zip(vals, counts)}


def used_in(m, i) -> int:
    return BP - types(m, i).get("FREE", 0)


def zones(m) -> dict:
    """name -> (start_pfn, spanned, present, managed, min, low, high, protection) of every zone."""
    return {v.name: (v.start_pfn, v.spanned, v.present, v.managed, v.min, v.low, v.high,
                     tuple(v.protection)) for v in m.zoneinfo()}


def zonelist(m) -> list[str]:
    return [z.name for z in m.pmm.zonelist(0, ZONE_MOVABLE)]


def bview(m, i) -> dict | None:
    """A block's online, node, dimm and valid_zones (None: no such block)."""
    v = m.memory_block_view(i)
    return None if v is None else {k: v[k] for k in ("online", "node", "dimm", "valid_zones")}


def blocks(m) -> dict:
    return {i: bview(m, i) for i in m.hotplug_view()["blocks"]}


def state(m):
    """What a refused command may not change: meminfo, the zones (fields and free pages),
    the blocks, the poisoned set, migrations done, the type, flags and content of every
    frame in use, every page table, and each process's counts."""
    flags = m.ft.flags_np()
    used = (flags & TYPE_MASK) != FREE_T
    return (m.meminfo(), zones(m), [z.free_pages for z in m.zones], blocks(m), sorted(m.poisoned),
            event(m, "pgmigrate_success"), m.sysctl["min_free_kbytes"],
            np.flatnonzero(used).tobytes(), flags[used].tobytes(),
            m.ft.content_np()[used].tobytes(),
            {k: bytes(v) for k, v in m.vmm.tables.items()},
            sorted((p.pid, p.mm.rss, p.mm.swap_ents) for p in m.tasks.procs.values() if p.mm))


def proc(m, size, seed, name="p"):
    pid = m.tasks.spawn(name)
    a = m.tasks.mmap(pid, size, prot=RW)
    m.tasks.fill(pid, a, size, seed=seed)
    return pid, a


def pool(m) -> list[int]:
    return list(m.swap.zswap.frames)


# ---------------------------------------------------------------------------
# probe, online, offline: the accounting
# ---------------------------------------------------------------------------

BOOT_ZONES = {  # start, spanned, present, managed, min, low, high, protection
    "DMA": (1, 4095, 3998, 3840, 65, 81, 97, (0, 39, 39, 39, 39)),
    "DMA32": (4096, 12288, 12288, 9985, 169, 211, 253, (0, 0, 0, 0, 0)),
    "Normal": (0, 0, 0, 0, 0, 0, 0, (0, 0, 0, 0, 0)),
    "Movable": (0, 0, 0, 0, 0, 0, 0, (0, 0, 0, 0, 0)),
    "Device": (0, 0, 0, 0, 0, 0, 0, (0, 0, 0, 0, 0)),
}


def test_the_small_machine_boots_with_one_block(small, invariants):
    """min_free_kbytes = isqrt(16 x 13825 x 4) = isqrt(884800) = 940, 235 pages: DMA min
    235 x 3840 // 13825 = 65, DMA32 235 x 9985 // 13825 = 169; low and high add
    max(min/4, managed/1000) each (16 and 42); DMA protects 9985 // 256 = 39."""
    m = small
    view = m.hotplug_view()
    assert (view["block_size"], view["auto_online"], view["blocks"]) == (BLOCK, "offline", [0])
    assert bview(m, 0) == {"online": True, "node": 0, "dimm": None,
                                      "valid_zones": "none"}        # it spans DMA and DMA32
    assert bview(m, 1) is None
    assert m.meminfo().total == SMALL_MEMTOTAL and m.sysctl["min_free_kbytes"] == 940
    assert zones(m) == BOOT_ZONES
    assert zonelist(m) == ["DMA32", "DMA"]
    invariants(m)


def test_probe_adds_an_offline_block_whose_memmap_comes_from_online_memory(small, invariants):
    m = small
    free = m.meminfo().free
    assert m.memory_probe(4 * G) == B32
    assert bview(m, B32) == {"online": False, "node": 0, "dimm": None,
                                        "valid_zones": "Normal Movable"}
    assert m.hotplug_view()["blocks"] == [0, B32]
    mi = m.meminfo()
    assert mi.total == SMALL_MEMTOTAL                   # nothing usable yet
    assert mi.free == free - MEMMAP                     # 512 pages of struct page
    memmap = list(m.hotplug.blocks[B32].memmap)
    assert len(memmap) == len(set(memmap)) == MEMMAP
    assert all(m.ft.flags[p] & TYPE_MASK == KERNEL_T and p < 16384 for p in memmap)
    assert types(m, B32) == {"OFFLINE": BP}
    assert zones(m) == BOOT_ZONES                        # no zone holds it
    assert (0, 4 * G, 4 * G + BLOCK - 1, "System RAM") in m.iomem()
    assert "memory: probe [mem 0x0000000100000000-0x0000000107ffffff] node 0" in m.kmsg_lines()[-1]
    invariants(m)


def test_online_kernel_puts_the_block_in_normal(small, invariants):
    """MemTotal 13825 + 32768 = 46593; min_free_kbytes = isqrt(16 x 46593 x 4) = 1726 (431
    pages): DMA min 431 x 3840 // 46593 = 35 (gap 8), DMA32 431 x 9985 // 46593 = 92 (gap 23),
    Normal 431 x 32768 // 46593 = 303 (gap 75). Protection: DMA against Normal
    (9985 + 32768) // 256 = 167, DMA32 32768 // 256 = 128. CommitLimit 46593 // 2 + 32767."""
    m = small
    i = probe(m)
    free = m.meminfo().free
    m.memory_block_set(i, "online_kernel")
    mi = m.meminfo()
    assert mi.total == SMALL_MEMTOTAL + BP == 46593
    assert mi.free == free + BP
    assert mi.commit_limit == 46593 // 2 + 32767
    assert m.sysctl["min_free_kbytes"] == 1726
    assert zones(m) == {
        "DMA": (1, 4095, 3998, 3840, 35, 43, 51, (0, 39, 167, 167, 167)),
        "DMA32": (4096, 12288, 12288, 9985, 92, 115, 138, (0, 0, 128, 128, 128)),
        "Normal": (1 << 20, BP, BP, BP, 303, 378, 453, (0, 0, 0, 0, 0)),
        "Movable": BOOT_ZONES["Movable"], "Device": BOOT_ZONES["Device"]}
    assert zonelist(m) == ["Normal", "DMA32", "DMA"]
    assert m.memory_block_view(i)["online"] and m.memory_block_view(i)["valid_zones"] == "Normal"
    assert types(m, i) == {"FREE": BP}
    invariants(m)


def test_online_movable_puts_the_block_in_movable(small, invariants):
    """Movable memory is not lowmem: min_free_kbytes stays 940 and DMA/DMA32 keep their
    marks; Movable's min is clamp(32768 // 1024, 32, 128) = 32, gap max(8, 32) = 32.
    Protection against Movable: DMA (9985 + 32768) // 256 = 167, DMA32 128."""
    m = small
    i = probe(m, "online_movable")
    assert m.meminfo().total == 46593 and m.sysctl["min_free_kbytes"] == 940
    assert zones(m) == {
        "DMA": (1, 4095, 3998, 3840, 65, 81, 97, (0, 39, 39, 167, 167)),
        "DMA32": (4096, 12288, 12288, 9985, 169, 211, 253, (0, 0, 0, 128, 128)),
        "Normal": BOOT_ZONES["Normal"],
        "Movable": (1 << 20, BP, BP, BP, 32, 64, 96, (0, 0, 0, 0, 0)),
        "Device": BOOT_ZONES["Device"]}
    assert zonelist(m) == ["Movable", "DMA32", "DMA"]
    assert m.memory_block_view(i)["valid_zones"] == "Movable"
    invariants(m)


@pytest.mark.parametrize("how", ["online_kernel", "online_movable", "online", "1"])
def test_offline_gives_everything_back_and_online_again_gives_the_same(small, invariants, how):
    m = small
    i = probe(m)
    after_probe = (m.meminfo(), zones(m), m.sysctl["min_free_kbytes"], zonelist(m))
    m.memory_block_set(i, how)
    online = (m.meminfo(), zones(m), m.sysctl["min_free_kbytes"], zonelist(m), blocks(m))
    assert online[0].total == 46593
    m.memory_block_set(i, "offline" if how != "1" else "0")
    assert (m.meminfo(), zones(m), m.sysctl["min_free_kbytes"], zonelist(m)) == after_probe
    assert types(m, i) == {"OFFLINE": BP}
    assert m.memory_block_view(i)["online"] is False
    assert m.kmsg_lines()[-1].endswith("Offlined Pages 32768")
    invariants(m)
    m.memory_block_set(i, how)                        # re-online
    assert (m.meminfo(), zones(m), m.sysctl["min_free_kbytes"], zonelist(m), blocks(m)) == online
    invariants(m)


def test_online_and_offline_through_the_online_file_are_idempotent(small, invariants):
    m = small
    i = probe(m)
    m.memory_block_set(i, "0")                        # already offline: no error, no change
    assert m.meminfo().total == SMALL_MEMTOTAL
    m.memory_block_set(i, "1")                        # default zone: Normal (kernel zone first)
    m.memory_block_set(i, "1")
    assert m.memory_block_view(i)["valid_zones"] == "Normal" and m.meminfo().total == 46593
    invariants(m)


def test_a_block_below_4g_joins_dma32_and_leaves_it_again(small, invariants):
    """Block 1 (128-256 MiB) lies below 4 GiB: its kernel zone is DMA32. Online, DMA32 spans
    pfn 4096 to 65536 (61440 pages, the 64-128 MiB hole included), 12288 + 32768 = 45056
    present, 9985 + 32768 = 42753 managed, min 431 x 42753 // 46593 = 395, gap 98."""
    m = small
    i = probe(m, addr=BLOCK)
    assert i == 1 and m.memory_block_view(i)["valid_zones"] == "DMA32 Movable"
    m.memory_block_set(i, "online")
    assert zones(m)["DMA32"] == (4096, 61440, 45056, 42753, 395, 493, 591, (0, 0, 0, 0, 0))
    assert zones(m)["DMA"][4] == 431 * 3840 // 46593
    assert zonelist(m) == ["DMA32", "DMA"]
    m.memory_block_set(i, "offline")                  # the span shrinks back
    assert zones(m)["DMA32"] == BOOT_ZONES["DMA32"]
    invariants(m)


def test_offlining_a_block_in_the_middle_of_a_zone_keeps_its_span(small, invariants):
    """Normal over blocks 32-34; block 33 offline leaves a hole: spanned 3 x 32768 = 98304,
    present 65536. With 32 offline too, Normal starts at block 34 (pfn 0x110000). (All
    three are probed first: a block probed later would take its memmap from Normal.)"""
    m = small
    for k in range(3):
        probe(m, addr=4 * G + k * BLOCK)
    for i in (32, 33, 34):
        m.memory_block_set(i, "online_kernel")
    m.memory_block_set(33, "offline")
    start, spanned, present, managed = zones(m)["Normal"][:4]
    assert (start, spanned, present, managed) == (1 << 20, 98304, 65536, 65536)
    # in the hole only the kernel zone fits: Movable would cross Normal
    assert m.memory_block_view(33)["valid_zones"] == "Normal"
    with pytest.raises(InvalidArgument, match="cross another zone"):
        m.memory_block_set(33, "online_movable")
    m.memory_block_set(32, "offline")
    assert zones(m)["Normal"][:4] == (0x110000, BP, BP, BP)
    assert [m.memory_block_view(i)["valid_zones"] for i in (32, 33, 34)] == \
        ["Normal Movable", "Normal Movable", "Normal"]
    invariants(m)


def test_a_zone_spanning_an_offline_block_passes_the_invariants(small, invariants):
    m = small
    for k in range(3):
        probe(m, addr=4 * G + k * BLOCK)
    for i in (32, 33, 34):
        m.memory_block_set(i, "online_kernel")
    m.memory_block_set(33, "offline")
    assert zones(m)["Normal"][:4] == (1 << 20, 98304, 65536, 65536)
    invariants(m)


def test_block_state_errors_change_nothing(small, invariants):
    m = small
    i = probe(m)
    before = state(m)
    for index, how, error, text in [
            (0, "offline", InvalidArgument, "spans more than one zone"),
            (i, "offline", InvalidArgument, "already offline"),
            (i, "bogus", InvalidArgument, "state takes online"),
            (99, "online", InvalidArgument, "no such memory block")]:
        with pytest.raises(error, match=text):
            m.memory_block_set(index, how)
        assert state(m) == before
    m.memory_block_set(i, "online_movable")
    before = state(m)
    for how in ("online", "online_kernel", "online_movable"):
        with pytest.raises(InvalidArgument, match="already online"):
            m.memory_block_set(i, how)
    assert state(m) == before
    invariants(m)


def test_probe_refuses_what_cannot_be_a_new_block(small, invariants):
    m = small
    before = state(m)
    for addr, error, text in [(0, Exists, "memory0 .* already present"),
                              (4 * G + PAGE, InvalidArgument, "not aligned"),
                              (3 * G, Exists, "PCI window"),
                              (1 << 40, TooBig, "beyond")]:
        with pytest.raises(error, match=text):
            m.memory_probe(addr)
        assert state(m) == before
    probe(m)
    before = state(m)
    with pytest.raises(Exists, match="memory32"):
        m.memory_probe(4 * G)
    assert state(m) == before
    invariants(m)


def test_auto_online_onlines_what_is_probed(small, invariants):
    m = small
    with pytest.raises(InvalidArgument):
        m.set_auto_online("sometimes")
    m.set_auto_online("online_movable")
    assert m.hotplug_view()["auto_online"] == "online_movable"
    i = m.memory_probe(4 * G)
    assert m.memory_block_view(i)["online"] and m.memory_block_view(i)["valid_zones"] == "Movable"
    assert m.meminfo().total == 46593
    invariants(m)


def test_min_free_kbytes_set_by_hand_stays(small, invariants):
    m = small
    m.sysctl_write("min_free_kbytes", "2000")
    probe(m, "online_kernel")
    assert m.sysctl["min_free_kbytes"] == 2000
    # 500 pages over 46593 managed: Normal's share 500 x 32768 // 46593 = 351
    assert zones(m)["Normal"][4] == 500 * BP // 46593
    invariants(m)


@pytest.mark.parametrize("how", ["probe", "dimm"])
def test_an_auto_online_that_cannot_be_done_is_refused_whole_or_leaves_the_block_offline(
        small, invariants, how):
    """Normal at 4 GiB and Movable at 4.125 GiB: a block at 4.25 GiB (the next DIMM's
    place) or at 8 GiB cannot join Normal, whose span would then cross Movable. Either the
    command fails and nothing changed, or (as Linux does) it succeeds and leaves the new
    block offline."""
    m = small
    probe(m, "online_kernel")
    probe(m, "online_movable", addr=4 * G + BLOCK)
    before = state(m)
    try:
        if how == "probe":
            m.set_auto_online("online_kernel")
            before = state(m)
            new = [m.memory_probe(8 * G)]
        else:
            d = m.dimm_add(BLOCK, online="online_kernel")
            new = m.hotplug.dimms[d]
    except InvalidArgument:
        assert state(m) == before, "refused, yet the block was added"
    else:
        assert all(not m.memory_block_view(i)["online"] for i in new)
    invariants(m)


# ---------------------------------------------------------------------------
# offline migrates every page
# ---------------------------------------------------------------------------

def test_anonymous_pages_prefer_the_new_block_and_offline_migrates_them(small, invariants):
    """The process exists before the block is onlined, so its stack and page tables are
    elsewhere; its 4096 written pages go to the highest zone, Movable. Offlining moves
    all 4096 (pgmigrate_success), frees nothing and loses nothing: free drops by exactly
    the block's 32768 frames."""
    m = small
    pid = m.tasks.spawn("p")
    i = probe(m, "online_movable")
    a = m.tasks.mmap(pid, 16 * MIB, prot=RW)
    m.tasks.fill(pid, a, 16 * MIB, seed=5)
    assert all(in_block(i, f) for f in frames(m, pid, a, 4096))
    assert types(m, i) == {"ANON": 4096, "FREE": BP - 4096}
    mi = m.meminfo()
    ev = event(m, "pgmigrate_success")
    m.memory_block_set(i, "offline")
    assert event(m, "pgmigrate_success") - ev == 4096
    after = m.meminfo()
    assert after.total == SMALL_MEMTOTAL and after.free == mi.free - BP
    assert (after.anon_pages, after.active_anon + after.inactive_anon) == \
        (mi.anon_pages, mi.active_anon + mi.inactive_anon)
    assert not any(in_block(i, f) for f in frames(m, pid, a, 4096))
    assert m.proc_view(pid).rss_anon == 4096 + 1 and m.tasks.procs[pid].mm.swap_ents == 0
    assert types(m, i) == {"OFFLINE": BP}
    invariants(m)
    assert m.tasks.verify(pid, a, 16 * MIB, seed=5) == 0
    invariants(m)


def test_swap_cache_pages_move_with_their_slots(small, invariants):
    """p fills 1024 pages and forks c (they share them); a 60 MiB hog pushes them out to
    swap; the hog dies; the Movable block comes online and p reads its pages back: they
    come into the swap cache (c still holds every slot) in the new block. p unmaps the first
    half: 512 swap-cache pages nobody maps. Offlining moves all 1024 with their slots; c
    then finds every page in the swap cache: no swap-in from device or pool."""
    m = small
    pid, a = proc(m, 4 * MIB, seed=3)
    child = m.tasks.fork(pid)
    hog, _ = proc(m, 60 * MIB, seed=4, name="hog")
    assert m.tasks.procs[pid].mm.swap_ents >= 1024
    m.tasks.kill(hog)
    i = probe(m, "online_movable")
    assert m.tasks.verify(pid, a, 4 * MIB, seed=3) == 0
    s, e = span(i)
    fl = m.ft.flags_np()
    cached = np.flatnonzero(((fl[s:e] & TYPE_MASK) == ANON_T) & ((fl[s:e] & SWAPCACHE) != 0)) + s
    assert cached.size == 1024
    m.tasks.munmap(pid, a, 2 * MIB)
    mc = m.ft.mapcount_np()
    assert int(np.count_nonzero(mc[cached] == 0)) == 512
    swap_cached, swap_free = m.meminfo().swap_cached, m.meminfo().swap_free
    ev = event(m, "pgmigrate_success")
    m.memory_block_set(i, "offline")
    assert event(m, "pgmigrate_success") - ev == 1024
    assert (m.meminfo().swap_cached, m.meminfo().swap_free) == (swap_cached, swap_free)
    invariants(m)
    swapin = event(m, "pswpin") + event(m, "zswpin")
    assert m.tasks.verify(child, a, 4 * MIB, seed=3) == 0
    assert event(m, "pswpin") + event(m, "zswpin") == swapin       # all from the swap cache
    assert m.tasks.verify(pid, a + 2 * MIB, 2 * MIB, seed=3) == 0
    assert not any(in_block(i, f) for f in frames(m, child, a, 1024))
    invariants(m)


def test_page_cache_moves_mapped_or_not_and_dirty_stays_dirty(small, invariants):
    """/data has 8 pages whose disk holds 1000..1007. p maps it shared, reads every page
    and writes 104..107 into pages 4-7, then unmaps pages 2-3 and 6-7: the cache holds two
    mapped clean, two unmapped clean, two mapped dirty and two unmapped dirty pages, all in
    the Movable block. After offline: the same 8 cached, the same 4 dirty, 2 mappings."""
    m = small
    pid = m.tasks.spawn("p")
    i = probe(m, "online_movable")
    m.tasks.create_file("/data", 8 * PAGE)
    f = m.vmm.files["/data"]
    f.disk[:] = np.arange(1000, 1008, dtype=np.uint64)
    v = m.tasks.mmap(pid, 8 * PAGE, prot=RW, shared=True, file="/data")
    assert [m.tasks.read(pid, v + k * PAGE) for k in range(8)] == list(range(1000, 1008))
    for k in range(4, 8):
        m.tasks.write(pid, v + k * PAGE, 100 + k)
    m.tasks.munmap(pid, v + 2 * PAGE, 2 * PAGE)
    m.tasks.munmap(pid, v + 6 * PAGE, 2 * PAGE)
    old = f.cache.tolist()
    assert all(in_block(i, p) for p in old)
    row = next(r for r in m.files() if r[0] == "/data")
    assert row == ("/data", 8 * PAGE, 8, 4, 2)         # two VMAs: pages 0-1 and 4-5
    mi = m.meminfo()
    m.memory_block_set(i, "offline")
    new = f.cache.tolist()
    assert not any(in_block(i, p) for p in new) and -1 not in new
    assert next(r for r in m.files() if r[0] == "/data") == row
    after = m.meminfo()
    assert (after.cached, after.dirty, after.mapped) == (mi.cached, mi.dirty, mi.mapped)
    fl = m.ft.flags_np()
    assert [bool(fl[p] & DIRTY) for p in new] == [False] * 4 + [True] * 4
    assert [int(m.ft.mapcount[p]) for p in new] == [1, 1, 0, 0, 1, 1, 0, 0]
    assert [frame(m, pid, v + k * PAGE) for k in (0, 1, 4, 5)] == [new[k] for k in (0, 1, 4, 5)]
    assert f.disk.tolist() == list(range(1000, 1008))             # nothing written back
    invariants(m)
    q = m.tasks.spawn("q")
    w = m.tasks.mmap(q, 8 * PAGE, prot=RW, shared=True, file="/data")
    assert [m.tasks.read(q, w + k * PAGE) for k in range(8)] == \
        [1000, 1001, 1002, 1003, 104, 105, 106, 107]
    assert [frame(m, q, w + k * PAGE) for k in range(8)] == new  # read from the moved cache
    invariants(m)


def test_pages_shared_after_fork_move_for_both_processes(small, invariants):
    m = small
    pid = m.tasks.spawn("p")
    i = probe(m, "online_movable")
    a = m.tasks.mmap(pid, 64 * PAGE, prot=RW)
    m.tasks.fill(pid, a, 64 * PAGE, seed=9)
    child = m.tasks.fork(pid)
    old = frames(m, pid, a, 64)
    assert frames(m, child, a, 64) == old and all(in_block(i, f) for f in old)
    m.memory_block_set(i, "offline")
    new = frames(m, pid, a, 64)
    assert frames(m, child, a, 64) == new                       # one frame, both see it
    assert not any(in_block(i, f) for f in new)
    assert all(kcount(m, f) == 2 for f in new)
    invariants(m)
    assert m.tasks.verify(pid, a, 64 * PAGE, seed=9) == 0
    assert m.tasks.verify(child, a, 64 * PAGE, seed=9) == 0
    m.tasks.write(child, a, 12345)                              # copy-on-write still works
    assert m.tasks.read(pid, a) != 12345 and m.tasks.read(child, a) == 12345
    assert frame(m, child, a) != frame(m, pid, a) == new[0]
    invariants(m)


def test_zswap_pool_frames_in_a_normal_block_move_with_their_owner(small, invariants):
    """p fills 2048 pages before the block comes online (page tables and all below
    4 GiB); then Normal is the first zone of a kernel allocation, and a resident-set
    limit of 64 frames pushes p's pages into zswap: the pool's frames (KERNEL frames whose
    rmap names zswap and their place in the pool) are taken from the block. Offline moves
    every one of them; the pool keeps its size and p reads every value back."""
    m = small
    i = probe(m)
    pid, a = proc(m, 8 * MIB, seed=3)
    m.memory_block_set(i, "online_kernel")
    m.tasks.limit(pid, 64, "lru")
    m.step(5)
    held = pool(m)
    here = [f for f in held if in_block(i, f)]
    assert len(here) > 100 and m.meminfo().zswapped > 1000
    assert all(m.ft.flags[f] & TYPE_MASK == KERNEL_T for f in here)
    assert types(m, i)["KERNEL"] == len(here)         # the pool's frames, and p's faulted pages
    used = used_in(m, i)
    ev = event(m, "pgmigrate_success")
    m.memory_block_set(i, "offline")
    assert event(m, "pgmigrate_success") - ev == used
    assert len(pool(m)) == len(held) and not any(in_block(i, f) for f in pool(m))
    assert m.meminfo().zswap == len(held)
    invariants(m)
    m.tasks.limit(pid, 0)
    assert m.tasks.verify(pid, a, 8 * MIB, seed=3) == 0
    invariants(m)


def test_zswap_pool_frames_may_live_in_a_movable_block(small, invariants):
    m = small
    i = probe(m)
    pid, a = proc(m, 8 * MIB, seed=3)
    m.memory_block_set(i, "online_movable")
    m.tasks.limit(pid, 64, "lru")
    m.step(5)
    assert m.meminfo().zswapped > 1000
    here = [f for f in pool(m) if in_block(i, f)]
    assert here, "no zswap pool frame in the Movable block, the first zone of the zonelist"
    m.memory_block_set(i, "offline")
    assert not any(in_block(i, f) for f in pool(m))
    invariants(m)


@pytest.mark.parametrize("how", ["offline", "soft_offline"])
def test_a_prot_none_page_migrates_and_comes_back_intact(small, invariants, how):
    m = small
    pid = m.tasks.spawn("p")
    i = probe(m, "online_movable")
    a = m.tasks.mmap(pid, 8 * PAGE, prot=RW)
    m.tasks.fill(pid, a, 8 * PAGE, seed=5)
    m.tasks.mprotect(pid, a, 4 * PAGE, 0)
    old = frame(m, pid, a)
    assert in_block(i, old)
    if how == "offline":
        m.memory_block_set(i, "offline")
    else:
        m.offline_page(old << 12, hard=False)
    e = pte(m, pid, a)
    assert e & P.PROTNONE and not e & P.P
    new = P.pfn_of(e)
    assert new < m.ft.max_pfn, f"the PROT_NONE entry {e:#x} names pfn {new:#x}, beyond RAM"
    assert new != old and m.ft.flags[new] & TYPE_MASK == ANON_T and kcount(m, new) == 1
    invariants(m)
    m.tasks.mprotect(pid, a, 4 * PAGE, RW)
    assert m.tasks.verify(pid, a, 8 * PAGE, seed=5) == 0
    invariants(m)


# ---------------------------------------------------------------------------
# refusals: EBUSY and EINVAL change nothing
# ---------------------------------------------------------------------------

def test_an_unmovable_frame_makes_offline_busy_and_changes_nothing(small, invariants):
    """A driver's frame (palloc zone=Normal) in the Normal block: offline fails with EBUSY
    before anything moves, though q's pages there could. Once the frame is freed and q has
    gone (its page tables sat in the block too), offline succeeds."""
    m = small
    p, a = proc(m, 1 * MIB, seed=1)
    i = probe(m, "online_kernel")
    runs = m.palloc(zone="Normal")
    assert in_block(i, runs[0][0])
    q, b = proc(m, 1 * MIB, seed=2, name="q")
    assert all(in_block(i, f) for f in frames(m, q, b, 256))
    before = state(m)
    with pytest.raises(Busy, match="cannot be migrated"):
        m.memory_block_set(i, "offline")
    assert state(m) == before
    assert m.memory_block_view(i)["online"]
    assert m.tasks.verify(p, a, MIB, seed=1) == 0 and m.tasks.verify(q, b, MIB, seed=2) == 0
    invariants(m)
    m.pfree(runs)
    m.tasks.kill(q)
    m.memory_block_set(i, "offline")
    assert m.meminfo().total == SMALL_MEMTOTAL
    invariants(m)


def test_without_room_elsewhere_offline_is_busy_and_changes_nothing(small, invariants):
    """20000 pages in the Movable block; below 4 GiB about 12800 frames are free: no room."""
    m = small
    pid = m.tasks.spawn("p")
    i = probe(m, "online_movable")
    a = m.tasks.mmap(pid, 20000 * PAGE, prot=RW)
    m.tasks.fill(pid, a, 20000 * PAGE, seed=1)
    assert used_in(m, i) == 20000
    before = state(m)
    with pytest.raises(Busy, match="20000 pages to migrate but only"):
        m.memory_block_set(i, "offline")
    assert state(m) == before
    invariants(m)
    m.tasks.munmap(pid, a, 12000 * PAGE)              # 8000 left: now there is room
    m.memory_block_set(i, "offline")
    assert m.tasks.verify(pid, a + 12000 * PAGE, 8000 * PAGE, seed=1) == 0
    invariants(m)


def _half_way(m):
    """p writes 2000 pages into the Movable block; then a driver takes frames below 4 GiB
    (palloc) until DMA and DMA32 hold exactly 2132 free frames above their min marks. The
    room check counts those less Movable's min of 32: 2100, room for 2000. But a frame for a
    movable page must also leave DMA's protection against Movable, (9985 + 32768) // 256 =
    167, and DMA32's, 32768 // 256 = 128: at most 2132 - 295 = 1837 can be had."""
    i = probe(m)
    pid = m.tasks.spawn("p")
    m.memory_block_set(i, "online_movable")
    a = m.tasks.mmap(pid, 2000 * PAGE, prot=RW)
    m.tasks.fill(pid, a, 2000 * PAGE, seed=1)
    assert used_in(m, i) == 2000
    low = m.zones[:2]
    runs = m.palloc(count=sum(z.free_pages - z.wmark_min for z in low) - 2132)
    assert sum(z.free_pages - z.wmark_min for z in low) == 2132
    assert [z.lowmem_reserve[ZONE_MOVABLE] for z in low] == [167, 128]
    can = sum(max(0, z.free_pages - z.wmark_min - z.lowmem_reserve[ZONE_MOVABLE]) for z in low)
    assert can < 2000
    return i, runs, (pid, a)


def test_an_offline_that_runs_out_of_room_half_way_loses_nothing(small, invariants):
    """The room check counts what the allocator can really give (above min and the lower
    zones' protection against Movable), so the offline is refused before a page moves:
    the block stays online, nothing is lost; with the driver's frames freed it goes."""
    m = small
    i, runs, (pid, a) = _half_way(m)
    with pytest.raises(Busy, match=r"2000 pages to migrate but only \d+ frames free"):
        m.memory_block_set(i, "offline")
    assert m.memory_block_view(i)["online"] and m.meminfo().total == 46593
    invariants(m)
    assert m.tasks.verify(pid, a, 2000 * PAGE, seed=1) == 0
    invariants(m)
    m.pfree(runs)
    m.memory_block_set(i, "offline")
    assert m.tasks.verify(pid, a, 2000 * PAGE, seed=1) == 0
    invariants(m)


def test_an_offline_without_room_is_refused_before_anything_moves(small, invariants):
    m = small
    i, _, (pid, a) = _half_way(m)
    before = state(m)
    with pytest.raises(Busy):
        m.memory_block_set(i, "offline")
    assert state(m) == before


# ---------------------------------------------------------------------------
# DIMMs
# ---------------------------------------------------------------------------

def test_a_dimm_comes_and_goes(small, invariants):
    """A 256 MiB DIMM: blocks 32 and 33 at 4 GiB, 1024 memmap pages. Online Movable, a
    process writes 4096 pages into it; removal migrates each of them once (no page of block
    32 moves into block 33, which goes offline with it) and gives back every frame."""
    m = small
    free = m.meminfo().free
    d = m.dimm_add(2 * BLOCK)
    assert d == 0 and m.hotplug.dimms == {0: [32, 33]}
    assert blocks(m)[33] == {"online": False, "node": 0, "dimm": 0,
                             "valid_zones": "Normal Movable"}
    assert m.meminfo().free == free - 2 * MEMMAP and m.meminfo().total == SMALL_MEMTOTAL
    assert (0, 4 * G, 4 * G + 2 * BLOCK - 1, "System RAM") in m.iomem()
    assert "memory: dimm0 hot-added [mem 0x0000000100000000-0x000000010fffffff] node 0, " \
           "memory32-memory33" in m.kmsg_lines()[-1]
    pid = m.tasks.spawn("p")
    for i in (32, 33):
        m.memory_block_set(i, "online_movable")
    assert m.meminfo().total == SMALL_MEMTOTAL + 2 * BP
    a = m.tasks.mmap(pid, 16 * MIB, prot=RW)
    m.tasks.fill(pid, a, 16 * MIB, seed=4)
    assert all(in_block(32, f) or in_block(33, f) for f in frames(m, pid, a, 4096))
    before = m.meminfo()
    ev = event(m, "pgmigrate_success")
    moved = m.dimm_remove(d)
    assert moved == event(m, "pgmigrate_success") - ev == 4096
    assert m.hotplug.dimms == {} and m.hotplug_view()["blocks"] == [0]
    mi = m.meminfo()
    assert mi.total == SMALL_MEMTOTAL and mi.free == before.free - 2 * BP + 2 * MEMMAP
    assert zones(m) == BOOT_ZONES and zonelist(m) == ["DMA32", "DMA"]
    assert not [r for r in m.iomem() if r[1] >= 4 * G]
    assert m.kmsg_lines()[-1].endswith(f"memory: dimm0 removed (memory32-memory33, {moved} "
                                       f"pages migrated)")
    invariants(m)
    assert m.tasks.verify(pid, a, 16 * MIB, seed=4) == 0
    # the place is free again; ids are not reused
    assert m.dimm_add(BLOCK, online="online_movable") == 1
    assert m.hotplug.dimms == {1: [32]} and m.meminfo().total == SMALL_MEMTOTAL + BP
    invariants(m)


def test_dimm_commands_check_their_arguments(small, invariants):
    m = small
    before = state(m)
    with pytest.raises(InvalidArgument, match="whole number of memory blocks"):
        m.dimm_add(100 * MIB)
    with pytest.raises(InvalidArgument, match="nodes 0-0"):
        m.dimm_add(BLOCK, node=1)
    with pytest.raises(InvalidArgument, match="online=sometimes"):
        m.dimm_add(BLOCK, online="sometimes")
    with pytest.raises(InvalidArgument, match="no DIMM 7"):
        m.dimm_remove(7)
    assert state(m) == before
    invariants(m)


def test_a_dimm_whose_second_block_cannot_go_stays_with_both_blocks_as_they_were(
        small, invariants):
    """Block 32 Movable with p's 1024 pages, block 33 Normal with a driver's frame: the
    removal checks both blocks before anything moves, so 33's frame refuses it with EBUSY
    and nothing changes: both blocks online, p's pages where they were, no page migrated."""
    m = small
    pid = m.tasks.spawn("p")
    d = m.dimm_add(2 * BLOCK)
    m.memory_block_set(32, "online_movable")
    m.memory_block_set(33, "online_kernel")
    runs = m.palloc(zone="Normal")
    assert in_block(33, runs[0][0])
    a = m.tasks.mmap(pid, 4 * MIB, prot=RW)
    m.tasks.fill(pid, a, 4 * MIB, seed=1)
    assert all(in_block(32, f) for f in frames(m, pid, a, 1024))
    where = frames(m, pid, a, 1024)
    before = (state(m), zonelist(m), m.kmsg_lines())
    with pytest.raises(Busy, match="dimm remove: dimm0 stays: .*cannot be migrated"):
        m.dimm_remove(d)
    assert (state(m), zonelist(m), m.kmsg_lines()) == before
    assert m.hotplug.dimms == {0: [32, 33]}
    assert frames(m, pid, a, 1024) == where
    invariants(m)
    assert m.tasks.verify(pid, a, 4 * MIB, seed=1) == 0
    m.pfree(runs)
    m.tasks.kill(pid)                                     # its page tables were in 33
    m.dimm_remove(d)
    assert m.meminfo().total == SMALL_MEMTOTAL and zones(m) == BOOT_ZONES
    invariants(m)


def _in_use(m, blocks_) -> int:
    """Frames of the blocks holding something (neither free nor offline), from the frame
    table."""
    return sum(BP - types(m, i).get("FREE", 0) - types(m, i).get("OFFLINE", 0) for i in blocks_)


def test_removing_a_dimm_migrates_each_page_it_holds_exactly_once(small, invariants):
    """A 256 MiB DIMM, both blocks Movable: p fills 3000 pages while only block 32 is
    online and 3000 more once 33 is too, and the balloon takes 1000 frames (in 33, the last
    Movable block's free frames come first). Offlining 32 and then 33 one by one would move
    32's pages into 33 and then again out of it; the removal isolates both blocks first, so
    it migrates exactly the 7000 frames in use on the DIMM, once each."""
    m = small
    pid = m.tasks.spawn("p")
    d = m.dimm_add(2 * BLOCK)
    m.memory_block_set(32, "online_movable")
    a = m.tasks.mmap(pid, 3000 * PAGE, prot=RW)
    m.tasks.fill(pid, a, 3000 * PAGE, seed=3)
    m.memory_block_set(33, "online_movable")
    b = m.tasks.mmap(pid, 3000 * PAGE, prot=RW)
    m.tasks.fill(pid, b, 3000 * PAGE, seed=4)
    m.tasks.write(pid, a + 17 * PAGE, 0xC0FFEE)
    m.balloon_set_target(1000)
    m.step(1)
    assert m.balloon.actual == 1000
    held = frames(m, pid, a, 3000) + frames(m, pid, b, 3000) + list(m.balloon.frames)
    assert sum(in_block(32, f) for f in held) > 2000 and sum(in_block(33, f) for f in held) > 2000
    used = _in_use(m, (32, 33))
    assert used == 7000 and all(in_block(32, f) or in_block(33, f) for f in held)
    ev, bm = event(m, "pgmigrate_success"), event(m, "balloon_migrate")
    moved = m.dimm_remove(d)
    assert moved == used == event(m, "pgmigrate_success") - ev
    assert event(m, "balloon_migrate") - bm == 1000
    assert [line.split("] ", 1)[1] for line in m.kmsg_lines()[-3:-1]] == \
        [f"Offlined Pages {BP}"] * 2
    assert m.kmsg_lines()[-1].endswith("memory: dimm0 removed (memory32-memory33, 7000 pages "
                                       "migrated)")
    assert m.hotplug.dimms == {} and zones(m) == BOOT_ZONES
    assert m.meminfo().total == SMALL_MEMTOTAL and m.balloon.actual == 1000
    invariants(m)
    assert m.tasks.verify(pid, b, 3000 * PAGE, seed=4) == 0
    assert m.tasks.verify(pid, a, 3000 * PAGE, seed=3) == 1      # the one written over
    assert m.tasks.read(pid, a + 17 * PAGE) == 0xC0FFEE
    invariants(m)


def test_a_dimm_whose_pages_cannot_fit_elsewhere_is_refused_before_anything_moves(
        small, invariants):
    """7000 pages in each block of a Movable DIMM; below 4 GiB about 12000 frames can be
    had. Either block alone would fit, so offlining them one by one would move 32's pages
    (into 33) before 33 is refused; the room check covers the whole DIMM: EBUSY for its
    14000 pages, nothing moved, nothing changed. With 4000 of them unmapped it goes, each
    remaining page migrated once."""
    m = small
    pid = m.tasks.spawn("p")
    d = m.dimm_add(2 * BLOCK)
    m.memory_block_set(32, "online_movable")
    a = m.tasks.mmap(pid, 7000 * PAGE, prot=RW)
    m.tasks.fill(pid, a, 7000 * PAGE, seed=1)
    m.memory_block_set(33, "online_movable")
    b = m.tasks.mmap(pid, 7000 * PAGE, prot=RW)
    m.tasks.fill(pid, b, 7000 * PAGE, seed=2)
    room = sum(max(0, z.free_pages - z.wmark_min - z.lowmem_reserve[ZONE_MOVABLE])
               for z in m.zones[:2])
    assert 7200 < room < 14000 and _in_use(m, (32, 33)) == 14000
    assert all(_in_use(m, (i,)) < room for i in (32, 33))
    before = (state(m), zonelist(m), m.kmsg_lines())
    with pytest.raises(Busy, match=r"dimm remove: dimm0 stays: memory offlining \[mem "
                                   r"0x0000000100000000-0x000000010fffffff\] failed: 14000 "
                                   r"pages to migrate but only \d+ frames free elsewhere"):
        m.dimm_remove(d)
    assert (state(m), zonelist(m), m.kmsg_lines()) == before
    assert m.hotplug.dimms == {0: [32, 33]}
    invariants(m)
    assert m.tasks.verify(pid, a, 7000 * PAGE, seed=1) == 0
    assert m.tasks.verify(pid, b, 7000 * PAGE, seed=2) == 0
    m.tasks.munmap(pid, a, 4000 * PAGE)
    used = _in_use(m, (32, 33))
    assert used == 10000
    assert m.dimm_remove(d) == used
    assert m.meminfo().total == SMALL_MEMTOTAL and zones(m) == BOOT_ZONES
    invariants(m)
    assert m.tasks.verify(pid, a + 4000 * PAGE, 3000 * PAGE, seed=1) == 0
    assert m.tasks.verify(pid, b, 7000 * PAGE, seed=2) == 0


def test_a_dimm_removal_that_runs_out_of_room_half_way_gives_both_zones_back_their_frames(
        small, invariants, monkeypatch):
    """Block 32 in Normal and block 33 in Movable, p's pages in both (its page tables were
    made before either was online). The room check cannot miss, so a migration that finds no
    frame is forced: the 3000th fails, in 33. Both blocks stay online in their zones, their
    free frames and the frames of the 2999 pages that moved go back to their own zones (the
    moved pages stay where they went: free memory as before), nothing is lost, and the
    removal then migrates exactly the pages still on the DIMM."""
    m = small
    pid = m.tasks.spawn("p")
    d = m.dimm_add(2 * BLOCK)
    a = m.tasks.mmap(pid, 16 * MIB, prot=RW)
    for va in list(range(a, a + 16 * MIB, 512 * PAGE)) + [a + 16 * MIB - PAGE]:
        m.tasks.write(pid, va, 1)                     # every page table, below 4 GiB
    m.memory_block_set(32, "online_kernel")
    m.tasks.fill(pid, a, 8 * MIB, seed=1)
    m.memory_block_set(33, "online_movable")
    m.tasks.fill(pid, a + 8 * MIB, 8 * MIB, seed=2)
    t32, t33 = types(m, 32), types(m, 33)
    assert set(t32) == set(t33) == {"FREE", "ANON"} and min(t32["ANON"], t33["ANON"]) > 2000
    used = _in_use(m, (32, 33))
    before = (m.meminfo().total, m.meminfo().free, blocks(m), zonelist(m),
              {k: v[:4] for k, v in zones(m).items()}, m.sysctl["min_free_kbytes"])
    real, calls = m.vmm.migration_target, []

    def target(old, **kw):
        calls.append(old)
        return None if len(calls) == 3000 else real(old, **kw)

    monkeypatch.setattr(m.vmm, "migration_target", target)
    with pytest.raises(Busy, match=r"dimm remove: dimm0 stays: .* no free frame to migrate pfn "
                                   r".* \(2999 pages had moved and stay moved\)"):
        m.dimm_remove(d)
    monkeypatch.undo()
    assert in_block(32, calls[0]) and in_block(33, calls[-1])
    assert (m.meminfo().total, m.meminfo().free, blocks(m), zonelist(m),
            {k: v[:4] for k, v in zones(m).items()}, m.sysctl["min_free_kbytes"]) == before
    assert m.hotplug.dimms == {0: [32, 33]}
    assert _in_use(m, (32, 33)) == used - 2999
    invariants(m)
    assert m.tasks.verify(pid, a, 8 * MIB, seed=1) == 0
    assert m.tasks.verify(pid, a + 8 * MIB, 8 * MIB, seed=2) == 0
    assert m.dimm_remove(d) == used - 2999
    assert m.meminfo().total == SMALL_MEMTOTAL and zones(m) == BOOT_ZONES
    invariants(m)
    assert m.tasks.verify(pid, a, 8 * MIB, seed=1) == 0
    assert m.tasks.verify(pid, a + 8 * MIB, 8 * MIB, seed=2) == 0


# ---------------------------------------------------------------------------
# faulty RAM: hard offline
# ---------------------------------------------------------------------------

def a_free_frame(m, lo=16, hi=16384) -> int:
    fl = m.ft.flags_np()
    return lo + int(np.flatnonzero((fl[lo:hi] & TYPE_MASK) == FREE_T)[0])


def test_hard_offline_of_a_free_frame(small, invariants):
    m = small
    pfn = a_free_frame(m)
    mi = m.meminfo()
    m.offline_page(pfn << 12, hard=True)
    after = m.meminfo()
    assert (after.total, after.free, after.hardware_corrupted) == (mi.total, mi.free - 1, 1)
    assert m.poisoned == {pfn} and m.ft.flags[pfn] & TYPE_MASK == HWPOISON_T
    assert m.kmsg_lines()[-1].endswith(f"Memory failure: {pfn:#x}: recovery action for free "
                                       f"buddy page: Recovered")
    invariants(m)


def test_hard_offline_of_a_clean_file_page_drops_it_and_the_file_is_read_again(small,
                                                                               invariants):
    m = small
    m.tasks.create_file("/data", 4 * PAGE)
    m.vmm.files["/data"].disk[:] = [1000, 1001, 1002, 1003]
    p = m.tasks.spawn("p")
    v = m.tasks.mmap(p, 4 * PAGE, prot=RW, shared=True, file="/data")
    q = m.tasks.spawn("q")
    w = m.tasks.mmap(q, 4 * PAGE, prot=RW, shared=True, file="/data")
    assert m.tasks.read(p, v) == m.tasks.read(q, w) == 1000
    pfn = frame(m, p, v)
    assert frame(m, q, w) == pfn and kcount(m, pfn) == 2
    m.offline_page(pfn << 12, hard=True)
    assert m.has_pid(p) and m.has_pid(q)                     # nobody killed
    assert pte(m, p, v) == 0 and pte(m, q, w) == 0           # unmapped, out of the cache
    assert next(r for r in m.files() if r[0] == "/data")[2] == 0
    assert "recovery action for clean page cache: Recovered" in m.kmsg_lines()[-1]
    invariants(m)
    assert m.tasks.read(p, v) == 1000 and m.tasks.read(q, w) == 1000
    assert frame(m, p, v) != pfn and m.poisoned == {pfn}
    invariants(m)


def test_hard_offline_of_a_dirty_file_page_kills_who_maps_it_and_loses_the_write(small,
                                                                                 invariants):
    """p wrote 7 into page 1 (dirty, not written back); q maps page 0 only. p dies with
    SIGBUS, q lives; the unwritten 7 is gone: page 1 reads 1001 from disk again."""
    m = small
    m.tasks.create_file("/data", 4 * PAGE)
    m.vmm.files["/data"].disk[:] = [1000, 1001, 1002, 1003]
    p = m.tasks.spawn("p")
    v = m.tasks.mmap(p, 4 * PAGE, prot=RW, shared=True, file="/data")
    q = m.tasks.spawn("q")
    w = m.tasks.mmap(q, 4 * PAGE, prot=RW, shared=True, file="/data")
    m.tasks.write(p, v + PAGE, 7)
    assert m.tasks.read(q, w) == 1000
    assert next(r for r in m.files() if r[0] == "/data")[2:4] == (2, 1)
    pfn = frame(m, p, v + PAGE)
    m.offline_page(pfn << 12, hard=True)
    assert not m.has_pid(p) and m.has_pid(q)
    lines = m.kmsg_lines()
    assert lines[-2].endswith(f"Memory failure: {pfn:#x}: Sending SIGBUS to p:{p} due to "
                              f"hardware memory corruption")
    assert lines[-1].endswith("recovery action for dirty page cache: Recovered")
    assert next(r for r in m.files() if r[0] == "/data")[2:5] == (1, 0, 1)
    assert m.meminfo().dirty == 0
    invariants(m)
    assert m.tasks.read(q, w + PAGE) == 1001
    invariants(m)


def test_hard_offline_of_an_anonymous_page_kills_exactly_its_users(small, invariants):
    """p and its child c share 8 pages; c then writes page 0 (its own copy). Page 1 fails:
    p and c both die, q lives. In a second round, page 0 of a new p2 whose child wrote it:
    only p2 dies."""
    m = small
    p, a = proc(m, 8 * PAGE, seed=1)
    c = m.tasks.fork(p)
    q, b = proc(m, 8 * PAGE, seed=2, name="q")
    m.tasks.write(c, a, 77)
    shared = frame(m, p, a + PAGE)
    assert frame(m, c, a + PAGE) == shared
    mi = m.meminfo()
    m.offline_page(shared << 12, hard=True)
    assert (m.has_pid(p), m.has_pid(c), m.has_pid(q)) == (False, False, True)
    assert "recovery action for dirty LRU page: Recovered" in m.kmsg_lines()[-1]
    assert m.meminfo().hardware_corrupted == 1 and m.meminfo().total == mi.total
    invariants(m)
    assert m.tasks.verify(q, b, 8 * PAGE, seed=2) == 0
    p2, a2 = proc(m, 8 * PAGE, seed=3, name="p2")
    c2 = m.tasks.fork(p2)
    m.tasks.write(c2, a2, 88)
    own = frame(m, p2, a2)
    assert frame(m, c2, a2) != own
    m.offline_page(own << 12, hard=True)
    assert (m.has_pid(p2), m.has_pid(c2), m.has_pid(q)) == (False, True, True)
    assert m.tasks.read(c2, a2) == 88
    assert m.tasks.verify(c2, a2 + PAGE, 7 * PAGE, seed=3) == 0
    assert m.poisoned == {shared, own}
    invariants(m)


def test_hard_offline_of_a_swap_cache_page_kills_the_holders_of_its_slot(small, invariants):
    """p and c share 64 pages; resident-set limits of 8 push them out (one slot each, both
    entries). p reads page 0 back: in the swap cache, mapped by p, its slot still in c's
    PTE. Its failure kills both; q lives; every slot comes free."""
    m = small
    p, a = proc(m, 64 * PAGE, seed=1)
    c = m.tasks.fork(p)
    q, b = proc(m, 64 * PAGE, seed=2, name="q")
    m.tasks.limit(p, 8, "lru")
    m.tasks.limit(c, 8, "lru")
    m.tasks.limit(p, 0)
    m.tasks.limit(c, 0)
    assert not P.is_present(pte(m, p, a)) and not P.is_present(pte(m, c, a))
    assert m.tasks.read(p, a) != 0
    pfn = frame(m, p, a)
    assert m.ft.flags[pfn] & SWAPCACHE and kcount(m, pfn) == 1
    assert pte(m, c, a) != 0 and not P.is_present(pte(m, c, a))
    m.offline_page(pfn << 12, hard=True)
    assert (m.has_pid(p), m.has_pid(c), m.has_pid(q)) == (False, False, True)
    mi = m.meminfo()
    assert mi.swap_free == mi.swap_total and mi.swap_cached == 0
    invariants(m)
    assert m.tasks.verify(q, b, 64 * PAGE, seed=2) == 0


def test_kernel_pages_cannot_be_offlined_and_nothing_changes(small, invariants):
    m = small
    p, a = proc(m, 8 * PAGE, seed=1)
    runs = m.palloc()
    kp = runs[0][0]
    table = next(iter(m.vmm.tables))
    before = state(m)
    for pfn, what in [(kp, "unmovable kernel page"), (table, "page table")]:
        with pytest.raises(Busy, match=f"recovery action for {what}: Ignored"):
            m.offline_page(pfn << 12, hard=True)
        assert state(m) == before
        with pytest.raises(Busy, match="non-movable page type"):
            m.offline_page(pfn << 12, hard=False)
        assert state(m) == before
    assert m.tasks.verify(p, a, 8 * PAGE, seed=1) == 0
    invariants(m)


def test_what_is_not_ram_or_is_offline_cannot_be_offlined(small, invariants):
    """No RAM: ENXIO. A frame of an offline block: ENXIO for hard (pfn_to_online_page finds
    none), EIO for soft."""
    m = small
    i = probe(m)
    before = state(m)
    for addr, hard, error, text in [(1 << 40, True, NoDevice, "is not RAM"),
                                    (3 * G, False, NoDevice, "is not RAM"),
                                    (span(i)[0] << 12, True, NoDevice, "block that is offline"),
                                    (span(i)[0] << 12, False, IoError, "block that is offline")]:
        with pytest.raises(error, match=text):
            m.offline_page(addr, hard=hard)
        assert state(m) == before
    invariants(m)


def test_an_already_poisoned_frame(small, invariants):
    """hard: EHWPOISON (133); soft: no error, a log line."""
    m = small
    pfn = a_free_frame(m)
    m.offline_page(pfn << 12, hard=True)
    before = state(m)
    with pytest.raises(AlreadyPoisoned, match="already hardware poisoned") as e:
        m.offline_page(pfn << 12, hard=True)
    assert e.value.errno == 133
    assert state(m) == before
    m.offline_page(pfn << 12, hard=False)
    assert m.kmsg_lines()[-1].endswith(f"soft offline: {pfn:#x} page already poisoned")
    assert state(m) == before
    invariants(m)


def test_a_lost_shared_memory_page_never_reads_back_as_zero(small, invariants):
    m = small
    p = m.tasks.spawn("p")
    s = m.tasks.mmap(p, 2 * PAGE, prot=RW, shared=True)
    m.tasks.write(p, s, 42)
    c = m.tasks.fork(p)
    assert pte(m, c, s) == 0                                 # c has not touched it
    pfn = frame(m, p, s)
    m.offline_page(pfn << 12, hard=True)
    assert not m.has_pid(p)
    invariants(m)
    if m.has_pid(c):
        try:
            value = m.tasks.read(c, s)
        except Fault:
            return                                           # SIGBUS: the loss is reported
        assert value == 42, f"c reads {value} where 42 was: the loss went unnoticed"


# ---------------------------------------------------------------------------
# faulty RAM: soft offline
# ---------------------------------------------------------------------------

def test_soft_offline_migrates_and_keeps_everything(small, invariants):
    m = small
    p, a = proc(m, 8 * PAGE, seed=1)
    m.tasks.create_file("/data", 2 * PAGE)
    v = m.tasks.mmap(p, 2 * PAGE, prot=RW, shared=True, file="/data")
    m.tasks.write(p, v, 55)
    for va in (a + 3 * PAGE, v):
        old = frame(m, p, va)
        mi = m.meminfo()
        m.offline_page(old << 12, hard=False)
        new = frame(m, p, va)
        assert new != old and m.has_pid(p)
        assert m.ft.flags[old] & TYPE_MASK == HWPOISON_T and old in m.poisoned
        assert m.kmsg_lines()[-1].endswith(f"soft offline: {old:#x}: page migrated to {new:#x}")
        after = m.meminfo()
        assert (after.total, after.free, after.dirty, after.anon_pages, after.mapped) == \
            (mi.total, mi.free - 1, mi.dirty, mi.anon_pages, mi.mapped)
    assert m.ft.flags[frame(m, p, v)] & DIRTY                  # still dirty
    assert m.meminfo().hardware_corrupted == 2
    invariants(m)
    assert m.tasks.verify(p, a, 8 * PAGE, seed=1) == 0 and m.tasks.read(p, v) == 55
    free = a_free_frame(m)
    m.offline_page(free << 12, hard=False)
    assert m.kmsg_lines()[-1].endswith(f"soft offline: {free:#x}: free page isolated")
    assert m.meminfo().hardware_corrupted == 3
    invariants(m)


# ---------------------------------------------------------------------------
# the poisoned set across offline and online; fault injection
# ---------------------------------------------------------------------------

def test_a_poisoned_frame_stays_poisoned_across_offline_and_online(small, invariants):
    """pfn 0x100100 of the Movable block fails while free. Offline: typed OFFLINE, still
    in m.poisoned and HardwareCorrupted; online: HWPOISON again, MemTotal 46593 again (it
    counts, as before), 32767 frames free there. A process then takes every frame the block
    gives: never that one. When its DIMM goes, the frame is forgotten."""
    m = small
    d = m.dimm_add(BLOCK, online="online_movable")
    i = m.hotplug.dimms[d][0]
    bad = span(i)[0] + 0x100
    m.offline_page(bad << 12, hard=True)
    assert m.meminfo().hardware_corrupted == 1 and m.meminfo().total == 46593
    m.memory_block_set(i, "offline")
    assert m.poisoned == {bad} and m.ft.flags[bad] & TYPE_MASK == OFFLINE_T
    assert m.meminfo().hardware_corrupted == 1
    invariants(m)
    m.memory_block_set(i, "online_movable")
    assert m.ft.flags[bad] & TYPE_MASK == HWPOISON_T and m.meminfo().total == 46593
    assert types(m, i) == {"FREE": BP - 1, "HWPOISON": 1}
    invariants(m)
    pid = m.tasks.spawn("p")
    a = m.tasks.mmap(pid, (BP + 1024) * PAGE, prot=RW)
    m.tasks.fill(pid, a, (BP + 1024) * PAGE, seed=1)
    assert m.ft.flags[bad] & TYPE_MASK == HWPOISON_T and kcount(m, bad) == 0
    assert types(m, i).get("ANON", 0) > BP - 100          # the block is full but for that
    assert bad not in frames(m, pid, a, 64)
    invariants(m)
    m.tasks.kill(pid)
    m.dimm_remove(d)
    assert m.poisoned == set() and m.meminfo().hardware_corrupted == 0
    invariants(m)


def _injected(soft: bool):
    m = Machine(load(builtin("small")), paused=True)
    probe(m, "online_movable")
    procs = [proc(m, 2 * MIB, seed=k, name=f"w{k}") + (k,) for k in range(3)]
    m.inject_faults(200, soft=soft)                    # 2 a tick: 200 tries in 100 ticks
    m.step(100)
    m.inject_faults(0)
    m.step(10)
    return m, procs


@pytest.mark.parametrize("soft", [False, True])
def test_fault_injection_is_deterministic(invariants, soft):
    """The frames come from the machine's seeded generator: two machines that do the same
    get the same poisoned frames, kill the same processes and log the same lines."""
    m1, procs = _injected(soft)
    m2, _ = _injected(soft)
    assert m1.poisoned == m2.poisoned
    assert len(m1.poisoned) > 50
    assert m1.pids() == m2.pids()
    failures = [ln for ln in m1.kmsg_lines() if "Memory failure" in ln or "soft offline" in ln]
    assert failures == [ln for ln in m2.kmsg_lines()
                        if "Memory failure" in ln or "soft offline" in ln]
    assert m1.meminfo().hardware_corrupted == len(m1.poisoned)
    invariants(m1)
    if soft:                                           # soft offlining kills nobody
        for pid, a, seed in procs:
            assert m1.has_pid(pid) and m1.tasks.verify(pid, a, 2 * MIB, seed=seed) == 0
    invariants(m1)
    # injection stopped: stepping on poisons nothing more
    n = len(m1.poisoned)
    m1.step(50)
    assert len(m1.poisoned) == n


def test_injection_rate_must_not_be_negative(small):
    with pytest.raises(InvalidArgument):
        small.inject_faults(-1)
