#!/usr/bin/env python3
"""Swap and reclaim figures: swap-outs plus swap-ins per second, and the cost of reclaim as RAM grows.

Engine only (no mount): machines are built from config text and driven
through Machine.tasks (spawn, mmap, fill, verify) and, for a program's own
accesses, Vmm.access_many under the engine lock, as a running workload
does. Counters are the machine's vmstat.

Part 1, swap throughput (`swap_*`): the small machine (config/small.yaml:
64 MiB of RAM, one node) with a 512 MiB swap area, once with zswap off
(`zswap: {enabled: false}`) and once with it on (the default, a pool of at
most 20% of RAM). One process maps a private anonymous area of AREA bytes
(192 MiB by default, three times RAM) and

    fill     writes every page a distinct value (fill SEED): once RAM is
             full every new page is found by direct reclaim, which swaps
             older pages out;
    verify   reads every page back and compares (the run stops if one
             differs): every page not in RAM is swapped in (with
             readahead), pushing others out;
    random   RANDOM writes to pages of the area picked at random (seed 1),
             through Vmm.access_many;

and a last verify checks that nothing was lost (not timed). For each phase:
`pswpout+pswpin` per second (device traffic: with zswap on, pswpout counts
pages written back from the pool to the device) and, with zswap on,
`zswpout+zswpin` per second (pages stored to and loaded from the pool), with
the counts and the phase's time. Runs alternate the two modes; each figure
is the best (fastest) of RUNS runs (3). The event counts do not change
between runs (every run starts from the same seeded machine).

Part 2, reclaim cost vs machine size (`reclaim_<N>g_*`): for each size
(1, 4 and 16 GiB by default; --sizes), in a fresh subprocess so that its
host memory is its own, a machine with that much RAM on two NUMA nodes of
half each (the default machine's memory map: the PCI hole below 4 GiB, the
rest remapped above 4 GiB) and swap of a quarter of RAM, at least 512 MiB
(zswap on, as by default):

    boot     Machine(cfg), s.
    fill     four processes (two per node) write distinct values into
             anonymous areas that together take free memory down to the
             zones' high watermarks (most of RAM), with fill; pages/s. `rss`:
             the host process's resident memory grown since before boot, at
             the end (MiB and bytes per frame of RAM), after boot (the frame
             table's 32 bytes a frame, the swap map's 32 bytes a slot) and
             after the fill (plus page tables), and the process's peak.
    first_pass
             a process on each node touches pages until an allocation of its
             node dips under a low watermark, then kswapd runs, tick after
             tick (Reclaimer.kswapd), until every node is back at its high
             watermark. Every page on the lists still has the accessed bit
             of its fill, so this first pass looks at every page of the
             machine once (a referenced anonymous page is activated;
             deactivating clears the bit): µs per page looked at (pgscan +
             pgrefill), with the time, the ticks, the pages on the LRU lists
             and the pages reclaimed. Linear in the frames by nature: the
             per-page figure is what must stay flat.
    direct   the node-0 process touches exactly the pages the allocator can
             still give before every zone is at its min watermark, then
             write-faults BURST (32768) new pages: each allocation that finds
             every zone at min reclaims directly (an allocstall, 32 pages
             asked) and retries. µs per fault, stalls, pages reclaimed, µs per
             page reclaimed.
    kswapd_pass
             from there (zones at or below min), kswapd runs until every
             node is back at its high watermark: a whole kswapd pass from
             below low to high, on aged lists. µs per page reclaimed, with the
             pages reclaimed (they grow with RAM, as the watermarks do).

`reclaim_scaling_<N>g` divides each per-page cost by the smallest size's:
1.00 is flat, the whole linear in the frames. A size that would not fit the
host's memory is not run (the line says so). 64 GiB is not in the default
sizes because the run would take about 3 minutes by itself, most of it
filling 16.7 million frames one page fault at a time: --sizes 1,4,16,64.

Usage:
    .venv/bin/python scripts/bench/bench_swap.py [--quick] [--part swap|reclaim|both]
        [--runs 3] [--area-mib 192] [--swap-mib 512] [--random 20000]
        [--sizes 1,4,16] [--burst 32768]

--quick: one run of a 128 MiB area with 5000 random writes, and the 1 GiB
machine only with a burst of 8192: about 15 s.

Prints one line per figure, "name: value unit". Nothing is asserted about
the timings.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from benchlib import say  # noqa: E402

PAGE = 4096
MiB = 1 << 20
GiB = 1 << 30
FILL_PROCS = 4
SEED = 7

# Host memory a machine size needs, to decide whether it can run: the frame
# table (32 bytes a frame), swap slots (32 bytes each, a quarter of RAM),
# page tables and what Python keeps (measured: under 100 bytes a frame).
HOST_BYTES_PER_FRAME = 160


# ---------------------------------------------------------------------------
# machines
# ---------------------------------------------------------------------------

def small_config(zswap: bool, swap_mib: int):
    """config/small.yaml with one swap area of swap_mib MiB, zswap on or off."""
    from engine import config
    raw = yaml.safe_load((REPO / "config" / "small.yaml").read_text())
    raw["swap"] = [{"name": "/dev/vdb", "size": f"{swap_mib}M"}]
    raw["zswap"] = {"enabled": zswap}
    return config.parse(raw)


SIZED_TEMPLATE = """\
# {ram_gib} GiB of RAM on two NUMA nodes, swap a quarter of that, at least 512M (generated by bench_swap.py)
machine: {{name: swap-bench-{ram_gib}g, seed: 1, cpus: 2}}
clock: {{hz: 100, tick_ms: 10}}
kernel: {{low_reserve: 1M, image_base: 16M, image_size: 32M, struct_page_bytes: 64}}
memory_map:
  - {{start: 0x00000000, size: 4K,        type: reserved}}
  - {{start: 0x00001000, end: 0x0009f000, type: ram}}
  - {{start: 0x0009f000, end: 0x000a0000, type: reserved}}
  - {{start: 0x000a0000, end: 0x000c0000, type: mmio, name: Video RAM area, cache: wc}}
  - {{start: 0x000f0000, end: 0x00100000, type: rom, name: System ROM}}
{ram}  - {{start: 0xfec00000, size: 1K,        type: mmio, name: IOAPIC 0}}
  - {{start: 0xfee00000, size: 4K,        type: mmio, name: Local APIC}}
  - {{start: 0xfffc0000, end: 0x100000000, type: rom, name: Reserved}}
numa:
  nodes:
    - {{id: 0, start: 0, end: {split:#x}, cpus: [0]}}
    - {{id: 1, start: {split:#x}, end: {ram_end:#x}, cpus: [1]}}
  distance: [[10, 21], [21, 10]]
swap:
  - {{name: /dev/vdb, size: {swap_mib}M}}
"""


def sized_config_text(ram_gib: int) -> str:
    """RAM of ram_gib GiB: up to 3 GiB below the PCI hole, the rest above 4 GiB; two nodes."""
    if ram_gib <= 3:
        ram = f"  - {{start: 0x00100000, end: {ram_gib * GiB:#x}, type: ram}}\n"
        ram_end = ram_gib * GiB
        split = ram_end // 2
    else:
        ram = ("  - {start: 0x00100000, end: 0xc0000000, type: ram}\n"
               f"  - {{start: 0x100000000, size: {ram_gib - 3}G, type: ram}}\n")
        ram_end = (ram_gib + 1) * GiB
        split = (ram_gib // 2 + (1 if ram_gib // 2 > 3 else 0)) * GiB   # half the RAM each
    return SIZED_TEMPLATE.format(ram_gib=ram_gib, ram=ram, split=split, ram_end=ram_end,
                                 swap_mib=max(512, ram_gib * 1024 // 4))


def counters(m) -> dict:
    return dict(m.vmstat())


def delta(before: dict, after: dict, *names) -> int:
    return sum(after[n] - before[n] for n in names)


def allocstalls(ev: dict) -> int:
    return sum(v for k, v in ev.items() if k.startswith("allocstall_"))


# ---------------------------------------------------------------------------
# part 1: swap throughput on the small machine
# ---------------------------------------------------------------------------

PHASES = ("fill", "verify", "random")
SWAP_EVENTS = ("pswpout", "pswpin", "zswpout", "zswpin", "pgmajfault", "pgsteal_direct",
               "pgsteal_kswapd", "allocstall")


def swap_run(zswap: bool, area: int, nrandom: int, swap_mib: int) -> dict:
    """One run on a fresh small machine: {phase: (seconds, {event: count})}."""
    from engine import Machine
    from engine.vmm.vma import VM_READ, VM_WRITE
    m = Machine(small_config(zswap, swap_mib), paused=True)
    t = m.tasks
    pid = t.spawn("swapper")
    addr = t.mmap(pid, area, prot=VM_READ | VM_WRITE)
    pages = area // PAGE
    rng = np.random.default_rng(1)
    vas = (addr + rng.integers(0, pages, nrandom, dtype=np.int64) * PAGE).tolist()
    writes = [True] * nrandom
    out = {}

    def phase(name, fn):
        gc.collect()
        ev0 = counters(m)
        t0 = time.perf_counter()
        r = fn()
        dt = time.perf_counter() - t0
        ev1 = counters(m)
        ev = {k: ev1[k] - ev0[k] for k in ev1 if k in SWAP_EVENTS}
        ev["allocstall"] = allocstalls(ev1) - allocstalls(ev0)
        out[name] = (dt, ev)
        return r

    def random_writes():
        with m.mu:
            p = t.procs[pid]
            m.vmm.current = p
            try:
                m.vmm.access_many(p, vas, writes)
            finally:
                m.vmm.current = None

    n = phase("fill", lambda: t.fill(pid, addr, area, SEED))
    if n != pages:
        sys.exit(f"bench_swap: fill wrote {n} pages of {pages}")
    bad = phase("verify", lambda: t.verify(pid, addr, area, SEED))
    if bad:
        sys.exit(f"bench_swap: verify found {bad} wrong pages (zswap {'on' if zswap else 'off'})")
    phase("random", random_writes)
    bad = t.verify(pid, addr, area, SEED)
    if bad:
        sys.exit(f"bench_swap: after the random writes, {bad} pages differ")
    out["ram_pages"] = m.total_ram_pages()
    return out


def part_swap(runs: int, area_mib: int, nrandom: int, swap_mib: int) -> None:
    area = area_mib * MiB
    pages = area // PAGE
    best: dict[tuple[bool, str], tuple[float, dict]] = {}
    ram_pages = None
    for _ in range(runs):
        for zswap in (False, True):                  # alternate: the host is noisy
            r = swap_run(zswap, area, nrandom, swap_mib)
            ram_pages = r["ram_pages"]
            for ph in PHASES:
                dt, ev = r[ph]
                key = (zswap, ph)
                if key not in best or dt < best[key][0]:
                    best[key] = (dt, ev)
    say("swap_machine", f"small: 64 MiB RAM ({ram_pages} pages managed), {swap_mib} MiB swap, "
        f"area {area_mib} MiB ({pages} pages), {nrandom} random writes, best of {runs}")
    for zswap in (False, True):
        mode = "zswap_on" if zswap else "zswap_off"
        for ph in PHASES:
            dt, ev = best[(zswap, ph)]
            dev = ev["pswpout"] + ev["pswpin"]
            z = ev["zswpout"] + ev["zswpin"]
            n = pages if ph != "random" else nrandom
            detail = (f"pswpout {ev['pswpout']} pswpin {ev['pswpin']}"
                      + (f" zswpout {ev['zswpout']} zswpin {ev['zswpin']}" if zswap else "")
                      + f" majflt {ev['pgmajfault']} allocstall {ev['allocstall']}"
                      f" pgsteal {ev['pgsteal_direct'] + ev['pgsteal_kswapd']};"
                      f" {dt:.2f} s, {n / dt:.0f} pages/s")
            value = f"{dev / dt:.0f} pswpout+pswpin/s"
            if zswap:
                value += f", {z / dt:.0f} zswpout+zswpin/s"
            say(f"swap_{ph}_{mode}", value, f"({detail})")


# ---------------------------------------------------------------------------
# part 2: reclaim cost against machine size (one subprocess per size)
# ---------------------------------------------------------------------------

def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


class Pusher:
    """A process on a given node that write-touches fresh pages of a big anonymous area, in order."""

    def __init__(self, m, area_bytes: int, node: int):
        from engine.vmm.vma import VM_READ, VM_WRITE
        t = m.tasks
        self.m = m
        for _ in range(2 * m.config.cpus):
            pid = t.spawn(f"pusher{node}")
            if t.procs[pid].node == node:
                break
            t.kill(pid)
        self.pid = pid
        self.proc = t.procs[pid]
        self.addr = t.mmap(pid, area_bytes, prot=VM_READ | VM_WRITE)
        self.end = self.addr + area_bytes
        self.cur = self.addr

    def touch(self, n: int) -> None:
        if self.cur + n * PAGE > self.end:
            raise SystemExit("bench_swap: the pusher's area is used up")
        self.m.tasks.touch(self.pid, self.cur, n * PAGE, True)
        self.cur += n * PAGE

    def zonelist(self):
        from engine.pmm.zone import ZONE_MOVABLE
        return self.m.pmm.zonelist(self.proc.node, ZONE_MOVABLE)

    def below_low(self) -> int:
        """0 once a zone of its node is under its low mark, else about the pages the
        allocator gives before one is."""
        from engine.pmm.zone import ZONE_MOVABLE
        if any(z.free_pages < z.wmark_low for z in self.m.node_zones[self.proc.node]
               if z.managed_pages):
            return 0
        return sum(max(0, z.free_pages - z.wmark_low - z.lowmem_reserve[ZONE_MOVABLE])
                   for z in self.zonelist()) + 1

    def above_min(self) -> int:
        """Pages the allocator gives before every zone it may use is at its min mark."""
        from engine.pmm.zone import ZONE_MOVABLE
        return self.m.pmm.available_pages(self.zonelist(), ZONE_MOVABLE)

    def until(self, remaining) -> int:
        """Touch pages until remaining() is 0; returns the pages touched."""
        n = 0
        while True:
            left = remaining()
            if left <= 0:
                return n
            step = max(1, left - left // 256 - 2)     # page tables take frames too
            self.touch(step)
            n += step


def size_child(ram_gib: int, burst: int, zswap: bool = True) -> dict:
    """Runs in the subprocess for one machine size; returns the figures."""
    from engine import Machine, config
    from engine.pmm.zone import ZONE_MOVABLE
    from engine.reclaim.lru import NR_LRU
    from engine.vmm.vma import VM_READ, VM_WRITE

    raw = yaml.safe_load(sized_config_text(ram_gib))
    raw["zswap"] = {"enabled": zswap}
    cfg = config.parse(raw)
    gc.collect()
    rss0 = _status_kb("VmRSS")
    r: dict = {}
    t0 = time.perf_counter()
    m = Machine(cfg, paused=True)
    r["boot_s"] = time.perf_counter() - t0
    r["frames"] = cfg.ram_bytes // PAGE
    r["managed"] = m.total_ram_pages()
    r["swap_slots"] = m.swap.total_slots()
    r["rss_boot"] = (_status_kb("VmRSS") - rss0) * 1024
    node0 = [z for z in m.node_zones[0] if z.managed_pages]
    r["wmarks0"] = [(z.name, z.wmark_min, z.wmark_low, z.wmark_high) for z in node0]

    # fill: four processes take free memory down to the high watermarks
    t = m.tasks
    target = sum(max(0, z.free_pages - z.wmark_high - z.lowmem_reserve[ZONE_MOVABLE])
                 for z in m.zones if z.managed_pages)
    per = target // FILL_PROCS
    per -= per // 256                                # their page tables
    procs = []
    for k in range(FILL_PROCS):
        pid = t.spawn(f"fill{k}")
        procs.append((pid, t.mmap(pid, per * PAGE, prot=VM_READ | VM_WRITE)))
    gc.collect()
    t0 = time.perf_counter()
    for k, (pid, addr) in enumerate(procs):
        t.fill(pid, addr, per * PAGE, SEED + k)
    r["fill_s"] = time.perf_counter() - t0
    r["fill_pages"] = per * FILL_PROCS
    r["rss_fill"] = (_status_kb("VmRSS") - rss0) * 1024

    pushers = [Pusher(m, cfg.ram_bytes, node) for node in range(len(m.node_zones))]
    pusher = pushers[0]
    rc = m.reclaim
    tick = [0]

    def kswapd_until_balanced(limit: int = 1 << 20) -> tuple[float, int, float]:
        """Run kswapd tick after tick until every node is balanced; (seconds, ticks, the
        longest tick's seconds)."""
        gc.collect()
        ticks = 0
        longest = 0.0
        t0 = time.perf_counter()
        with m.mu:
            while True:
                tick[0] += 1
                t1 = time.perf_counter()
                rc.kswapd(tick[0])
                longest = max(longest, time.perf_counter() - t1)
                ticks += 1
                if not any(rc.kswapd_active) or ticks >= limit:
                    break
        return time.perf_counter() - t0, ticks, longest

    def pass_figures(key: str, ev0: dict, ev1: dict, dt: float, ticks: int = 0,
                     longest: float = 0.0) -> None:
        r[key] = {
            "s": dt, "ticks": ticks, "longest": longest,
            "scanned": delta(ev0, ev1, "pgscan_kswapd", "pgscan_direct"),
            "refill": delta(ev0, ev1, "pgrefill"),
            "reclaimed": delta(ev0, ev1, "pgsteal_kswapd", "pgsteal_direct"),
            "pswpout": delta(ev0, ev1, "pswpout"), "zswpout": delta(ev0, ev1, "zswpout"),
        }

    # first pass: every node below its low mark; every page still referenced since its fill
    r["push_low"] = sum(p.until(p.below_low) for p in pushers)
    r["lru"] = sum(m.vmm.lru.size(n, k) for n in range(len(m.node_zones)) for k in range(NR_LRU))
    ev0 = counters(m)
    res = kswapd_until_balanced()
    pass_figures("first_pass", ev0, counters(m), *res)

    # direct reclaim: a burst of faults with every zone at min
    r["push_min"] = pusher.until(pusher.above_min)
    ev0 = counters(m)
    gc.collect()
    t0 = time.perf_counter()
    pusher.touch(burst)
    dt = time.perf_counter() - t0
    ev1 = counters(m)
    pass_figures("direct", ev0, ev1, dt)
    r["direct"]["stalls"] = allocstalls(ev1) - allocstalls(ev0)
    r["direct"]["faults"] = burst

    # kswapd from at or below min back to high, on aged lists
    ev0 = counters(m)
    res = kswapd_until_balanced()
    pass_figures("kswapd_pass", ev0, counters(m), *res)
    r["rss_end"] = (_status_kb("VmRSS") - rss0) * 1024
    r["hwm"] = _status_kb("VmHWM") * 1024
    return r


def host_limits() -> tuple[int, int]:
    """(available host memory in bytes, CPUs)."""
    avail = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    return avail, os.cpu_count() or 1


def print_size(g: int, r: dict, wall: float) -> None:
    p = f"reclaim_{g}g"
    frames = r["frames"]
    say(f"{p}_machine", f"{frames} frames, {r['managed']} managed, swap {r['swap_slots']} pages; "
        "node 0 min/low/high " + ", ".join(f"{n} {a}/{b}/{c}" for n, a, b, c in r["wmarks0"]))
    say(f"{p}_boot", f"{r['boot_s']:.2f}", "s")
    say(f"{p}_fill", f"{r['fill_pages'] / r['fill_s']:.0f}",
        f"pages/s ({r['fill_pages']} pages in {r['fill_s']:.1f} s)")
    say(f"{p}_rss", f"{r['rss_end'] / MiB:.0f}",
        f"MiB ({r['rss_end'] / frames:.1f} bytes/frame; after boot {r['rss_boot'] / MiB:.0f} MiB, "
        f"{r['rss_boot'] / frames:.1f} bytes/frame; after the fill {r['rss_fill'] / MiB:.0f} MiB; "
        f"process peak {r['hwm'] / MiB:.0f} MiB)")
    fp = r["first_pass"]
    looked = fp["scanned"] + fp["refill"]
    say(f"{p}_first_pass", f"{fp['s'] * 1e6 / max(1, looked):.2f}",
        f"µs/page looked at ({fp['s']:.2f} s in {fp['ticks']} ticks, the longest "
        f"{fp['longest']:.2f} s; LRU {r['lru']} pages: "
        f"scanned {fp['scanned']}, refill {fp['refill']}, reclaimed {fp['reclaimed']})")
    d = r["direct"]
    say(f"{p}_direct", f"{d['s'] * 1e6 / d['faults']:.1f}",
        f"µs/fault ({d['faults']} faults at min in {d['s']:.2f} s: {d['stalls']} stalls, "
        f"reclaimed {d['reclaimed']}, {d['s'] * 1e6 / max(1, d['reclaimed']):.1f} µs/page "
        f"reclaimed; scanned {d['scanned']}, refill {d['refill']})")
    kp = r["kswapd_pass"]
    say(f"{p}_kswapd_pass", f"{kp['s'] * 1e6 / max(1, kp['reclaimed']):.1f}",
        f"µs/page reclaimed ({kp['reclaimed']} pages in {kp['s'] * 1e3:.0f} ms, {kp['ticks']} "
        f"ticks, the longest {kp['longest'] * 1e3:.0f} ms; scanned {kp['scanned']}, refill {kp['refill']})")
    say(f"{p}_wall", f"{wall:.1f}", "s")


def part_reclaim(sizes: list[int], burst: int, zswap: bool) -> None:
    avail, cpus = host_limits()
    say("reclaim_host", f"{cpus} CPUs, {avail / GiB:.1f} GiB of memory available; machines "
        f"with zswap {'on' if zswap else 'off'}")
    rows = []
    for g in sizes:
        need = g * GiB // PAGE * HOST_BYTES_PER_FRAME
        if need > avail * 0.8:
            say(f"reclaim_{g}g", f"not run: needs about {need / GiB:.1f} GiB of host memory "
                f"({HOST_BYTES_PER_FRAME} bytes a frame), {avail / GiB:.1f} GiB available")
            continue
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--size-child", str(g), "--burst",
                              str(burst), "--zswap", "on" if zswap else "off"],
                             capture_output=True, text=True, cwd=REPO)
        if out.returncode != 0:
            last = (out.stderr or out.stdout).strip().splitlines()[-1:]
            say(f"reclaim_{g}g", f"failed: {last[0] if last else out.returncode}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print_size(g, r, time.perf_counter() - t0)
        rows.append((g, r))
    if len(rows) < 2:
        return
    g0, r0 = rows[0]

    def costs(r):
        fp, d, kp = r["first_pass"], r["direct"], r["kswapd_pass"]
        return (fp["s"] / max(1, fp["scanned"] + fp["refill"]), d["s"] / d["faults"],
                kp["s"] / max(1, kp["reclaimed"]))

    c0 = costs(r0)
    for g, r in rows[1:]:
        c = costs(r)
        say(f"reclaim_scaling_{g}g", f"{r['frames'] / r0['frames']:.0f}x the frames of "
            f"{g0} GiB: per-page cost x{c[0] / c0[0]:.2f} first_pass, x{c[1] / c0[1]:.2f} "
            f"direct, x{c[2] / c0[2]:.2f} kswapd_pass (1.00: flat, linear overall)")


# ---------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    ap.add_argument("--part", choices=("swap", "reclaim", "both"), default="both")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--area-mib", type=int, default=192)
    ap.add_argument("--swap-mib", type=int, default=512)
    ap.add_argument("--random", type=int, default=20000)
    ap.add_argument("--sizes", help="machine sizes in GiB (default 1,4,16)")
    ap.add_argument("--burst", type=int, default=32768)
    ap.add_argument("--zswap", choices=("on", "off"), default="on",
                    help="zswap on the part-2 machines (default on, as configs have it)")
    ap.add_argument("--size-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.size_child:
        print(json.dumps(size_child(args.size_child, args.burst, args.zswap == "on")))
        return
    default_sizes = args.sizes is None
    if args.quick:
        args.runs, args.area_mib, args.random = 1, 128, 5000
        args.sizes, args.burst = args.sizes or "1", 8192
    args.sizes = args.sizes or "1,4,16"
    t0 = time.perf_counter()
    if args.part in ("swap", "both"):
        part_swap(args.runs, args.area_mib, args.random, args.swap_mib)
    if args.part in ("reclaim", "both"):
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
        part_reclaim(sizes, args.burst, args.zswap == "on")
        if default_sizes and not args.quick:
            say("reclaim_64g", "not run by default: it takes about 2.5 minutes by itself (the "
                "fill of 16.7 million frames, one page fault each, and the first pass over "
                "them); --sizes 1,4,16,64 runs it (under 1 GiB of host memory)")
    say("total", f"{time.perf_counter() - t0:.0f}", "s")


if __name__ == "__main__":
    main()
