#!/usr/bin/env python3
"""Transparent huge pages: what a 2 MiB page saves on faults, page tables and time.

Engine only (no mount). The 4 GiB default machine without its processes; one
process maps SIZE of anonymous memory (1 GiB by default) and writes every page
(`fill`), first as 4 KiB pages (transparent_hugepage/enabled = never), then on
a fresh machine with `madvise … hugepage` (each 2 MiB-aligned range a THP),
then reads every page back (`verify`). For each: the fill's pages per second,
the faults it took (vmstat pgfault), the page-table pages it used (VmPTE's
pages, deposited tables included) and the THPs mapped; then the time to split
them all (`mprotect` of the whole range read-only: every huge PMD becomes 512
PTEs) and to unmap them (`munmap`: each THP freed as one block).

The figures are the best (fastest) of RUNS runs (3). Counts do not vary.

Usage:
    .venv/bin/python scripts/bench/bench_thp.py [--size 1G] [--runs 3]

Prints one line per figure, "name: value unit". Nothing is asserted about the
timings.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchlib import say  # noqa: E402
from engine import Machine, load  # noqa: E402
from engine.stats import VmEvent  # noqa: E402
from engine.units import parse_number  # noqa: E402
from memfs.machines import builtin  # noqa: E402

SEED = 7


def run(size: int, huge: bool) -> dict:
    m = Machine(load(builtin("default")).without_processes(), paused=True)
    m.thp_set_enabled("madvise" if huge else "never")
    pid = m.tasks.spawn("bench")
    a = m.tasks.mmap(pid, size, prot=3)
    if huge:
        m.tasks.madvise(pid, a, size, "hugepage")
    faults0 = m.events[VmEvent.PGFAULT]
    t0 = time.perf_counter()
    m.tasks.fill(pid, a, size, SEED)
    fill = time.perf_counter() - t0
    faults = m.events[VmEvent.PGFAULT] - faults0
    p = m.tasks.get(pid)
    tables, thps = p.mm.pt_pages, len(p.mm.thp)
    t0 = time.perf_counter()
    bad = m.tasks.verify(pid, a, size, SEED)
    verify = time.perf_counter() - t0
    if bad:
        sys.exit(f"verify: {bad} pages differ")
    t0 = time.perf_counter()
    m.tasks.mprotect(pid, a, size, 1)
    split = time.perf_counter() - t0
    return {"fill": fill, "verify": verify, "faults": faults, "tables": tables, "thps": thps,
            "split": split, "pages": size >> 12}


def unmap_time(size: int) -> float:
    m = Machine(load(builtin("default")).without_processes(), paused=True)
    pid = m.tasks.spawn("bench")
    a = m.tasks.mmap(pid, size, prot=3)
    m.tasks.madvise(pid, a, size, "hugepage")
    m.tasks.fill(pid, a, size, SEED)
    t0 = time.perf_counter()
    m.tasks.munmap(pid, a, size)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1G")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    size = parse_number(args.size)
    for huge in (False, True):
        best = None
        for _ in range(args.runs):
            r = run(size, huge)
            if best is None or r["fill"] < best["fill"]:
                best = {**r, "verify": min(r["verify"], best["verify"]) if best else r["verify"],
                        "split": min(r["split"], best["split"]) if best else r["split"]}
        tag = "thp" if huge else "4k"
        say(f"{tag}_fill", f"{best['pages'] / best['fill'] / 1e6:.2f}", "M pages/s")
        say(f"{tag}_verify", f"{best['pages'] / best['verify'] / 1e6:.2f}", "M pages/s")
        say(f"{tag}_faults", best["faults"])
        say(f"{tag}_page_tables", best["tables"])
        say(f"{tag}_thps", best["thps"])
        if huge:
            say("thp_split_all", f"{best['split'] * 1e3:.1f}", "ms")
    say("thp_munmap", f"{min(unmap_time(size) for _ in range(args.runs)) * 1e3:.1f}", "ms")


if __name__ == "__main__":
    main()
