"""The memfs command line: mount, umount, ctl, exec.

Exit status: 0 on success, 1 when the operation failed (with a message on
stderr saying why), 2 for a bad command line or a bad machine description.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import select
import subprocess
import sys
import time

from . import machines

PROG = "memfs"
READY_TIMEOUT_S = 60

# Simulated files bound over the host's by `memfs exec` (mount-relative, host path).
EXEC_BINDS = (
    ("meminfo", "/proc/meminfo"),
    ("vmstat", "/proc/vmstat"),
    ("swaps", "/proc/swaps"),
    ("zoneinfo", "/proc/zoneinfo"),
    ("buddyinfo", "/proc/buddyinfo"),
    ("pressure/memory", "/proc/pressure/memory"),
    ("devices/system/memory", "/sys/devices/system/memory"),
)


class CliError(Exception):
    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


def _fail(message: str, status: int = 1):
    raise CliError(message, status)


# ---------------------------------------------------------------------------
# mount
# ---------------------------------------------------------------------------

def resolve_config(spec: str | None):
    """A built-in machine name (default, small) or a YAML file path -> MachineConfig."""
    from engine import ConfigError, load
    spec = spec or "default"
    path = spec
    if not os.path.exists(spec) and "/" not in spec and not spec.endswith((".yaml", ".yml")):
        path = str(machines.builtin(spec))
        if not os.path.exists(path):
            _fail(f"no machine {spec!r}: give a YAML file or one of "
                  f"{', '.join(machines.builtin_names())}", 2)
    try:
        return load(path)
    except ConfigError as e:
        _fail(f"bad machine description {path}: {e}", 2)


def _prepare_mountpoint(mnt: str) -> None:
    from .mounts import is_stale, mounts, unmount
    if is_stale(mnt):
        ok, err = unmount(mnt)
        if not ok:
            ok, err = unmount(mnt, lazy=True)
        if not ok:
            _fail(f"{mnt}: a dead mount is in the way and could not be cleared: {err}")
        print(f"{PROG}: cleared a stale mount at {mnt}", file=sys.stderr)
    if os.path.realpath(mnt) in mounts():
        _fail(f"{mnt} is already a mount point (memfs umount {mnt} first)")
    if not os.path.exists(mnt):
        try:
            os.makedirs(mnt)
        except OSError as e:
            _fail(f"cannot create mount point {mnt}: {e.strerror}")
    if not os.path.isdir(mnt):
        _fail(f"{mnt} is not a directory")
    if os.listdir(mnt):
        _fail(f"{mnt} is not empty: mount on an empty directory")
    if not os.path.exists("/dev/fuse"):
        _fail("/dev/fuse does not exist: this machine (or container) cannot mount FUSE "
              "filesystems (load the fuse module, or give the container /dev/fuse)")


def cmd_mount(args) -> int:
    cfg = resolve_config(args.config)
    if args.seed is not None:
        cfg = cfg.with_seed(args.seed)
    if args.no_processes:
        cfg = cfg.without_processes()
    mnt = os.path.abspath(args.mountpoint)
    if args.foreground:
        from .mount import serve
        if args.ready_fd is None:
            _prepare_mountpoint(mnt)
        return serve(mnt, cfg, paused=args.paused, ready_fd=args.ready_fd)
    _prepare_mountpoint(mnt)
    return _mount_daemon(args, cfg, mnt)


def _mount_daemon(args, cfg, mnt: str) -> int:
    """Start the serving process in the background; return once the mount answers."""
    from .mounts import is_memfs_mount, runtime_paths
    log_path, pid_path = runtime_paths(mnt)
    if args.log:
        log_path = os.path.abspath(args.log)
    read_end, write_end = os.pipe()
    cmd = [sys.executable, "-m", "memfs", "mount", mnt, "--foreground",
           "--config", cfg.source, "--ready-fd", str(write_end)]
    if args.seed is not None:
        cmd += ["--seed", str(args.seed)]
    if args.paused:
        cmd.append("--paused")
    if args.no_processes:
        cmd.append("--no-processes")
    with open(log_path, "ab") as log:
        child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 pass_fds=(write_end,), start_new_session=True)
    os.close(write_end)
    ready = b""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while b"ready" not in ready and time.monotonic() < deadline:
        r, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            break
        chunk = os.read(read_end, 64)
        if not chunk:
            break                               # the child exited before saying ready
        ready += chunk
    os.close(read_end)
    if b"ready" not in ready or not _answers(mnt):
        child.poll()
        if child.returncode is None:
            child.terminate()
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()
        if is_memfs_mount(mnt):
            from .mounts import unmount
            unmount(mnt, lazy=True)
        _fail(f"mounting {mnt} failed: {_log_tail(log_path)} (log: {log_path})")
    pid_path.write_text(f"{child.pid}\n")
    return 0


def _answers(mnt: str) -> bool:
    try:
        with open(os.path.join(mnt, "meminfo"), "rb") as f:
            return f.read(16).startswith(b"MemTotal:")
    except OSError:
        return False


def _log_tail(path, lines: int = 5) -> str:
    try:
        text = open(path, errors="replace").read().strip().splitlines()
    except OSError:
        return "no log"
    return " / ".join(text[-lines:]) or "the daemon exited without a message"


# ---------------------------------------------------------------------------
# umount
# ---------------------------------------------------------------------------

def cmd_umount(args) -> int:
    from .mounts import is_stale, mounts, runtime_paths, unmount
    mnt = os.path.abspath(args.mountpoint)
    if os.path.realpath(mnt) not in mounts() and not is_stale(mnt):
        _fail(f"{mnt} is not mounted")
    ok, err = unmount(mnt, lazy=args.lazy)
    if not ok:
        hint = " (something still uses it; --lazy detaches it now)" if "busy" in err.lower() else ""
        _fail(f"cannot unmount {mnt}: {err}{hint}")
    _, pid_path = runtime_paths(mnt)
    try:
        pid = int(pid_path.read_text())
    except (OSError, ValueError):
        return 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.02)
    pid_path.unlink(missing_ok=True)
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:                                        # a zombie child of someone else counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ---------------------------------------------------------------------------
# ctl
# ---------------------------------------------------------------------------

def cmd_ctl(args) -> int:
    path = args.ctlfile
    if os.path.isdir(path):
        path = os.path.join(path, "ctl")
    command = " ".join(args.command).strip()
    if not command:
        _fail("no command given (see README in the mount for the commands)", 2)
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as e:
        _fail(f"{path}: {e.strerror}")
    try:
        try:
            os.write(fd, (command + "\n").encode())
        except OSError as e:
            reason = _read_all(fd).decode(errors="replace").strip()
            reason = reason.removeprefix("error: ") or e.strerror
            _fail(f"{os.strerror(e.errno)}: {reason}")
        out = _read_all(fd)
    finally:
        os.close(fd)
    sys.stdout.write(out.decode(errors="replace"))
    return 0


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------------------
# exec
# ---------------------------------------------------------------------------

CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18


def cmd_exec(args) -> int:
    from .mounts import is_memfs_mount
    mnt = os.path.abspath(args.mountpoint)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        _fail("no command given: memfs exec MOUNTPOINT -- CMD [ARGS...]", 2)
    if not is_memfs_mount(mnt):
        _fail(f"{mnt} is not a memfs mount")
    if os.geteuid() != 0:
        _fail("memfs exec needs root: it bind-mounts the simulated files over /proc in a "
              "private mount namespace")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        _fail(f"unshare(CLONE_NEWNS): {os.strerror(ctypes.get_errno())}")
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        _fail(f"making / private: {os.strerror(ctypes.get_errno())}")
    for rel, target in EXEC_BINDS:
        src = os.path.join(mnt, rel)
        if not os.path.exists(src) or not os.path.exists(target):
            continue                     # a file this machine (or host) does not have yet
        if libc.mount(src.encode(), target.encode(), None, MS_BIND, None) != 0:
            _fail(f"bind-mounting {src} over {target}: {os.strerror(ctypes.get_errno())}")
    try:
        os.execvp(cmd[0], cmd)
    except FileNotFoundError:
        _fail(f"{cmd[0]}: command not found", 127)
    except OSError as e:
        _fail(f"{cmd[0]}: {e.strerror}", 126)


# ---------------------------------------------------------------------------
# argument parsing
# ---------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="A live, simulated memory manager, "
                                "mounted as a /proc-like filesystem.")
    sub = p.add_subparsers(dest="verb", metavar="COMMAND", required=True)

    m = sub.add_parser("mount", help="mount a simulated machine",
                       description="Mount a simulated machine at MOUNTPOINT (created if missing). "
                       "Returns once the mount answers, unless --foreground.")
    m.add_argument("mountpoint", metavar="MOUNTPOINT")
    m.add_argument("--config", metavar="FILE",
                   help=f"machine description: a YAML file or a built-in name "
                        f"({', '.join(machines.builtin_names())}); default: default")
    m.add_argument("--seed", type=int, metavar="N", help="seed of the random generator "
                   "(overrides the config's)")
    m.add_argument("--paused", action="store_true", help="start with the clock stopped")
    m.add_argument("--no-processes", action="store_true",
                   help="start none of the config's processes (a quiet machine)")
    m.add_argument("--foreground", action="store_true",
                   help="serve in this process until unmounted (Ctrl-C unmounts)")
    m.add_argument("--log", metavar="FILE", help="daemon log file (default: under the "
                   "temporary directory, named after the mount point)")
    m.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    m.set_defaults(func=cmd_mount)

    u = sub.add_parser("umount", help="unmount a machine",
                       description="Unmount MOUNTPOINT and wait for its daemon to exit.")
    u.add_argument("mountpoint", metavar="MOUNTPOINT")
    u.add_argument("--lazy", action="store_true", help="detach now even if something still uses it")
    u.set_defaults(func=cmd_umount)

    c = sub.add_parser("ctl", help="write a command to a ctl file and print its result",
                       description="Write COMMAND to CTLFILE (a ctl file, or a mount point "
                       "meaning its ctl) and print the result. On rejection, print the "
                       "reason the kernel log gives and exit 1.")
    c.add_argument("ctlfile", metavar="CTLFILE")
    c.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")
    c.set_defaults(func=cmd_ctl)

    e = sub.add_parser("exec", help="run a command that sees the simulated /proc files",
                       description="Run CMD in a private mount namespace where the simulated "
                       "meminfo, vmstat, swaps, zoneinfo, buddyinfo (and pressure/memory, "
                       "devices/system/memory once they exist) are bind-mounted over the "
                       "host's, so unmodified free, vmstat and psutil see the simulated "
                       "machine. Needs root.")
    e.add_argument("mountpoint", metavar="MOUNTPOINT")
    e.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD")
    e.set_defaults(func=cmd_exec)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except CliError as e:
        print(f"{PROG} {args.verb}: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        return 130
