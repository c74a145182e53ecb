"""Mounting: build the Machine, run FUSE in the foreground, stop cleanly on unmount."""
from __future__ import annotations

import logging
import os
import sys

from engine import Machine, MachineConfig
from .fuse_ops import MemFs
from .fusebind import FUSE
from .tree import build_root


def serve(mountpoint: str, cfg: MachineConfig, *, paused: bool, ready_fd: int | None = None) -> int:
    """Mount and serve until unmounted (or SIGINT/SIGTERM). Returns an exit status."""
    logging.basicConfig(level=logging.INFO, format="memfs[%(process)d]: %(message)s")
    # Short GIL switch interval: the ticker thread must not delay FUSE callbacks by 5 ms.
    sys.setswitchinterval(0.0005)
    machine = Machine(cfg, paused=paused)

    def ready():
        if ready_fd is not None:
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)

    ops = MemFs(machine, build_root(), on_init=ready)
    options = dict(raw_fi=True, foreground=True, nothreads=False, fsname="memfs", subtype="memfs",
                   attr_timeout=0.0, entry_timeout=1.0)
    if os.geteuid() == 0:
        options["allow_other"] = True          # root's tools (and bind mounts) read it as anyone
    try:
        FUSE(ops, mountpoint, **options)
    except RuntimeError as e:
        logging.error("FUSE returned %s: the mount failed or ended abnormally", e)
        return 1
    finally:
        machine.shutdown()
    return 0
