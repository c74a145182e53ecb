#!/usr/bin/env python3
"""Latency of reading `meminfo` through a memfs mount while the default machine runs (DESIGN §6).

What it measures, and how:

- Mounts the default machine with the CLI (`memfs mount MNT`, MNT a fresh
  temporary directory) with its clock running, not paused: the read latency
  that counts is the one users get while the engine ticks in the same
  process. The mount is always taken down at the end (`memfs umount MNT`,
  then fusermount -u / -uz if anything is left), even on errors or Ctrl-C.
- Two targets: MNT/meminfo and the host's /proc/meminfo, read the same way in
  the same run. Two ways of reading each:
    `os`: os.open(path, O_RDONLY); os.read(fd, 65536); os.close(fd)
          (OPEN + READ + FLUSH/RELEASE through FUSE);
    `py`: open(path, "rb").read() (adds an ioctl and a second, EOF read).
- A control: MNT/clock, a file of a few lines that costs next to nothing to
  render, read the same two ways (`memfs_clock_*`): the FUSE round trips
  alone, so that meminfo minus clock is what rendering meminfo costs
  (--no-control leaves it out).
- Each read is timed alone with time.perf_counter_ns. Targets and ways are
  interleaved in chunks (default 20 chunks of 500 reads per target and way,
  the order rotating from chunk to chunk) so that drifts in host load hit
  them all alike, after a short warm-up. Reported: median and 90th
  percentile (nearest rank), in microseconds, per target and way, and the
  ratio of the mount's meminfo median to the host's.
- `ticks_during_run` (from MNT/clock before and after) shows that the
  machine's clock advanced while the reads ran.

Usage:
    .venv/bin/python scripts/bench/bench_read_latency.py [--chunks 20] [--per-chunk 500]
        [--no-control] [--config FILE] [--memfs PATH]

Prints one line per figure, "name: value unit". Nothing is asserted about
the timings. When the CLI cannot mount, the line says
"mount: not measured (reason)" and the script exits with status 1.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
from benchlib import say  # noqa: E402

HOST_MEMINFO = "/proc/meminfo"
WARMUP = 50


# ---------------------------------------------------------------------------
# the machine's clock
# ---------------------------------------------------------------------------

def read_tick(mnt: str) -> int | None:
    """The tick count from MNT/clock (`tick N`, `tick: N` or `tick=N`), or None."""
    try:
        with open(os.path.join(mnt, "clock"), "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    m = re.search(r"\btick\b\s*[:=]?\s*(\d+)", text)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------
# the reads
# ---------------------------------------------------------------------------

def read_os(path: str) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return len(os.read(fd, 65536))
    finally:
        os.close(fd)


def read_py(path: str) -> int:
    with open(path, "rb") as f:
        return len(f.read())


WAYS = {"os": read_os, "py": read_py}


def time_reads(fn, path: str, n: int, out: list[float]) -> None:
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        if fn(path) == 0:
            raise RuntimeError(f"bench_read_latency: {path} read back empty")
        out.append((clock() - t0) / 1000.0)


def percentile(sorted_us: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    k = max(0, min(len(sorted_us) - 1, math.ceil(q / 100.0 * len(sorted_us)) - 1))
    return sorted_us[k]


def run(targets: dict[str, str], chunks: int, per_chunk: int) -> dict[tuple[str, str], list[float]]:
    cases = [(t, w) for t in targets for w in WAYS]
    samples: dict[tuple[str, str], list[float]] = {c: [] for c in cases}
    for t, w in cases:                               # warm-up: caches, dentries, threads
        time_reads(WAYS[w], targets[t], WARMUP, [])
    for chunk in range(chunks):
        shift = chunk % len(cases)
        for t, w in cases[shift:] + cases[:shift]:
            time_reads(WAYS[w], targets[t], per_chunk, samples[(t, w)])
    return samples


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", type=int, default=20)
    ap.add_argument("--per-chunk", type=int, default=500, help="reads per target and way per chunk")
    ap.add_argument("--no-control", dest="control", action="store_false",
                    help="do not also time MNT/clock (the FUSE round trip without meminfo's rendering)")
    ap.add_argument("--config", help="machine description (default: the embedded default machine)")
    ap.add_argument("--memfs", help="the memfs command (default: the one beside this python)")
    args = ap.parse_args()

    memfs = benchlib.find_memfs(args.memfs)
    if memfs is None:
        say("mount", "not measured (no memfs command found)")
        return 1
    tmp = tempfile.mkdtemp(prefix="memfs-bench-")
    mnt = os.path.join(tmp, "mnt")
    os.mkdir(mnt)
    try:
        try:
            benchlib.mount(memfs, mnt, args.config)
        except benchlib.MountError as e:
            say("mount", f"not measured ({e})")
            return 1
        targets = {"memfs_meminfo": os.path.join(mnt, "meminfo"), "host_meminfo": HOST_MEMINFO}
        if args.control:
            targets["memfs_clock"] = os.path.join(mnt, "clock")
        tick0 = read_tick(mnt)
        samples = run(targets, args.chunks, args.per_chunk)
        tick1 = read_tick(mnt)
    finally:
        benchlib.unmount(memfs, mnt)
        if not benchlib.is_mount(mnt):
            shutil.rmtree(tmp, ignore_errors=True)

    say("reads_per_case", args.chunks * args.per_chunk, "reads")
    medians = {}
    for (t, w), us in samples.items():
        us.sort()
        medians[(t, w)] = statistics.median(us)
        say(f"{t}_{w}_median", f"{medians[(t, w)]:.1f}", "us")
        say(f"{t}_{w}_p90", f"{percentile(us, 90):.1f}", "us")
    for w in WAYS:
        ratio = medians[("memfs_meminfo", w)] / medians[("host_meminfo", w)]
        say(f"memfs_over_host_{w}_median", f"{ratio:.1f}", "x")
    if tick0 is None or tick1 is None:
        say("ticks_during_run", "not measured (no tick count in MNT/clock)")
    else:
        say("ticks_during_run", tick1 - tick0, "ticks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
