"""Swap, page replacement, pressure and the OOM killer through the mount, on the small machine.

The small machine (config/small.yaml): MemTotal 55300 kB, one 128 MiB swap
partition /dev/vdb. Figures worked out by hand from Linux's definitions:

  swaps      an area of N pages offers N - 1 (page 0 is the header): 128 MiB is
             32768 pages, 32767 usable, 131068 kB; a 64 MiB /swapfile 65532 kB, a
             10 MiB /dev/vdc 10236 kB. Areas without prio= count down from -2.
  mmap 96M   top-down from 0x7ffff7fff000: 0x7ffff1fff000, 24576 pages, more than
             the 55300 kB of RAM: at least 98304 - 55300 = 43004 kB must leave RAM,
             and every page is either resident or a swap entry, so after `fill`
             RssAnon + VmSwap = 24576 data pages + exec's stack page = 98308 kB.
  swap entry x86-64, not present: type in bits 59-63, the offset inverted in bits
             9-58: val = ((~offset << 14) >> 5) | (type << 59), bits 1-3 carrying
             soft-dirty, uffd-wp and exclusive. pagemap of a swapped page: bit 62,
             type in bits 0-4, offset in bits 5-54, bit 55 (soft-dirty) as a new
             mapping's pages all are.
  Belady     FIFO on 1 2 3 4 1 2 5 1 2 3 4 5: 9 faults with 3 frames, 10 with 4
             (the anomaly); LRU 10 with 3, 8 with 4; CLOCK 9 with 3 (worked out
             step by step at each test). The process's resident stack page enters
             the policy first, as the oldest and least recently used page with its
             reference bit clear: it is the first victim and changes no fault
             count, only adds one eviction.
"""
from __future__ import annotations

import errno
import os
import re
from types import SimpleNamespace

import pytest

from .conftest import _mount, _unmount, memfs

KB = 1024
PAGE = 4096
MMAP_BASE = 0x7FFFF7FFF000
MEMTOTAL_KB = 55300
SWAP_KB = 131068                                  # 128 MiB less the header page
SWAPS_HEADER = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
BELADY = [1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5]
U64 = (1 << 64) - 1

PSI_LINE = re.compile(r"(some|full) avg10=(\d+\.\d\d) avg60=(\d+\.\d\d) avg300=(\d+\.\d\d) "
                      r"total=(\d+)")
PTE_SWAP = re.compile(r"  ([0-9a-f]+) ([0-9a-f]{16}) swap type (\d+) offset 0x([0-9a-f]+)")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def vmstat(m) -> dict[str, int]:
    return {k: int(v) for k, v in (ln.split() for ln in m.read("vmstat").splitlines())}


def swapped_out(v: dict[str, int]) -> int:
    """Pages written out of RAM: into zswap, or to the device without passing through it
    (pswpout also counts zswap's writebacks, which are pages already counted in zswpout)."""
    return v["zswpout"] + v["pswpout"] - v["zswpwb"]


def swap_line(name: str, kind: str, size_kb: int, used_kb: int, prio: int) -> str:
    """One /proc/swaps line, built from the layout in Linux's swap_show."""
    pad = " " * max(1, 40 - len(name))
    kind = "partition" if kind == "partition" else "file\t"
    tabs = lambda n: "\t\t" if n < 10_000_000 else "\t"       # noqa: E731
    return f"{name}{pad}{kind}\t{size_kb}{tabs(size_kb)}{used_kb}{tabs(used_kb)}{prio}\n"


def psi(m) -> dict[str, tuple[float, float, float, int]]:
    text = m.read("pressure/memory")
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) == 3, f"two lines, each ended by a newline: {text!r}"
    out = {}
    for ln, name in zip(lines[:2], ("some", "full")):
        g = PSI_LINE.fullmatch(ln)
        assert g and g.group(1) == name, f"not a Linux PSI line: {ln!r}"
        out[name] = (float(g.group(2)), float(g.group(3)), float(g.group(4)), int(g.group(5)))
    return out


def swap_encode(swp_type: int, off: int) -> int:
    """The x86-64 swap PTE of (type, offset), from arch/x86/include/asm/pgtable_64.h."""
    return ((((~off) << 14) & U64) >> 5) | (swp_type << 59)


def swapped_ptes(m, pid: int) -> dict[int, tuple[int, int, int]]:
    """va -> (raw entry, type, offset) for every swap entry the pte file lists."""
    out = {}
    for line in m.read(f"{pid}/pte").splitlines():
        g = PTE_SWAP.match(line)
        if g:
            out[int(g.group(1), 16)] = (int(g.group(2), 16), int(g.group(3)), int(g.group(4), 16))
    return out


def pagemap_range(m, pid: int, va: int, pages: int) -> list[int]:
    out = []
    for first in range(0, pages, 4096):
        out += m.pagemap(pid, va + first * PAGE, min(4096, pages - first))
    assert len(out) == pages
    return out


def write_fails(m, rel: str, text: str) -> int:
    """Write text to a file that must refuse it; returns the errno."""
    code = m.write_errno(rel, text)
    assert code, f"{rel}: {text!r} was accepted"
    return code


# ---------------------------------------------------------------------------
# one process writes more than RAM: a machine of its own, shared by the tests that read it
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def swapped(tmp_path_factory):
    """A fresh paused small machine where `big` has mmapped 96M and filled it (seed=7)."""
    m = _mount(tmp_path_factory.mktemp("swapped"), "--config", "small", "--paused", "--seed", "1")
    try:
        before = SimpleNamespace(meminfo=m.meminfo(), vmstat=vmstat(m), swaps=m.read("swaps"))
        pid = m.spawn("big")
        addr = m.mmap(pid, "96M")
        m.pctl(pid, f"fill {addr:#x} 96M seed=7")
        yield SimpleNamespace(m=m, pid=pid, addr=addr, before=before)
    finally:
        _unmount(m)


def test_a_process_reads_back_every_value_it_wrote_to_more_memory_than_ram(swapped):
    m, pid, a = swapped.m, swapped.pid, swapped.addr
    assert a == MMAP_BASE - (96 << 20) == 0x7FFFF1FFF000
    mi0, v0 = swapped.before.meminfo, swapped.before.vmstat
    assert (mi0["MemTotal"], mi0["SwapTotal"], mi0["SwapFree"]) == (MEMTOTAL_KB, SWAP_KB, SWAP_KB)
    assert swapped_out(v0) == 0

    mi, v = m.meminfo(), vmstat(m)
    assert mi["SwapFree"] <= SWAP_KB - (98304 - MEMTOTAL_KB), "what RAM cannot hold is in swap"
    assert v["pswpout"] > v0["pswpout"], "the device was written"
    assert swapped_out(v) - swapped_out(v0) >= (98304 - MEMTOTAL_KB) // 4
    st = m.status(pid)
    assert st["RssAnon"] + st["VmSwap"] == 98308, "every page resident or in swap, none lost"
    assert st["VmSwap"] > 0 and st["RssFile"] == 0

    assert m.pctl(pid, f"verify {a:#x} 96M seed=7") == "0"
    assert m.pctl(pid, f"verify {a:#x} 96M seed=8") == "24576", "another seed differs everywhere"
    v2 = vmstat(m)
    assert v2["pswpin"] + v2["zswpin"] > v["pswpin"] + v["zswpin"], "reading it back swapped in"
    assert v2["pgmajfault"] > v["pgmajfault"]
    assert m.kmsg_tail(1)[0].endswith(f"verify: {pid}: {a:#x}+0x6000000 seed 8: 24576 pages differ")


def test_swaps_shows_the_used_swap_in_the_linux_layout(swapped):
    m = swapped.m
    assert swapped.before.swaps == SWAPS_HEADER + swap_line("/dev/vdb", "partition", SWAP_KB, 0, -2)
    mi = m.meminfo()
    used = mi["SwapTotal"] - mi["SwapFree"]
    assert used >= 98304 - MEMTOTAL_KB
    assert m.read("swaps") == SWAPS_HEADER + swap_line("/dev/vdb", "partition", SWAP_KB, used, -2)
    assert m.read("swaps") == (SWAPS_HEADER + "/dev/vdb" + " " * 32 + f"partition\t131068\t\t"
                               f"{used}\t\t-2\n")


def test_a_swapped_process_shows_its_swap_in_status_smaps_pte_and_pagemap(swapped):
    m, pid, a = swapped.m, swapped.pid, swapped.addr
    st = m.status(pid)
    assert st["VmSwap"] > 0
    assert m.kb(f"{pid}/smaps_rollup")["Swap"] == st["VmSwap"]
    blocks = m.read(f"{pid}/smaps").split("\n")
    area = next(i for i, ln in enumerate(blocks) if ln.startswith(f"{a:x}-{MMAP_BASE:x} rw-p"))
    fields = {}
    for ln in blocks[area + 1:]:
        if re.match(r"[0-9a-f]+-[0-9a-f]+ ", ln):
            break
        key, _, rest = ln.partition(":")
        if rest.split() and rest.split()[0].isdigit():
            fields[key] = int(rest.split()[0])
    assert fields["Swap"] > 0 and fields["Rss"] + fields["Swap"] == 98304
    swap_total = sum(int(ln.split()[1]) for ln in blocks if ln.startswith("Swap:"))
    assert swap_total == st["VmSwap"]

    ptes = swapped_ptes(m, pid)
    in_area = {va: e for va, e in ptes.items() if a <= va < MMAP_BASE}
    assert len(in_area) * 4 == fields["Swap"], "one swap entry per swapped page"
    pm = pagemap_range(m, pid, a, 24576)
    assert sum(1 for x in pm if x >> 62 & 1) == len(in_area)
    slots = set()
    for va, (raw, swp_type, off) in in_area.items():
        assert swp_type == 0 and 1 <= off <= 32767, f"{va:#x}: slot {off} of /dev/vdb"
        assert raw & 0x181 == 0, f"{va:#x}: {raw:#018x} has P, PSE or PROTNONE set"
        assert raw & ~0x7E == swap_encode(swp_type, off), f"{va:#x}: {raw:#018x}"
        e = pm[(va - a) // PAGE]
        assert e >> 63 == 0 and e >> 62 & 1, f"{va:#x}: pagemap {e:#018x} is not swapped"
        assert e >> 61 & 1 == 0 and e >> 56 & 1 == 0, "private anonymous, not present"
        assert e & 0x1F == swp_type and (e >> 5) & ((1 << 50) - 1) == off
        assert e >> 55 & 1, "a new mapping is soft-dirty (VM_SOFTDIRTY): so are its pages"
        slots.add(off)
    assert len(slots) == len(in_area), "no two pages share a slot"


def test_free_through_memfs_exec_shows_the_swap_used(swapped):
    m = swapped.m
    r = memfs("exec", m.path, "--", "free", "-k")
    swap = next(ln for ln in r.stdout.splitlines() if ln.startswith("Swap:")).split()
    mi = m.meminfo()
    assert [int(x) for x in swap[1:4]] == [SWAP_KB, SWAP_KB - mi["SwapFree"], mi["SwapFree"]]
    assert int(swap[2]) > 0, r.stdout
    mem = next(ln for ln in r.stdout.splitlines() if ln.startswith("Mem:")).split()
    assert int(mem[1]) == MEMTOTAL_KB and int(mem[3]) == mi["MemFree"]


# ---------------------------------------------------------------------------
# pressure stall information
# ---------------------------------------------------------------------------

def test_psi_rises_under_a_squeeze_and_decays_after_it(small):
    """A process holds 48 MiB (it fits: nothing is swapped); a squeeze of 32 MiB for 300
    ticks must push part of it out, and whoever waits for that stalls. After 250 ticks
    (2.5 s: the averages are updated every 2 s) avg10 is above 0; with no stall after
    the squeeze every update multiplies avg10 by exp(-2/10): it falls."""
    zero = psi(small)
    assert zero == {"some": (0.0, 0.0, 0.0, 0), "full": (0.0, 0.0, 0.0, 0)}
    pid = small.spawn("hog")
    a = small.mmap(pid, "48M")
    small.pctl(pid, f"fill {a:#x} 48M seed=3")
    v0 = vmstat(small)
    assert swapped_out(v0) == 0, "48 MiB fits in RAM"

    small.ctl("pressure 32M ticks=300")
    assert small.kmsg_tail(1)[0].endswith("pressure: squeeze of 8192 pages for 300 ticks; "
                                          "1 processes notified")
    small.step(250)
    v1 = vmstat(small)
    assert swapped_out(v1) > 0, "the squeeze pushed anonymous memory out"
    under = psi(small)
    assert under["some"][3] > 0 and under["some"][0] > 0, under
    assert under["full"][3] <= under["some"][3]

    small.step(1000)                        # the squeeze ended at tick 300
    assert any("pressure: squeeze of 8192 pages over after 300 ticks" in ln
               for ln in small.read("kmsg").splitlines())
    after = psi(small)
    assert after["some"][3] == under["some"][3], "no stall once the squeeze let go"
    assert after["some"][0] < under["some"][0], (under, after)
    small.step(2000)
    later = psi(small)
    assert later["some"][0] < after["some"][0] or later["some"][0] == 0.0
    assert later["some"][3] == after["some"][3]
    assert small.pctl(pid, f"verify {a:#x} 48M seed=3") == "0"


# ---------------------------------------------------------------------------
# low-memory notifications: scavenge before swap
# ---------------------------------------------------------------------------

def test_notified_processes_scavenge_before_anything_is_swapped(small):
    """`hoard` mallocs and writes 400 blocks of 32 KiB (chunks of 32784 bytes, one after
    the other from the break), keeps one small block after them and frees the 400: the
    freed heap stays resident. A 48 MiB squeeze is more than free memory but less than
    free memory plus the freed heap: the notified process scavenges on its next tick
    (madvise dontneed of the whole pages inside its free area: from the first chunk plus
    the 48-byte free-chunk header, rounded up, to the kept chunk, rounded down) and the
    squeeze is served from that without swapping anything."""
    m = small
    pid = m.spawn("hoard")
    blocks = []
    for _ in range(400):
        b = int(m.pctl(pid, "malloc 32K"), 16)
        m.pctl(pid, f"memset {b:#x} 32K")
        blocks.append(b)
    kept = int(m.pctl(pid, "malloc 16"), 16)
    assert blocks[1] - blocks[0] == 32784 and kept - blocks[-1] == 32784
    for b in blocks:
        m.pctl(pid, f"free {b:#x}")
    rss0 = m.status(pid)["VmRSS"]
    lo = (blocks[0] - 16 + 48 + PAGE - 1) // PAGE * PAGE
    hi = (kept - 16) // PAGE * PAGE
    freed_kb = (hi - lo) // KB
    assert freed_kb == 12800
    free0 = m.meminfo()["MemFree"]
    high_kb = 4 * sum(int(ln.split()[1]) for ln in m.read("zoneinfo").splitlines()
                      if ln.split()[:1] == ["high"])
    squeeze_kb = 48 * KB
    assert free0 < squeeze_kb < free0 + freed_kb - high_kb, "the premise: only the heap covers it"
    v0 = vmstat(m)
    assert v0["pswpout"] == v0["zswpout"] == 0

    start = m.trace_end()
    m.ctl("pressure 48M ticks=50")
    m.step(20)                              # at most a tenth a tick: all taken by tick 10
    v = vmstat(m)
    assert (v["pswpout"], v["zswpout"], v["pgsteal_anon"]) == (0, 0, 0), "nothing swapped"
    assert m.status(pid)["VmRSS"] == rss0 - freed_kb
    assert m.meminfo()["MemFree"] == free0 + freed_kb - squeeze_kb, "the squeeze holds 48 MiB"
    events = m.trace_since(start)
    assert any(re.fullmatch(r"0 0 notify level=low processes=1", ln) for ln in events)
    scav = [ln for ln in events if f" {pid} scavenge reason=notify-low " in ln]
    assert scav and scav[0].startswith("1 ") and f"heap_pages={freed_kb // 4}" in scav[0], events[-8:]
    kmsg = m.read("kmsg").splitlines()
    assert any(ln.endswith("pressure: squeeze of 12288 pages for 50 ticks; 1 processes notified")
               for ln in kmsg)
    assert not any("squeeze stopped" in ln for ln in kmsg)
    assert f"scavenged {freed_kb // 4} pages" in m.read(f"{pid}/heap")


def test_notify_critical_makes_every_process_scavenge_on_its_next_tick(machine):
    """One freed 64 KiB block between the break and a kept block: its chunk (65552 bytes)
    holds the whole pages from its start plus the 48-byte free-chunk header, rounded up,
    to the kept chunk, rounded down."""
    m = machine
    pid = m.spawn("notified")
    b = int(m.pctl(pid, "malloc 64K"), 16)
    m.pctl(pid, f"memset {b:#x} 64K")
    kept = int(m.pctl(pid, "malloc 16"), 16)
    m.pctl(pid, f"free {b:#x}")
    lo = (b - 16 + 48 + PAGE - 1) // PAGE * PAGE
    hi = (kept - 16) // PAGE * PAGE
    rss0 = m.status(pid)["VmRSS"]
    tick = int(m.read("clock").split()[1])
    start = m.trace_end()
    m.ctl("notify critical")
    assert re.search(r"notify: critical memory: \d+ processes notified$", m.kmsg_tail(1)[0])
    assert m.status(pid)["VmRSS"] == rss0, "handled on the process's next run, not at once"
    m.step(1)
    assert m.status(pid)["VmRSS"] == rss0 - (hi - lo) // KB
    events = m.trace_since(start)
    assert any(ln.startswith(f"{tick + 1} {pid} scavenge reason=notify-critical ")
               and f"heap_pages={(hi - lo) // PAGE} " in ln for ln in events), events


# ---------------------------------------------------------------------------
# the OOM killer
# ---------------------------------------------------------------------------

OOM_ROW = re.compile(r"\[\s*(\d+)\]\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)"
                     r"\s+(\d+)\s+(-?\d+) (\S+)$")


def test_oom_kills_the_highest_score_and_never_a_process_at_minus_1000(small):
    """keeper (100 MiB, oom_score_adj -1000) and middle (50 MiB) fill their memory; then
    grower fills 60 MiB: 210 MiB do not fit in 55300 kB of RAM plus 131068 kB of swap.
    keeper is the biggest but may not be chosen; middle has more pages than grower at
    that point and is killed, and grower's fill then completes in what middle left."""
    m = small
    keeper, middle, grower = m.spawn("keeper"), m.spawn("middle"), m.spawn("grower")
    m.write(f"{keeper}/oom_score_adj", "-1000\n")
    assert m.read(f"{keeper}/oom_score_adj") == "-1000\n"
    ka, ma, ga = m.mmap(keeper, "100M"), m.mmap(middle, "50M"), m.mmap(grower, "60M")
    m.pctl(keeper, f"fill {ka:#x} 100M seed=1")
    m.pctl(middle, f"fill {ma:#x} 50M seed=2")
    assert m.read(f"{keeper}/oom_score") == "0\n", "-1000 reads as a score of 0"
    assert int(m.read(f"{middle}/oom_score")) > int(m.read(f"{grower}/oom_score"))
    assert vmstat(m)["oom_kill"] == 0

    m.pctl(grower, f"fill {ga:#x} 60M seed=3")
    assert vmstat(m)["oom_kill"] == 1
    assert m.pids() == {5000001, keeper, grower}, "middle is gone"
    kmsg = m.read("kmsg").splitlines()
    text = [ln.split("] ", 1)[1] for ln in kmsg]
    assert sum(1 for ln in text if "invoked oom-killer" in ln) == 1
    assert ("grower invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), "
            "order=0, oom_score_adj=0") in text
    table = text.index("Tasks state (memory values in pages):")
    assert text[table + 1].split() == ["[", "pid", "]", "uid", "tgid", "total_vm", "rss",
                                       "rss_anon", "rss_file", "rss_shmem", "pgtables_bytes",
                                       "swapents", "oom_score_adj", "name"]
    rows = {}
    for ln in text[table + 2:table + 5]:
        g = OOM_ROW.match(ln)
        assert g, ln
        rss, pgt, swapents, adj = int(g[5]), int(g[9]), int(g[10]), int(g[11])
        rows[g[12]] = (int(g[1]), rss + swapents + pgt // PAGE, adj)
    assert set(rows) == {"keeper", "middle", "grower"}
    assert rows["keeper"][2] == -1000 and rows["middle"][2] == rows["grower"][2] == 0
    assert rows["keeper"][1] > rows["middle"][1] > rows["grower"][1], \
        "keeper is the biggest, but -1000 is never chosen; middle has the most points left"
    killed = [ln for ln in text if ln.startswith("Out of memory: Killed process ")]
    assert len(killed) == 1
    assert killed[0].startswith(f"Out of memory: Killed process {middle} (middle) total-vm:")
    assert f"task=middle,pid={middle}," in text[table + 5]
    assert m.pctl(keeper, f"verify {ka:#x} 100M seed=1") == "0"
    assert m.pctl(grower, f"verify {ga:#x} 60M seed=3") == "0"


# ---------------------------------------------------------------------------
# swapon and swapoff
# ---------------------------------------------------------------------------

def test_swapoff_with_too_little_ram_fails_and_loses_nothing_then_succeeds(small):
    m = small
    pid = m.spawn("big")
    a = m.mmap(pid, "96M")
    m.pctl(pid, f"fill {a:#x} 96M seed=7")
    swaps, mi = m.read("swaps"), m.meminfo()
    assert mi["SwapTotal"] - mi["SwapFree"] >= 98304 - MEMTOTAL_KB

    code, reason = m.rejected("swapoff /dev/vdb")
    assert code == errno.ENOMEM
    assert reason.startswith("error: swapoff: /dev/vdb holds ") and "nothing was changed" in reason
    assert m.kmsg_tail(1)[0].endswith(reason[len("error: "):].rstrip("\n"))
    assert m.read("swaps") == swaps
    after = m.meminfo()
    assert (after["SwapFree"], after["MemFree"]) == (mi["SwapFree"], mi["MemFree"])
    assert m.pctl(pid, f"verify {a:#x} 96M seed=7") == "0"

    # Unmapping the top 64 MiB leaves 32 MiB: swapoff can bring all of it in.
    m.pctl(pid, f"munmap {a + (32 << 20):#x} 64M")
    assert m.status(pid)["VmSwap"] > 0
    assert m.ctl("swapoff /dev/vdb") == ""
    assert re.search(r"swapoff: /dev/vdb: \d+ pages brought back into RAM; area removed$",
                     m.kmsg_tail(1)[0])
    assert m.read("swaps") == SWAPS_HEADER
    mi = m.meminfo()
    assert (mi["SwapTotal"], mi["SwapFree"], mi["SwapCached"]) == (0, 0, 0)
    st = m.status(pid)
    assert (st["VmSwap"], st["RssAnon"]) == (0, 32772)
    assert not swapped_ptes(m, pid)
    assert m.pctl(pid, f"verify {a:#x} 32M seed=7") == "0"


def test_swapon_adds_an_area_of_its_size_less_the_header_with_its_priority(machine):
    m = machine
    base = m.read("swaps")
    assert base.startswith(SWAPS_HEADER + "/dev/vdb" + " " * 32 + "partition\t131068\t\t")
    mi0 = m.meminfo()
    try:
        assert m.ctl("swapon /swapfile 64M prio=5") == ""
        assert m.kmsg_tail(1)[0].endswith("Adding 65532k swap on /swapfile.  Priority:5 "
                                          "extents:1 across:65532k")
        assert m.ctl("swapon /dev/vdc 10M") == ""
        assert m.read("swaps") == (base + "/swapfile" + " " * 31 + "file\t\t65532\t\t0\t\t5\n"
                                   + swap_line("/dev/vdc", "partition", 10236, 0, -3))
        mi = m.meminfo()
        assert mi["SwapTotal"] == SWAP_KB + 65532 + 10236
        assert mi["SwapFree"] == mi0["SwapFree"] + 65532 + 10236

        # The highest priority fills first: a process's evicted pages go to /swapfile.
        pid = m.spawn("limited")
        a = m.mmap(pid, "64K")
        m.pctl(pid, "limit frames=2 policy=fifo")
        m.pctl(pid, f"fill {a:#x} 64K seed=4")
        used = {ln.split()[0]: int(ln.split()[3]) for ln in m.read("swaps").splitlines()[1:]}
        assert used["/swapfile"] > 0 and used["/dev/vdc"] == 0
        assert {t for _, t, _ in swapped_ptes(m, pid).values()} == {1}, "type 1: the second area"
        assert m.pctl(pid, f"verify {a:#x} 64K seed=4") == "0"
        m.ctl(f"kill {pid}")
    finally:
        for name in ("/swapfile", "/dev/vdc"):
            if name in m.read("swaps"):
                m.ctl(f"swapoff {name}")
    assert m.read("swaps") == base


@pytest.mark.parametrize("command,code,reason", [
    ("swapon swapfile 64M", errno.EINVAL, "must be an absolute path"),
    ("swapon /swapfile 4K", errno.EINVAL, "at least two (one is the header)"),
    ("swapon /swapfile 6K", errno.EINVAL, "a whole number of pages"),
    ("swapon /swapfile 64M prio=-5", errno.EINVAL, "prio=-5 must be between 0 and 32767"),
    ("swapon /swapfile 64M prio=32768", errno.EINVAL, "prio=32768 must be between 0 and 32767"),
    ("swapon /swapfile lots", errno.EINVAL, "swapon: lots: bad number"),
    ("swapon /swapfile", errno.EINVAL, "swapon: missing argument (usage: swapon NAME SIZE"),
    ("swapon /dev/vdb 128M", errno.EBUSY, "/dev/vdb is already in use as swap"),
    ("swapoff /nowhere", errno.EINVAL, "/nowhere is not an active swap area (active: /dev/vdb)"),
    ("swapoff", errno.EINVAL, "swapoff: missing argument (usage: swapoff NAME)"),
    ("pressure 1M ticks=0", errno.EINVAL, "pressure: ticks=0 must be at least 1"),
    ("pressure 1G", errno.EINVAL, "is more than the machine's RAM"),
    ("notify soon", errno.EINVAL, "level 'soon' must be low or critical"),
])
def test_bad_swap_and_pressure_commands_are_refused_with_a_reason(machine, command, code, reason):
    swaps = machine.read("swaps")
    got, text = machine.rejected(command)
    assert got == code
    assert reason in text
    assert reason in machine.kmsg_tail(1)[0]
    assert machine.read("swaps") == swaps


# ---------------------------------------------------------------------------
# resident-set limits and replacement policies
# ---------------------------------------------------------------------------

def run_reference_string(m, frames: int, policy: str) -> str:
    """A fresh process under `limit frames=N policy=P` writes pages 1..5 of an mmapped
    area in the order of BELADY; returns its limit file."""
    pid = m.spawn("belady")
    a = m.mmap(pid, "64K")
    assert m.read(f"{pid}/limit") == "frames unlimited\n"
    m.pctl(pid, f"limit frames={frames} policy={policy}")
    assert m.read(f"{pid}/limit") == (f"frames {frames}\npolicy {policy}\nresident 1\n"
                                      f"faults 0\nevictions 0\n"), "the stack page is resident"
    for page in BELADY:
        m.pctl(pid, f"touch {a + page * PAGE:#x} 4096 write")
    text = m.read(f"{pid}/limit")
    m.ctl(f"kill {pid}")
    return text


@pytest.mark.parametrize("frames,policy,faults,evictions", [
    # FIFO, 3 frames: [S] 1 2 [S12] 3 out S 4 out 1 1 out 2 2 out 3 5 out 4 [125] 1 hit 2 hit
    # 3 out 1 4 out 2 5 hit: 9 faults, 7 evictions.
    (3, "fifo", 9, 7),
    # FIFO, 4 frames: 1 2 3 [S123] 4 out S, 1 2 hit, 5 out 1, 1 out 2, 2 out 3, 3 out 4,
    # 4 out 5, 5 out 1: 10 faults (more frames, more faults: Belady's anomaly), 7 evictions.
    (4, "fifo", 10, 7),
    # LRU, 3 frames: every fault after the first three evicts: 1 2 3 4 1 2 5 3 4 5 fault,
    # 1 2 hit (5 evicted 3, 3 evicts 4...): 10 faults, 10 - 3 + 1 = 8 evictions.
    (3, "lru", 10, 8),
    # LRU, 4 frames: 1 2 3 4 fault, 1 2 hit, 5 out 3, 1 2 hit, 3 out 4, 4 out 5, 5 out 1:
    # 8 faults, 5 evictions.
    (4, "lru", 8, 5),
    # CLOCK, 3 frames: S (bit clear) goes at 3; 4 sweeps 1 2 3 clear and takes 1's frame;
    # 1 takes 2's, 2 takes 3's, 5 sweeps and takes 4's, 1 2 hit (bits set), 3 sweeps
    # 1 2 5 and takes 1's, 4 takes 2's, 5 hit: 9 faults, 7 evictions.
    (3, "clock", 9, 7),
])
def test_replacement_policies_fault_as_their_definitions_say(machine, frames, policy, faults,
                                                            evictions):
    assert run_reference_string(machine, frames, policy) == (
        f"frames {frames}\npolicy {policy}\nresident {frames}\nfaults {faults}\n"
        f"evictions {evictions}\n")


def test_values_written_under_a_limit_survive_eviction(machine):
    m = machine
    pid = m.spawn("tight")
    a = m.mmap(pid, "64K")
    m.pctl(pid, "limit frames=3 policy=lru")
    for i in range(16):
        m.pctl(pid, f"write {a + i * PAGE:#x} {1000 + i}")
    assert m.status(pid)["VmSwap"] > 0
    assert len(swapped_ptes(m, pid)) >= 16 - 3
    assert [int(m.pctl(pid, f"read {a + i * PAGE:#x}")) for i in range(16)] == \
        [1000 + i for i in range(16)]
    lim = dict(ln.split() for ln in m.read(f"{pid}/limit").splitlines())
    # LRU over 16 written pages read back in the same order: every access faults.
    assert (lim["resident"], lim["faults"], lim["evictions"]) == ("3", "32", str(32 - 3 + 1))
    assert m.status(pid)["VmRSS"] == 12


def test_a_bad_limit_is_refused(machine):
    pid = machine.spawn("limits")
    for command, reason in (("limit", "frames=N is required"),
                            ("limit frames=3 policy=mru", "policy=mru is not one of"),
                            ("limit frames=-1", "frames=-1 must be 0"),
                            ("limit frames=3 policy=opt", "policy=opt needs the future")):
        code, text = machine.rejected(command, f"{pid}/ctl")
        assert code == errno.EINVAL and reason in text, (command, text)
    assert machine.read(f"{pid}/limit") == "frames unlimited\n"
    machine.pctl(pid, "limit frames=2")
    assert machine.read(f"{pid}/limit").splitlines()[:2] == ["frames 2", "policy lru"]
    machine.pctl(pid, "limit frames=0")
    assert machine.read(f"{pid}/limit") == "frames unlimited\n"


# ---------------------------------------------------------------------------
# sys/vm: swappiness, page-cluster, drop_caches
# ---------------------------------------------------------------------------

def test_swappiness_reads_60_and_takes_0_to_200(machine):
    m = machine
    assert m.read("sys/vm/swappiness") == "60\n"
    assert m.read("sys/vm/page-cluster") == "3\n"
    try:
        for value in (0, 200, 100):
            m.write("sys/vm/swappiness", f"{value}\n")
            assert m.read("sys/vm/swappiness") == f"{value}\n"
            assert m.kmsg_tail(1)[0].endswith(f"sysctl: vm.swappiness = {value}")
        for bad in ("201", "-1", "sixty"):
            assert write_fails(m, "sys/vm/swappiness", f"{bad}\n") == errno.EINVAL
            assert "swappiness" in m.kmsg_tail(1)[0] and bad in m.kmsg_tail(1)[0]
            assert m.read("sys/vm/swappiness") == "100\n"
    finally:
        m.write("sys/vm/swappiness", "60\n")


def test_drop_caches_is_write_only_and_drops_the_clean_page_cache(machine):
    m = machine
    assert os.stat(m / "sys/vm/drop_caches").st_mode & 0o777 == 0o200
    with pytest.raises(PermissionError):
        m.read("sys/vm/drop_caches")
    m.write("sys/vm/drop_caches", "1\n")              # whatever earlier tests left cached
    assert m.meminfo()["Cached"] == 0
    m.ctl("file data.db 4M")
    pid = m.spawn("reader")
    a = m.mmap(pid, "4M file=data.db")
    m.pctl(pid, f"touch {a:#x} 4M")
    assert m.meminfo()["Cached"] == 4096, "1024 pages of data.db read in"
    m.pctl(pid, f"munmap {a:#x} 4M")
    assert m.meminfo()["Cached"] == 4096, "unmapped, the pages stay cached"
    drops = vmstat(m)["drop_pagecache"]
    m.write("sys/vm/drop_caches", "1\n")
    assert m.meminfo()["Cached"] == 0
    assert vmstat(m)["drop_pagecache"] == drops + 1
    assert m.kmsg_tail(1)[0].endswith("drop_caches: 1 (1024 pages dropped)")
    files = {ln.split()[0]: ln.split() for ln in m.read("files").splitlines()[1:]}
    assert files["/data.db"][2:4] == ["0", "0"], "nothing cached, nothing dirty"
    for bad in ("0", "8"):
        assert write_fails(m, "sys/vm/drop_caches", f"{bad}\n") == errno.EINVAL
    assert vmstat(m)["drop_pagecache"] == drops + 1


# ---------------------------------------------------------------------------
# behaviour that departs from Linux
# ---------------------------------------------------------------------------

def test_killing_the_only_swapped_process_gives_back_all_ram_and_swap(small):
    m = small
    pid = m.spawn("big")
    a = m.mmap(pid, "96M")
    m.pctl(pid, f"fill {a:#x} 96M seed=7")
    assert m.pctl(pid, f"verify {a:#x} 96M seed=7") == "0"
    assert vmstat(m)["swap_ra"] > vmstat(m)["swap_ra_hit"], "some read-ahead pages never used"
    m.ctl(f"kill {pid}")
    mi = m.meminfo()
    assert (mi["SwapFree"], mi["SwapCached"], mi["MemFree"]) == (SWAP_KB, 0, MEMTOTAL_KB)
    assert m.read("swaps") == SWAPS_HEADER + swap_line("/dev/vdb", "partition", SWAP_KB, 0, -2)


def test_swapoff_gives_its_default_priority_back(small):
    m = small
    assert m.ctl("swapon /dev/vdc 10M") == ""
    assert m.ctl("swapoff /dev/vdb") == ""
    assert m.read("swaps") == SWAPS_HEADER + swap_line("/dev/vdc", "partition", 10236, 0, -2)
    assert m.ctl("swapon /dev/vdb 128M") == ""
    # /proc/swaps lists areas by swap type, and swapon takes the lowest free type (0 here).
    assert m.read("swaps") == (SWAPS_HEADER + swap_line("/dev/vdb", "partition", SWAP_KB, 0, -3)
                               + swap_line("/dev/vdc", "partition", 10236, 0, -2))
