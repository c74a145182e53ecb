"""Fixtures for tests through a real FUSE mount.

Each fixture mounts a fresh machine with the memfs CLI in a temporary
directory and always unmounts it, even when the test fails. Where FUSE is
missing, the tests fail and say why: they never skip silently.
"""
from __future__ import annotations

import ctypes.util
import errno
import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

MEMFS = [sys.executable, "-m", "memfs"]


def fuse_problem() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing: this machine cannot mount FUSE filesystems"
    if not ctypes.util.find_library("fuse"):
        return "libfuse 2 is not installed (scripts/install.sh installs libfuse2)"
    return None


def memfs(*args, check=True, timeout=60, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(MEMFS + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"memfs {' '.join(map(str, args))} exited {r.returncode}: {r.stderr}")
    return r


class Mounted:
    """A mounted machine: its path plus small helpers for reading and commanding it."""

    def __init__(self, path: Path):
        self.path = path

    def __truediv__(self, rel: str) -> Path:
        return self.path / rel

    def read(self, rel: str) -> str:
        return (self.path / rel).read_text()

    def ctl(self, command: str, rel: str = "ctl") -> str:
        """Write a command to a ctl file and return its result line (transaction file)."""
        fd = os.open(self.path / rel, os.O_RDWR)
        try:
            os.write(fd, command.encode() + b"\n")
            return os.read(fd, 65536).decode().strip()
        finally:
            os.close(fd)

    def write(self, rel: str, text: str) -> None:
        with open(self.path / rel, "w") as f:
            f.write(text)

    def write_errno(self, rel: str, text: str) -> int:
        """Write text to a file in one write(2): 0 if it was accepted, else the errno (of the
        open or of the write)."""
        try:
            fd = os.open(self.path / rel, os.O_WRONLY)
        except OSError as e:
            return e.errno
        try:
            os.write(fd, text.encode())
        except OSError as e:
            return e.errno
        finally:
            os.close(fd)
        return 0

    def meminfo(self) -> dict[str, int]:
        out = {}
        for line in self.read("meminfo").splitlines():
            key, _, rest = line.partition(":")
            out[key] = int(rest.split()[0])
        return out

    def kmsg_tail(self, n: int = 1) -> list[str]:
        return self.read("kmsg").splitlines()[-n:]

    def step(self, n: int) -> None:
        self.write("clock", f"step {n}\n")

    # --- processes -------------------------------------------------------

    def rejected(self, command: str, rel: str = "ctl") -> tuple[int, str]:
        """Write a command that must fail; returns (errno, the reason read back on the same fd)."""
        fd = os.open(self.path / rel, os.O_RDWR)
        try:
            try:
                os.write(fd, command.encode() + b"\n")
            except OSError as e:
                code = e.errno
            else:
                raise AssertionError(f"{rel}: {command!r} was accepted")
            return code, os.read(fd, 4096).decode()
        finally:
            os.close(fd)

    def spawn(self, name: str, *options: str) -> int:
        return int(self.ctl(" ".join(("spawn", name) + options)))

    def pctl(self, pid: int, command: str) -> str:
        """A command on a process's own ctl file."""
        return self.ctl(command, f"{pid}/ctl")

    def mmap(self, pid: int, args: str) -> int:
        return int(self.pctl(pid, f"mmap {args}"), 16)

    def pids(self) -> set[int]:
        return {int(n) for n in os.listdir(self.path) if n.isdigit()}

    def kb(self, rel: str) -> dict[str, int]:
        """`Key: N [kB]` lines of a file (status, smaps_rollup, meminfo) as a dict of numbers."""
        out = {}
        for line in self.read(rel).splitlines():
            key, colon, rest = line.partition(":")
            words = rest.split()
            if colon and words and re.fullmatch(r"-?\d+", words[0]):
                out[key] = int(words[0])
        return out

    def status(self, pid: int) -> dict[str, int]:
        return self.kb(f"{pid}/status")

    def trace_end(self) -> int:
        """The trace stream's length now: a mark for trace_since."""
        return os.stat(self.path / "trace").st_size

    def trace_since(self, offset: int) -> list[str]:
        """The trace lines from absolute offset to the current end (never blocks)."""
        fd = os.open(self.path / "trace", os.O_RDONLY | os.O_NONBLOCK)
        try:
            os.lseek(fd, offset, os.SEEK_SET)
            data = b""
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(fd)
        return data.decode().splitlines()

    def u64s(self, rel: str, index: int, count: int = 1) -> list[int]:
        """count little-endian u64 entries from a binary file, starting at entry index."""
        fd = os.open(self.path / rel, os.O_RDONLY)
        try:
            data = os.pread(fd, 8 * count, 8 * index)
        finally:
            os.close(fd)
        return list(struct.unpack(f"<{len(data) // 8}Q", data))

    def pagemap(self, pid: int, va: int, pages: int = 1) -> list[int]:
        return self.u64s(f"{pid}/pagemap", va // 4096, pages)

    def kpagecount(self, pfn: int, count: int = 1) -> list[int]:
        return self.u64s("kpagecount", pfn, count)

    def pte_dump(self, pid: int) -> tuple[list[tuple[str, int]], dict[int, tuple[int, str, int | None]]]:
        """The pte file: its table lines as (level, pfn), and its entries as va -> (raw, state, pfn)."""
        tables, entries = [], {}
        for line in self.read(f"{pid}/pte").splitlines():
            t = re.match(r"#\s+(PGD|PUD|PMD|PTE) [0-9a-f]+ pfn 0x([0-9a-f]+)$", line)
            if t:
                tables.append((t.group(1), int(t.group(2), 16)))
                continue
            e = re.match(r"  ([0-9a-f]+) ([0-9a-f]{16}) (\S+)(?: pfn 0x([0-9a-f]+))?", line)
            if e:
                entries[int(e.group(1), 16)] = (int(e.group(2), 16), e.group(3),
                                               int(e.group(4), 16) if e.group(4) else None)
        return tables, entries

    def kill_all_but(self, keep: set[int]) -> None:
        for pid in sorted(self.pids() - keep, reverse=True):
            fd = os.open(self.path / "ctl", os.O_RDWR)
            try:
                os.write(fd, f"kill {pid}\n".encode())
            except OSError as e:
                if e.errno != errno.ESRCH:
                    raise
            finally:
                os.close(fd)


def _mount(tmp_path: Path, *extra) -> Mounted:
    problem = fuse_problem()
    if problem:
        pytest.fail(f"mount tests need FUSE: {problem}")
    mnt = tmp_path / "mnt"
    memfs("mount", mnt, "--log", tmp_path / "memfs.log", *extra)
    return Mounted(mnt)


def _unmount(m: Mounted) -> None:
    r = memfs("umount", m.path, check=False)
    if r.returncode != 0 and (m.path / "meminfo").exists():
        subprocess.run(["fusermount", "-uz", str(m.path)], capture_output=True)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open("/proc/self/mountinfo") as f:
            if f" {m.path} " not in f.read():
                return
        time.sleep(0.05)
    raise AssertionError(f"{m.path} is still mounted after memfs umount: {r.stderr}")


@pytest.fixture
def small(tmp_path):
    """The small machine (64 MiB, one node), clock paused: exact, reproducible state."""
    m = _mount(tmp_path, "--config", "small", "--paused", "--seed", "1")
    try:
        yield m
    finally:
        _unmount(m)


@pytest.fixture(scope="module")
def small_module(tmp_path_factory):
    """One paused small machine shared by a test module (use `machine` in tests)."""
    m = _mount(tmp_path_factory.mktemp("small"), "--config", "small", "--paused", "--seed", "1")
    try:
        yield m
    finally:
        _unmount(m)


@pytest.fixture
def machine(small_module):
    """The module's paused small machine; every process a test starts is killed after it.

    The clock stays paused, so nothing changes between a test's commands and
    differences of MemFree, Committed_AS, ... are exact.
    """
    before = small_module.pids()
    try:
        yield small_module
    finally:
        small_module.kill_all_but(before)


@pytest.fixture
def default_running(tmp_path):
    """The default machine (4 GiB, two nodes) with its clock running, as users mount it."""
    m = _mount(tmp_path)
    try:
        yield m
    finally:
        _unmount(m)
