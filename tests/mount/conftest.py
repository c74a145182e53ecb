"""Fixtures for tests through a real FUSE mount.

Each fixture mounts a fresh machine with the memfs CLI in a temporary
directory and always unmounts it, even when the test fails. Where FUSE is
missing, the tests fail and say why: they never skip silently.
"""
from __future__ import annotations

import ctypes.util
import os
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


@pytest.fixture
def default_running(tmp_path):
    """The default machine (4 GiB, two nodes) with its clock running, as users mount it."""
    m = _mount(tmp_path)
    try:
        yield m
    finally:
        _unmount(m)
