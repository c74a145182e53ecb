#!/usr/bin/env python3
"""Heap figures of the engine: malloc+free rates and the cost of scavenge.

Engine only (no mount). Each malloc+free figure boots a fresh small machine
(config/small.yaml, paused), spawns one process and runs a fixed sequence of
malloc and free calls on its heap, two ways:

- `*_api`: through Machine.tasks.malloc / .free, as the `<pid>/ctl` verbs
  call them: each call takes the engine lock, looks the process up, logs
  malloc in kmsg and publishes its trace events;
- `*_direct`: through Tasks.heap_malloc / .heap_free on the process object,
  as a running workload calls them (no lock, no lookup, no kmsg); the trace
  events are published every 256 pairs, as the end of a busy tick would.

The sequences (the sizes and the choices are drawn before timing starts):

1. `small`: malloc(64), free it, repeat: the same chunk comes back each time.
2. `mixed`: a working set of 1000 live blocks of random sizes from 16 to
   4096 bytes (seed 1); each pair frees a random one of them and mallocs a
   new one of a random size in its place: bins, splits and merges.
3. `large`: malloc(256K), free it, repeat: each block gets its own mapping
   (at least the 128K mmap threshold), so each pair is an mmap, one written
   page (a demand-zero fault) and an munmap.

Figures are pairs/s in the fastest of the rounds (5 by default): these
runs are short, and the best round is the one least disturbed by the rest of
the host.

`scavenge_N` is what malloc_trim costs on a heap with N free areas, on a fresh
default machine (4 GiB, room for the largest heap): the process mallocs N
blocks of 16 KiB, each followed by a small live block that keeps the free
areas apart, writes every 16 KiB block and frees them all; then
Machine.tasks.scavenge runs twice. The first (`scavenge_N`, s) hands back
the whole resident pages inside each free area (three, past the free chunk's
header; `scavenge_N_pages` says how many in all); the second (`scavenge_N_again`, s) finds the
same N areas with nothing resident, so it is the walk alone. Each is also
given per area (µs). The script stops if the first scavenge gives back
fewer than 2N pages.

Usage:
    .venv/bin/python scripts/bench/bench_heap.py [--rounds 5] [--pairs 20000]
        [--scavenge 100,1000,10000]

Prints one line per figure, "name: value unit". Nothing is asserted about
the timings.
"""
from __future__ import annotations

import argparse
import gc
import random
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
from memfs.machines import builtin  # noqa: E402

WORKING_SET = 1000
PUBLISH_EVERY = 256                      # direct path: pairs between trace publishes
LARGE = 256 << 10
SCAVENGE_BLOCK = 16 << 10


def fresh(cfg):
    m = Machine(cfg, paused=True)
    pid = m.tasks.spawn("b")
    return m, pid


def timed(fn) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------
# malloc+free sequences: each returns a function to time
# ---------------------------------------------------------------------------

def same_size(m, pid, pairs: int, size: int, direct: bool):
    t = m.tasks
    if direct:
        p = t.get(pid)
        hm, hf, pub = t.heap_malloc, t.heap_free, m.publish_trace

        def run():
            for i in range(pairs):
                hf(p, hm(p, size))
                if i % PUBLISH_EVERY == PUBLISH_EVERY - 1:
                    pub()
            pub()
    else:
        malloc, free = t.malloc, t.free

        def run():
            for _ in range(pairs):
                free(pid, malloc(pid, size))
    return run


def mixed(m, pid, pairs: int, direct: bool):
    rng = random.Random(1)
    t = m.tasks
    live = [t.malloc(pid, rng.randint(16, 4096)) for _ in range(WORKING_SET)]
    victims = [rng.randrange(WORKING_SET) for _ in range(pairs)]
    sizes = [rng.randint(16, 4096) for _ in range(pairs)]
    if direct:
        p = t.get(pid)
        hm, hf, pub = t.heap_malloc, t.heap_free, m.publish_trace

        def run():
            for i in range(pairs):
                j = victims[i]
                hf(p, live[j])
                live[j] = hm(p, sizes[i])
                if i % PUBLISH_EVERY == PUBLISH_EVERY - 1:
                    pub()
            pub()
    else:
        malloc, free = t.malloc, t.free

        def run():
            for i in range(pairs):
                j = victims[i]
                free(pid, live[j])
                live[j] = malloc(pid, sizes[i])
    return run


def pair_figures(cfg, rounds: int, pairs: int) -> None:
    cases = {
        "small": (pairs, lambda m, pid, n, d: same_size(m, pid, n, 64, d)),
        "mixed": (pairs, mixed),
        "large": (max(1, pairs // 10), lambda m, pid, n, d: same_size(m, pid, n, LARGE, d)),
    }
    for name, (n, build) in cases.items():
        for direct in (False, True):
            times = []
            for _ in range(rounds):
                m, pid = fresh(cfg)
                run = build(m, pid, n, direct)
                times.append(timed(run))
            label = f"{name}_{'direct' if direct else 'api'}"
            say(label, f"{n / min(times):.0f}", "pairs/s")


# ---------------------------------------------------------------------------
# scavenge
# ---------------------------------------------------------------------------

def scavenge_figures(cfg, rounds: int, counts: list[int]) -> None:
    for n in counts:
        first, again = [], []
        for _ in range(rounds):
            m, pid = fresh(cfg)
            t = m.tasks
            blocks = []
            for _ in range(n):
                b = t.malloc(pid, SCAVENGE_BLOCK)
                t.malloc(pid, 64)                        # keeps the free areas apart
                t.memset(pid, b, SCAVENGE_BLOCK)
                blocks.append(b)
            for b in blocks:
                t.free(pid, b)
            got = []
            first.append(timed(lambda: got.append(t.scavenge(pid))))
            again.append(timed(lambda: t.scavenge(pid)))
            if got[0] < 2 * n:
                sys.exit(f"bench_heap: the first scavenge of {n} areas gave back {got[0]} "
                         f"pages, not at least {2 * n}")
        f, a = statistics.median(first), statistics.median(again)
        say(f"scavenge_{n}", f"{f:.4f}", "s")
        say(f"scavenge_{n}_pages", got[0], "pages")
        say(f"scavenge_{n}_per_area", f"{f / n * 1e6:.1f}", "µs")
        say(f"scavenge_{n}_again", f"{a:.4f}", "s")
        say(f"scavenge_{n}_again_per_area", f"{a / n * 1e6:.1f}", "µs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=20000,
                    help="malloc+free pairs per round (large: a tenth of it)")
    ap.add_argument("--scavenge", default="100,1000,10000",
                    help="free-area counts for the scavenge figures, comma-separated")
    args = ap.parse_args()
    say("rounds", args.rounds)
    pair_figures(load(builtin("small")), args.rounds, args.pairs)
    counts = [int(x) for x in args.scavenge.split(",") if x.strip()]
    if counts:
        scavenge_figures(load(builtin("default")), args.rounds, counts)


if __name__ == "__main__":
    main()
