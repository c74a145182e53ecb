#!/usr/bin/env python3
"""Virtual-memory figures of the engine: page faults, fill/verify, fork, exit, munmap.

Engine only (no mount): each round boots a fresh default machine
(config/default.yaml, 4 GiB, paused) and drives it through the same calls
the ctl verbs make (Machine.tasks: spawn, mmap, touch, fill, verify, fork,
kill, munmap), so every figure includes taking the engine lock, the process
lookup and the fault handling around the Vmm. One round, on a region of
SIZE bytes (1 GiB by default, 262144 pages):

1. spawn A; mmap a private read-write anonymous region R of SIZE; touch it
   for write: every page takes a demand-zero write fault that allocates a
   frame (`fault_write`, faults/s).
2. mmap a second region of SIZE and touch it for read: every page takes a
   read fault that maps the shared zero page (`fault_read`, faults/s); then
   munmap it (`munmap_zero`, s: entries to clear, no frame to free).
3. fill R with a seed, then verify it (`fill`, `verify`, pages/s; the pages
   are resident, so no fault: the per-page walk and write or compare).
   A verify that finds a wrong page stops the benchmark.
4. fork A into B (`fork`, s, and `fork_rate`, resident pages copied per
   second: every entry of R is shared copy-on-write).
5. touch R for write in B: every page takes a copy-on-write fault that
   copies the frame (`fault_cow`, faults/s).
6. kill A (`exit`, s, and `exit_rate`, pages/s): A owns its SIZE resident
   pages alone by now, so exit frees every frame and page table.
7. fork B into C and kill C (`exit_shared`, s): every page of C is still
   mapped by B, so exit only drops mapcounts and frees C's page tables.
8. munmap R in B (`munmap`, s, and `munmap_rate`, pages/s): frees SIZE of
   frames.

Each figure is the median over the rounds (5 by default). The fault figures
count page faults from the machine's pgfault event counter, and the script
stops if that count is not one fault per page.

Usage:
    .venv/bin/python scripts/bench/bench_vmm.py [--rounds 5] [--size-mib 1024]

Prints one line per figure, "name: value unit". Nothing is asserted about
the timings.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import say  # noqa: E402
from engine import Machine, load  # noqa: E402
from engine.stats import VmEvent  # noqa: E402
from engine.vmm.vma import VM_READ, VM_WRITE  # noqa: E402
from memfs.machines import builtin  # noqa: E402

PAGE = 4096
RW = VM_READ | VM_WRITE


class Timer:
    """`with timer("name"):` adds one duration (s) to timer.times["name"]."""

    def __init__(self):
        self.times: dict[str, list[float]] = {}
        self._name = None
        self._t0 = 0.0

    def __call__(self, name: str) -> "Timer":
        self._name = name
        return self

    def __enter__(self):
        gc.collect()
        self._t0 = time.perf_counter()

    def __exit__(self, *exc):
        self.times.setdefault(self._name, []).append(time.perf_counter() - self._t0)


def faults(m, pages: int, what: str, fn) -> None:
    """Run fn; it must take exactly one page fault per page."""
    before = m.events[VmEvent.PGFAULT]
    fn()
    n = m.events[VmEvent.PGFAULT] - before
    if n != pages:
        sys.exit(f"bench_vmm: {what} took {n} page faults for {pages} pages")


def one_round(cfg, size: int, timer: Timer) -> None:
    pages = size // PAGE
    m = Machine(cfg, paused=True)
    t = m.tasks
    a = t.spawn("bencha")
    r = t.mmap(a, size, prot=RW)
    with timer("fault_write"):
        faults(m, pages, "touch for write", lambda: t.touch(a, r, size, True))
    z = t.mmap(a, size, prot=RW)
    with timer("fault_read"):
        faults(m, pages, "touch for read", lambda: t.touch(a, z, size, False))
    with timer("munmap_zero"):
        t.munmap(a, z, size)
    with timer("fill"):
        t.fill(a, r, size, 1)
    with timer("verify"):
        bad = t.verify(a, r, size, 1)
    if bad:
        sys.exit(f"bench_vmm: verify found {bad} wrong pages after fill")
    with timer("fork"):
        b = t.fork(a)
    with timer("fault_cow"):
        faults(m, pages, "copy-on-write touch", lambda: t.touch(b, r, size, True))
    with timer("exit"):
        t.kill(a)
    c = t.fork(b)
    with timer("exit_shared"):
        t.kill(c)
    with timer("munmap"):
        t.munmap(b, r, size)
    t.kill(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size-mib", type=int, default=1024, help="region size (default 1024)")
    args = ap.parse_args()
    size = args.size_mib << 20
    pages = size // PAGE
    cfg = load(builtin("default"))
    timer = Timer()
    for _ in range(args.rounds):
        one_round(cfg, size, timer)
    med = {k: statistics.median(v) for k, v in timer.times.items()}
    say("rounds", args.rounds)
    say("region", f"{args.size_mib} MiB, {pages}", "pages")
    for name in ("fault_write", "fault_read", "fault_cow"):
        say(name, f"{pages / med[name]:.0f}", "faults/s")
    for name in ("fill", "verify"):
        say(name, f"{pages / med[name]:.0f}", "pages/s")
    for name in ("fork", "exit", "munmap"):
        say(name, f"{med[name]:.3f}", "s")
        say(f"{name}_rate", f"{pages / med[name]:.0f}", "pages/s")
    say("exit_shared", f"{med['exit_shared']:.3f}", "s")
    say("munmap_zero", f"{med['munmap_zero']:.3f}", "s")


if __name__ == "__main__":
    main()
