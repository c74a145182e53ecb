#!/usr/bin/env python3
"""Time to read a big process's page-table files through the mount.

Mounts the default machine (paused, so the figures are the reads alone),
spawns a process, maps 1 GiB with populate (262144 resident pages, 513 page
tables), then times:
- `cat PID/pte` (the whole human dump, one line per entry: ~23 MiB);
- reading PID/pagemap for the 1 GiB range (2 MiB of entries) in 64 KiB reads,
  as tools that walk a mapping do;
- `cat PID/smaps` and `PID/status`, for scale.
Each figure is the median of a few repetitions.

    .venv/bin/python scripts/bench/bench_proc_files.py [--memfs PATH] [--reps N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

GIB = 1 << 30


def ctl(path: str, command: str) -> str:
    fd = os.open(path, os.O_RDWR)
    try:
        os.write(fd, command.encode())
        return os.read(fd, 4096).decode().strip()
    finally:
        os.close(fd)


def timed(fn, reps: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def cat(path: str) -> int:
    return len(subprocess.run(["cat", path], capture_output=True, check=True).stdout)


def read_pagemap(path: str, start: int, length: int) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        off, end, got = start // 4096 * 8, (start + length) // 4096 * 8, 0
        while off < end:
            chunk = os.pread(fd, min(65536, end - off), off)
            if not chunk:
                break
            got += len(chunk)
            off += len(chunk)
        return got
    finally:
        os.close(fd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--memfs", help="the memfs command (default: the one in .venv)")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    memfs = benchlib.find_memfs(args.memfs)
    mnt = tempfile.mkdtemp(prefix="memfs-bench-")
    try:
        benchlib.mount(memfs, mnt, "default", ["--paused"])
        pid = ctl(f"{mnt}/ctl", "spawn bench")
        t0 = time.perf_counter()
        addr = int(ctl(f"{mnt}/{pid}/ctl", "mmap 1G populate"), 16)
        benchlib.say("mmap_1G_populate", f"{time.perf_counter() - t0:.2f}", "s")
        t, size = timed(lambda: cat(f"{mnt}/{pid}/pte"), args.reps)
        benchlib.say("cat_pte_1G", f"{t:.2f}", f"s ({size / (1 << 20):.1f} MiB)")
        t, size = timed(lambda: read_pagemap(f"{mnt}/{pid}/pagemap", addr, GIB), args.reps)
        benchlib.say("read_pagemap_1G_range", f"{t * 1000:.0f}", f"ms ({size >> 10} KiB)")
        t, size = timed(lambda: cat(f"{mnt}/{pid}/smaps"), args.reps)
        benchlib.say("cat_smaps", f"{t * 1000:.0f}", "ms")
        t, size = timed(lambda: cat(f"{mnt}/{pid}/status"), args.reps)
        benchlib.say("cat_status", f"{t * 1000:.1f}", "ms")
    except benchlib.MountError as e:
        print(f"bench_proc_files: {e}", file=sys.stderr)
        return 1
    finally:
        benchlib.unmount(memfs, mnt)
        os.rmdir(mnt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
