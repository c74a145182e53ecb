"""Swap areas: the devices the machine has and their sizes (what `swaps` lists).

A swap area's first page is its header, so it offers size - 1 page of slots,
and `swaps` shows that (a 1 GiB area reads 1048572 kB), as Linux does.
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import SwapConfig
from .units import PAGE_SIZE, KiB


@dataclass
class SwapDevice:
    name: str
    nr_slots: int            # usable pages (the header page excluded)
    priority: int
    used_slots: int = 0

    @classmethod
    def from_config(cls, cfg: SwapConfig, priority: int) -> "SwapDevice":
        return cls(cfg.name, cfg.size // PAGE_SIZE - 1, priority)

    @property
    def kind(self) -> str:
        return "partition" if self.name.startswith("/dev/") else "file"

    @property
    def size_kb(self) -> int:
        return self.nr_slots * (PAGE_SIZE // KiB)

    @property
    def used_kb(self) -> int:
        return self.used_slots * (PAGE_SIZE // KiB)
