"""The mount table as memfs sees it, kept free of FUSE and engine imports.

Finding memfs mounts in /proc/self/mountinfo, detecting and clearing a stale
mount left by a killed daemon, and the runtime files (log, pid) of a
daemonised mount. `memfs umount` and `memfs ctl` need only this.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

FSTYPE = "fuse.memfs"


# ---------------------------------------------------------------------------
# mount table
# ---------------------------------------------------------------------------

def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) + 1 and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts() -> dict[str, str]:
    """Mount point -> filesystem type, from /proc/self/mountinfo."""
    table = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            table[_unescape(fields[4])] = right.split()[0]
    return table


def is_memfs_mount(mountpoint: str) -> bool:
    return mounts().get(os.path.realpath(mountpoint)) == FSTYPE


def is_stale(mountpoint: str) -> bool:
    """A FUSE mount whose daemon is gone: every request fails with ENOTCONN.

    stat() alone can succeed from the kernel's attribute cache; statfs and
    opening the directory always ask the daemon.
    """
    for probe in (os.stat, os.statvfs, os.listdir):
        try:
            probe(mountpoint)
        except OSError as e:
            if e.errno == errno.ENOTCONN:
                return True
            if e.errno != errno.ENOSYS:
                return False
    return False


def fusermount() -> str | None:
    return shutil.which("fusermount") or shutil.which("fusermount3")


def unmount(mountpoint: str, *, lazy: bool = False) -> tuple[bool, str]:
    """Detach a mount. Returns (ok, error text)."""
    tool = fusermount()
    cmd = [tool, "-uz" if lazy else "-u", mountpoint] if tool else \
        ["umount"] + (["-l"] if lazy else []) + [mountpoint]
    r = subprocess.run(cmd, capture_output=True, text=True)
    return r.returncode == 0, (r.stderr or r.stdout).strip()


# ---------------------------------------------------------------------------
# runtime files of a daemonised mount
# ---------------------------------------------------------------------------

def runtime_dir() -> Path:
    d = Path(tempfile.gettempdir()) / f"memfs-{os.getuid()}"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


def runtime_paths(mountpoint: str) -> tuple[Path, Path]:
    """(log file, pid file) of the daemon serving mountpoint."""
    key = hashlib.sha1(os.path.realpath(mountpoint).encode()).hexdigest()[:12]
    d = runtime_dir()
    return d / f"{key}.log", d / f"{key}.pid"
