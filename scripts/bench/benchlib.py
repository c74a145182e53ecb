"""What the benchmark scripts share: printing a figure, finding the memfs CLI,
mounting a machine through it and taking the mount down again.

The scripts import it by path (they put their own folder first on sys.path).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def say(name: str, value, unit: str = "") -> None:
    """Print one figure as "name: value unit"."""
    print(f"{name}: {value}{' ' + unit if unit else ''}", flush=True)


def find_memfs(explicit: str | None) -> str | None:
    """The memfs command: EXPLICIT, else the one beside this python, in .venv or on PATH."""
    if explicit:
        return explicit
    beside = Path(sys.executable).with_name("memfs")
    if beside.exists():
        return str(beside)
    venv = REPO / ".venv" / "bin" / "memfs"
    if venv.exists():
        return str(venv)
    return shutil.which("memfs")


def is_mount(path: str) -> bool:
    try:
        return os.path.ismount(path)
    except OSError:
        return True                     # ENOTCONN: a dead mount is still a mount


def short(text: str) -> str:
    """The last non-blank line of a command's output, at most 200 characters."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "no output")[:200]


class MountError(Exception):
    pass


def mount(memfs: str, mnt: str, config: str | None, extra_args=(),
          timeout: float = 120.0) -> None:
    """`memfs mount MNT [--config CONFIG] EXTRA_ARGS...`; return once MNT/meminfo reads back content.

    CONFIG is a YAML file or a built-in machine name (None: the CLI's default).
    Raises MountError, with the CLI's message, when the machine is not mounted
    and answering.
    """
    cmd = [memfs, "mount", mnt] + (["--config", config] if config else []) + list(extra_args)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise MountError(f"memfs mount did not return within {timeout:.0f} s") from None
    except OSError as e:
        raise MountError(f"cannot run {memfs}: {e.strerror or e}") from None
    if p.returncode != 0:
        raise MountError(f"memfs mount exited {p.returncode}: {short(p.stderr or p.stdout)}")
    # "Ready" means the mount answers: wait (briefly) if the command returned early.
    deadline = time.monotonic() + 30
    err = "not ready"
    while time.monotonic() < deadline:
        try:
            with open(os.path.join(mnt, "meminfo"), "rb") as f:
                if f.read():
                    return
                err = "meminfo reads empty"
        except OSError as e:
            err = f"reading meminfo: {e.strerror or e}"
        time.sleep(0.01)
    raise MountError(f"memfs mount returned but {err}")


def unmount(memfs: str | None, mnt: str) -> str | None:
    """Take the mount down: `memfs umount MNT` first, fusermount -u / -uz after; never raises.

    Returns None when there was no mount or the CLI took it down by itself
    (the command succeeded and MNT stopped being a mount point within 30 s),
    else why the CLI did not (the mount is then cleared with fusermount).
    """
    if not is_mount(mnt):
        return None
    problem = None
    if memfs is None:
        problem = "no memfs command found"
    else:
        t0 = time.monotonic()
        try:
            p = subprocess.run([memfs, "umount", mnt], capture_output=True, text=True,
                               stdin=subprocess.DEVNULL, timeout=60)
        except subprocess.TimeoutExpired:
            problem = "memfs umount did not return within 60 s"
        except OSError as e:
            problem = f"cannot run {memfs}: {e.strerror or e}"
        else:
            while is_mount(mnt) and time.monotonic() - t0 < 30:
                time.sleep(0.01)
            if p.returncode != 0 or is_mount(mnt):
                problem = f"memfs umount exited {p.returncode}: {short(p.stderr or p.stdout)}"
    for cmd in (["fusermount", "-u", mnt], ["fusermount3", "-u", mnt], ["fusermount", "-uz", mnt]):
        if not is_mount(mnt):
            break
        try:
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:
            pass
    if is_mount(mnt):
        print(f"{Path(sys.argv[0]).stem}: {mnt} is still mounted; run: fusermount -uz {mnt}",
              file=sys.stderr)
    return problem
