#!/usr/bin/env python3
"""Balloon figures: pages a second the virtio balloon inflates and deflates, idle and pressed.

Engine only (no mount): machines are built from config text, driven by
Machine.balloon_set_target and Machine.step (the balloon driver is a
background task that moves `actual` towards `target`, at most 2048 pages a
tick), and by calling the driver's own Balloon.inflate(n) / Balloon.deflate(n)
under the engine lock (what one tick does, without a tick's limit or its other
tasks). Counters are the machine's vmstat.

Two machines:

    small   config/small.yaml: 64 MiB of RAM (13825 pages managed), one node,
            128 MiB of swap behind zswap.
    4g      config/default.yaml (4 GiB on two nodes, 1 GiB of swap behind
            zswap) without its `processes` section, so nothing runs but what
            the benchmark starts.

For each machine, N pages (by default half of the managed pages, rounded
down to a multiple of 2048):

    inflate_idle    a fresh machine (all memory free): Balloon.inflate(N) in
                    one call (`_call`), and, on another fresh machine, target N
                    and the ticks until actual is N (`_ticks`); pages/s, with
                    the time and the ticks.
    deflate         from there, Balloon.deflate(N) in one call (`_call`) and
                    target 0 and the ticks until actual is 0 (`_ticks`);
                    pages/s.
    inflate_pressure
                    a fresh machine where one process first writes a distinct
                    value to every page of an anonymous area that takes free
                    memory down to about the zones' high watermarks (not timed):
                    every page the balloon takes must be reclaimed first (zswap
                    and swap). Inflating P pages (--pressure-pages; by default
                    N on the small machine, 65536 = 256 MiB on the 4 GiB one)
                    in one call and by ticks (on a second such machine; kswapd
                    runs in the ticks too); pages/s, with the reclaim done
                    (pgsteal direct + kswapd, zswpout, pswpout, allocstall).
                    Then `deflate_pressure`: the P pages given back, in one call
                    and by ticks. With the balloon empty again the process
                    reads every value back (not timed; the run stops if one
                    differs).

The idle figures are the best (fastest) of RUNS runs (3); the pressure ones
come from one run each (the fill alone takes seconds on the 4 GiB machine).
The event counts do not change between runs: every run starts from the same
seeded machine.

Usage:
    .venv/bin/python scripts/bench/bench_balloon.py [--quick] [--runs 3]
        [--machines small,4g] [--pages N] [--pressure-pages P]

The default run takes about a minute, most of it on the 4 GiB machine (its
idle runs about 4 s each, its fill about 8 s, twice, each pressured inflate of
65536 pages about 8 s). --quick: one run, P = 16384 on the 4 GiB machine,
about 35 s.
Prints one line per figure, "name: value unit". Nothing is asserted about the
timings.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml  # noqa: E402

from benchlib import say  # noqa: E402

PAGE = 4096
RATE = 2048
SEED = 7
MACHINES = ("small", "4g")


def machine_config(name: str):
    """The config of a bench machine: small.yaml, or default.yaml without its processes."""
    from engine import config
    file = {"small": "small.yaml", "4g": "default.yaml"}[name]
    raw = yaml.safe_load((REPO / "config" / file).read_text())
    raw.pop("processes", None)
    return config.parse(raw, source=f"config/{file} (bench_balloon)")


def fresh(name: str):
    from engine import Machine
    gc.collect()
    return Machine(machine_config(name), paused=True)


def counters(m) -> dict:
    return dict(m.vmstat())


def reclaim_detail(ev0: dict, ev1: dict) -> str:
    d = lambda k: ev1[k] - ev0[k]                                   # noqa: E731
    stalls = sum(ev1[k] - ev0[k] for k in ev1 if k.startswith("allocstall_"))
    return (f"pgsteal {d('pgsteal_direct') + d('pgsteal_kswapd')} (direct {d('pgsteal_direct')}), "
            f"zswpout {d('zswpout')}, pswpout {d('pswpout')}, allocstall {stalls}, "
            f"oom_kill {d('oom_kill')}")


# ---------------------------------------------------------------------------
# the two ways of moving pages
# ---------------------------------------------------------------------------

def by_call(m, n: int, inflate: bool) -> tuple[float, int]:
    """Balloon.inflate(n) or .deflate(n) under the engine lock: (seconds, pages moved)."""
    gc.collect()
    with m.mu:
        t0 = time.perf_counter()
        done = m.balloon.inflate(n) if inflate else m.balloon.deflate(n)
        dt = time.perf_counter() - t0
    return dt, done


def by_ticks(m, target: int, max_ticks: int) -> tuple[float, int, int]:
    """Target, then step one tick at a time until actual is target (or max_ticks):
    (seconds, ticks, pages moved)."""
    start = m.balloon.actual
    m.balloon_set_target(target)
    gc.collect()
    ticks = 0
    t0 = time.perf_counter()
    while m.balloon.actual != target and ticks < max_ticks:
        m.step(1)
        ticks += 1
    dt = time.perf_counter() - t0
    return dt, ticks, abs(m.balloon.actual - start)


def rate(pages: int, dt: float) -> str:
    return f"{pages / dt:.0f}" if dt > 0 else "inf"


# ---------------------------------------------------------------------------
# a machine full of a process's pages
# ---------------------------------------------------------------------------

def filled(name: str):
    """A fresh machine where one process has written every page of an area that takes free
    memory down to about the zones' high watermarks: (machine, pid, addr, pages)."""
    from engine.vmm.vma import VM_READ, VM_WRITE
    m = fresh(name)
    high = sum(z.wmark_high for z in m.zones)
    free = m.meminfo().free
    pages = free - high - free // 256 - 64          # page tables take about 1/512
    pid = m.tasks.spawn("filler")
    addr = m.tasks.mmap(pid, pages * PAGE, prot=VM_READ | VM_WRITE)
    m.tasks.fill(pid, addr, pages * PAGE, seed=SEED)
    return m, pid, addr, pages


def verify(m, pid, addr, pages, what):
    bad = m.tasks.verify(pid, addr, pages * PAGE, seed=SEED)
    if bad:
        sys.exit(f"bench_balloon: {what}: {bad} pages of the process differ")


# ---------------------------------------------------------------------------

def bench_machine(name: str, runs: int, pages: int | None, pressure: int | None) -> None:
    m = fresh(name)
    managed = m.meminfo().total
    n = pages or managed // 2 // RATE * RATE
    p = pressure or (n if name == "small" else 65536)
    say(f"{name}_machine", f"{managed} pages managed ({managed * PAGE >> 20} MiB) on "
        f"{len(m.node_zones)} node(s), swap {m.meminfo().swap_total} pages; N = {n} pages "
        f"({n * PAGE >> 20} MiB), P = {p} pages ({p * PAGE >> 20} MiB), best of {runs}")
    del m
    max_ticks = 4 * (max(n, p) // RATE + 2)

    best: dict[str, tuple[float, int]] = {}

    def keep(key, dt, extra):
        if key not in best or dt < best[key][0]:
            best[key] = (dt, extra)

    for _ in range(runs):
        m = fresh(name)
        dt, done = by_call(m, n, inflate=True)
        if done != n:
            sys.exit(f"bench_balloon: {name}: inflate({n}) took only {done} pages")
        keep("inflate_idle_call", dt, 0)
        dt, done = by_call(m, n, inflate=False)
        keep("deflate_call", dt, 0)
        del m
        m = fresh(name)
        dt, ticks, done = by_ticks(m, n, max_ticks)
        if done != n:
            sys.exit(f"bench_balloon: {name}: the ticks inflated {done} of {n} pages")
        keep("inflate_idle_ticks", dt, ticks)
        dt, ticks, done = by_ticks(m, 0, max_ticks)
        keep("deflate_ticks", dt, ticks)
        del m
    for key in ("inflate_idle_call", "inflate_idle_ticks", "deflate_call", "deflate_ticks"):
        dt, ticks = best[key]
        how = f"{ticks} ticks" if key.endswith("ticks") else "one call"
        say(f"{name}_{key}", rate(n, dt), f"pages/s ({n} pages in {dt * 1000:.1f} ms, {how})")

    # under pressure: one run each
    m, pid, addr, filled_pages = filled(name)
    mi = m.meminfo()
    say(f"{name}_pressure_fill", f"{filled_pages} pages written by one process, MemFree "
        f"{mi.free} pages left")
    ev0 = counters(m)
    dt, done = by_call(m, p, inflate=True)
    ev1 = counters(m)
    say(f"{name}_inflate_pressure_call", rate(done, dt),
        f"pages/s ({done} of {p} pages in {dt:.2f} s, one call; {reclaim_detail(ev0, ev1)})")
    dt, done = by_call(m, done, inflate=False)
    say(f"{name}_deflate_pressure_call", rate(done, dt),
        f"pages/s ({done} pages in {dt * 1000:.1f} ms, one call)")
    # (verified with the balloon deflated: with memory full, the swap-ins would each
    # reclaim, and take far longer than everything measured here)
    verify(m, pid, addr, filled_pages, "after inflate(P) and deflate(P)")
    del m

    m, pid, addr, filled_pages = filled(name)
    ev0 = counters(m)
    dt, ticks, done = by_ticks(m, p, max_ticks)
    ev1 = counters(m)
    say(f"{name}_inflate_pressure_ticks", rate(done, dt),
        f"pages/s ({done} of {p} pages in {dt:.2f} s, {ticks} ticks; {reclaim_detail(ev0, ev1)})")
    dt, ticks, done = by_ticks(m, 0, max_ticks)
    say(f"{name}_deflate_pressure_ticks", rate(done, dt),
        f"pages/s ({done} pages in {dt * 1000:.1f} ms, {ticks} ticks)")
    verify(m, pid, addr, filled_pages, "after the inflate and deflate by ticks")
    del m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run of about 35 s")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--machines", default=",".join(MACHINES),
                    help="small, 4g or both (default small,4g)")
    ap.add_argument("--pages", type=int, help="N: pages inflated on an idle machine "
                    "(default half the managed pages, a multiple of 2048)")
    ap.add_argument("--pressure-pages", type=int, help="P: pages inflated under pressure "
                    "(default N on the small machine, 65536 on the 4 GiB one)")
    args = ap.parse_args()
    machines = [x.strip() for x in args.machines.split(",") if x.strip()]
    for x in machines:
        if x not in MACHINES:
            ap.error(f"--machines: {x!r} is not one of {', '.join(MACHINES)}")
    if args.quick:
        args.runs = 1
    t0 = time.perf_counter()
    for name in machines:
        pressure = args.pressure_pages
        if args.quick and name == "4g" and pressure is None:
            pressure = 16384
        bench_machine(name, args.runs, args.pages, pressure)
    say("total", f"{time.perf_counter() - t0:.0f}", "s")


if __name__ == "__main__":
    main()
