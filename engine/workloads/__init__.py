"""Workloads: what simulated processes do by themselves, one module per kind.

KINDS maps each name (spawn NAME workload=KIND, or `workload:` in the
config's processes list) to its class; make(kind, options) checks the options
and builds one.
"""
from __future__ import annotations

from .base import Workload
from .batch import Batch
from .database import Database
from .leaky import Leaky
from .replay import Replay
from .stack import Stack
from .web import Web
from ..errors import InvalidArgument

KINDS: dict[str, type[Workload]] = {w.kind: w for w in (Web, Database, Leaky, Batch, Stack, Replay)}
OPTION_KEYS = sorted({k for w in KINDS.values() for k in w.options})


def make(kind: str, options: dict) -> Workload:
    cls = KINDS.get(kind)
    if cls is None:
        raise InvalidArgument(f"unknown workload {kind!r} (known: {', '.join(KINDS)})")
    return cls(options)
