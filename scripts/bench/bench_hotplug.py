#!/usr/bin/env python3
"""Memory hot-plug figures: the time to offline a 128 MiB block as it fills, and to online one.

Engine only (no mount), driven through Machine's hot-plug commands as the
sysfs files drive them. Each run boots a fresh small machine
(config/small.yaml: 64 MiB of RAM, memory blocks of 128 MiB = 32768 pages,
paused) and gives it room: a 256 MiB DIMM (blocks 32-33 at 4 GiB) onlined to
ZONE_NORMAL. A process is spawned (its stack and page tables land there, not
in the block measured), then block 34 is probed at 4.25 GiB and onlined to
ZONE_MOVABLE, the first zone of every anonymous allocation: the process maps
an area of OCCUPANCY x 32768 pages and writes every page (fill, one distinct
value each), so its pages go into the block. A full block cannot quite be
had: Movable keeps its low watermark (64 pages) free and the fill's last
pages spill into Normal; the figures give the pages the block really held.

    offline_<P>pct   memory_block_set(34, "offline") with P% of the block's
                     frames in use by the process (0, 25, 50, 75, 100 by
                     default; --occupancy): the free frames leave the buddy
                     lists and every page in use is migrated (a new frame,
                     content, PTE, LRU place and gauges follow) to Normal;
                     ms, the pages migrated (pgmigrate_success) and µs per
                     migrated page. The best (fastest) of RUNS runs (3).
                     After each run the process's pages are verified (not
                     timed); the script stops if one was lost. Two untimed
                     runs at 100% come first: without them the first runs
                     in the process cost up to 1.7 times as much a page
                     (the host's first touch of the memory the machines'
                     tables are made of).
    online_movable,  memory_block_set of a freshly probed, empty block to
    online_kernel    Movable or Normal (its frames join the zone's free
                     lists; watermarks, protection, per-cpu stacks and
                     zonelists are worked out again); ms, best of ONLINES (5).
    probe            memory_probe of a new block (its 512-page memmap taken
                     from online memory); ms, best of ONLINES.

Usage:
    .venv/bin/python scripts/bench/bench_hotplug.py [--runs 3] [--onlines 5]
        [--occupancy 0,25,50,75,100]

About 5 s. Prints one line per figure, "name: value unit". Nothing is
asserted about the timings.
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

import numpy as np  # noqa: E402

from benchlib import say  # noqa: E402

PAGE = 4096
MiB = 1 << 20
GiB = 1 << 30
BLOCK = 128 * MiB
BLOCK_PAGES = BLOCK // PAGE
SEED = 7


def machine():
    """The small machine with a 256 MiB DIMM onlined to Normal: room for a whole block."""
    from engine import Machine, load
    from memfs.machines import builtin
    m = Machine(load(builtin("small")), paused=True)
    m.dimm_add(2 * BLOCK, online="online_kernel")
    return m


def used_in_block(m, index: int) -> int:
    from engine.pmm.frames import TYPE_MASK, PageType
    s = index * BLOCK_PAGES
    types = m.ft.flags_np()[s:s + BLOCK_PAGES] & TYPE_MASK
    return int(np.count_nonzero(types != PageType.FREE))


def migrated(m) -> int:
    return dict(m.vmstat())["pgmigrate_success"]


def offline_run(percent: int) -> tuple[float, int, int]:
    """One run on a fresh machine: (seconds, pages in the block, pages migrated)."""
    from engine.vmm.vma import VM_READ, VM_WRITE
    m = machine()
    pid = m.tasks.spawn("filler")
    index = m.memory_probe(4 * GiB + 2 * BLOCK)
    m.memory_block_set(index, "online_movable")
    pages = BLOCK_PAGES * percent // 100
    addr = None
    if pages:
        addr = m.tasks.mmap(pid, pages * PAGE, prot=VM_READ | VM_WRITE)
        m.tasks.fill(pid, addr, pages * PAGE, seed=SEED)
    held = used_in_block(m, index)
    before = migrated(m)
    gc.collect()
    t0 = time.perf_counter()
    m.memory_block_set(index, "offline")
    dt = time.perf_counter() - t0
    moved = migrated(m) - before
    if pages:
        bad = m.tasks.verify(pid, addr, pages * PAGE, seed=SEED)
        if bad:
            sys.exit(f"bench_hotplug: {bad} pages lost their values in the offline at {percent}%")
    return dt, held, moved


def online_time(how: str, onlines: int) -> tuple[float, float]:
    """Best (probe, online) seconds over fresh machines."""
    best_probe = best_online = float("inf")
    for _ in range(onlines):
        m = machine()
        gc.collect()
        t0 = time.perf_counter()
        index = m.memory_probe(4 * GiB + 2 * BLOCK)
        t1 = time.perf_counter()
        m.memory_block_set(index, how)
        t2 = time.perf_counter()
        best_probe, best_online = min(best_probe, t1 - t0), min(best_online, t2 - t1)
    return best_probe, best_online


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="offline runs per occupancy (best of)")
    ap.add_argument("--onlines", type=int, default=5, help="online runs (best of)")
    ap.add_argument("--occupancy", default="0,25,50,75,100",
                    help="percentages of the block's frames in use")
    args = ap.parse_args()
    t_start = time.perf_counter()
    say("hotplug_machine", f"small (64 MiB) + a 256 MiB DIMM in Normal; the block measured: "
        f"128 MiB ({BLOCK_PAGES} pages) in Movable; best of {args.runs} runs")
    offline_run(100)                    # warm-up, not counted: the host's first touch of the
    offline_run(100)                    # memory the machines' tables are made of
    for percent in [int(p) for p in args.occupancy.split(",") if p.strip()]:
        best = None
        for _ in range(args.runs):
            r = offline_run(percent)
            if best is None or r[0] < best[0]:
                best = r
        dt, held, moved = best
        per = f", {dt * 1e6 / moved:.1f} µs per migrated page" if moved else ""
        say(f"offline_{percent}pct", f"{dt * 1000:.1f} ms",
            f"({held} of {BLOCK_PAGES} frames in use, {moved} pages migrated{per})")
    for how in ("online_movable", "online_kernel"):
        probe, online = online_time(how, args.onlines)
        say(how, f"{online * 1000:.2f} ms", f"(an empty 128 MiB block, best of {args.onlines})")
    say("probe", f"{probe * 1000:.2f} ms", f"(a new block and its 512-page memmap, best of "
        f"{args.onlines})")
    say("total", f"{time.perf_counter() - t_start:.0f}", "s")


if __name__ == "__main__":
    main()
