#!/usr/bin/env python3
"""Tick rate of the engine: how many ticks a second the default machine runs.

Engine only (no mount, no ticker thread): the default machine
(config/default.yaml, paused) boots with its four workloads (web, db,
recurse, leak) and is stepped by hand with Machine.step, which is what the
ticker does each tick: every process runs its workload, the background
tasks run, the tick's trace events are formatted and published.

1. `warmup` (ticks/s): the first WARMUP ticks (2500 by default): db maps its
   64M file in, leak grows to its 8M limit (tick 2048), web fills its cache.
2. `ticks` (ticks/s): the steady state after that, the median of WINDOWS
   windows of WINDOW ticks each (5 of 1000 by default), and
   `events_per_tick`: trace events (lines of the `trace` stream) per tick.
3. `ticks_batch`: a batch job is spawned (workers=2 size=4M rate=50: it
   forks workers that each malloc and write 4 MiB, work on it and exit);
   after 100 ticks, the median of WINDOWS windows of WINDOW/2 ticks.
4. `ticks_batch_replay`: a replay of a synthetic Lackey trace is added
   (rate=500 accesses a tick; the trace is long enough to last through the
   windows); measured the same way.

The synthetic trace is written in a temporary folder and removed after: a
loop of instruction fetches over 16 KiB of text, loads and stores within
32 KiB of the stack, and loads and modifies walking a 64 MiB array one
64-byte line at a time (a new page every 64 array accesses), from a fixed
seed. `replay_accesses` says how long it is; `replay_parse` how long spawn
took to read it (s).

Usage:
    .venv/bin/python scripts/bench/bench_ticks.py [--warmup 2500] [--windows 5]
        [--window 1000]

Prints one line per figure, "name: value unit". Nothing is asserted about
the timings.
"""
from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import say  # noqa: E402
from engine import Machine, load  # noqa: E402
from engine.workloads import make  # noqa: E402
from memfs.machines import builtin  # noqa: E402

REPLAY_RATE = 500
SETTLE = 100                     # ticks after a spawn before the windows


def write_lackey(path: str, accesses: int, seed: int = 1) -> None:
    """A synthetic trace in Lackey's format (see the module docstring)."""
    rng = random.Random(seed)
    text, stack, array = 0x400000, 0x1ffefff000, 0x4000000
    pc = cursor = 0
    lines = ["==4242== Lackey, an example Valgrind tool\n"]
    n = 0
    while n < accesses:
        lines.append(f"I  {text + pc:08x},{rng.choice((2, 3, 4, 5, 7))}\n")
        pc = (pc + rng.randint(2, 8)) % (16 << 10)
        r = rng.random()
        if r < 0.3:
            lines.append(f" {'S' if r < 0.1 else 'L'} {stack - rng.randrange(0, 32 << 10, 8):x},8\n")
            n += 1
        elif r < 0.6:
            lines.append(f" {'M' if r < 0.4 else 'L'} {array + cursor:08x},8\n")
            cursor = (cursor + 64) % (64 << 20)
            n += 1
        n += 1
        if len(lines) >= 65536:
            with open(path, "a") as f:
                f.writelines(lines)
            lines.clear()
    with open(path, "a") as f:
        f.writelines(lines)


def windows(m: Machine, count: int, size: int) -> tuple[float, float]:
    """(median ticks/s, trace events per tick) over count windows of size ticks."""
    rates = []
    events = m.trace.events
    ticks = 0
    for _ in range(count):
        gc.collect()
        t0 = time.perf_counter()
        m.step(size)
        rates.append(size / (time.perf_counter() - t0))
        ticks += size
    return statistics.median(rates), (m.trace.events - events) / ticks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warmup", type=int, default=2500, help="ticks before measuring (2500)")
    ap.add_argument("--windows", type=int, default=5, help="measured windows (5)")
    ap.add_argument("--window", type=int, default=1000, help="ticks per window (1000)")
    args = ap.parse_args()
    m = Machine(load(builtin("default")), paused=True)
    gc.collect()
    t0 = time.perf_counter()
    m.step(args.warmup)
    say("warmup", f"{args.warmup / (time.perf_counter() - t0):.0f}", "ticks/s")
    rate, ev = windows(m, args.windows, args.window)
    say("ticks", f"{rate:.0f}", "ticks/s")
    say("events_per_tick", f"{ev:.1f}", "events")

    half = max(1, args.window // 2)
    m.tasks.spawn("batch", workload=make("batch", {"workers": 2, "size": 4 << 20, "rate": 50}))
    m.step(SETTLE)
    rate, ev = windows(m, args.windows, half)
    say("ticks_batch", f"{rate:.0f}", "ticks/s")
    say("events_per_tick_batch", f"{ev:.1f}", "events")

    accesses = (SETTLE + args.windows * half + 50) * REPLAY_RATE
    with tempfile.TemporaryDirectory(prefix="bench_ticks.") as tmp:
        path = os.path.join(tmp, "synthetic.lackey")
        write_lackey(path, accesses)
        t0 = time.perf_counter()
        m.tasks.spawn("replay", workload=make("replay", {"trace": path, "rate": REPLAY_RATE}))
        parse = time.perf_counter() - t0
    say("replay_accesses", len(m.tasks.by_name("replay").workload.pages))
    say("replay_parse", f"{parse:.2f}", "s")
    m.step(SETTLE)
    rate, ev = windows(m, args.windows, half)
    say("ticks_batch_replay", f"{rate:.0f}", "ticks/s")
    say("events_per_tick_batch_replay", f"{ev:.1f}", "events")
    rp = m.tasks.by_name("replay")
    if rp is None or rp.workload is None or rp.workload.done:
        sys.exit("bench_ticks: the replay ended (or died) before the last window")


if __name__ == "__main__":
    main()
