"""The physical address map: what lives where in physical address space.

Owns a tree of resources (RAM, reserved ranges, ROM, ACPI, device MMIO, PCI
windows and the BARs placed in them), each with a cacheability type and
flags, as the seed design asks of a PMM's "map of the physical address
space". `iomem` and `physmap` render it. Placing a PCI BAR finds a naturally
aligned hole in a PCI window that no RAM, ROM or other device uses.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config import CACHE_TYPES, MachineConfig
from ..errors import InvalidArgument, OutOfMemory
from ..units import GiB, PAGE_SIZE, fmt_size, is_power_of_two


@dataclass
class Resource:
    start: int                   # bytes, inclusive
    end: int                     # bytes, exclusive
    name: str
    kind: str                    # ram reserved rom acpi acpi_nvs mmio pmem pci kernel bar
    cache: str                   # key of CACHE_TYPES
    flags: tuple[str, ...] = ()  # "hotplug", "nonvolatile", "prefetch", "64bit"
    children: list["Resource"] = field(default_factory=list)

    def contains(self, other: "Resource") -> bool:
        return self.start <= other.start and other.end <= self.end

    def overlaps(self, start: int, end: int) -> bool:
        return self.start < end and start < self.end


class PhysMap:
    def __init__(self, cfg: MachineConfig):
        self.top: list[Resource] = []
        self._next_device = 3            # 0000:00:03.0 is the first BAR-placed device
        for w in cfg.pci_windows:
            self.insert(Resource(w.start, w.end, w.name, "pci", "uc"))
        for r in cfg.memory_map:
            flags = tuple(f for f, on in (("hotplug", r.hotplug), ("nonvolatile", r.nonvolatile)) if on)
            self.insert(Resource(r.start, r.end, r.name, r.kind, r.cache, flags))
        self._insert_kernel_image(cfg.kernel.image_base, cfg.kernel.image_size)

    def _insert_kernel_image(self, base: int, size: int) -> None:
        # code 1/2, rodata 1/4, data 1/8, bss the rest: page aligned, like a real vmlinux layout
        parts = (("Kernel code", size // 2), ("Kernel rodata", size // 4),
                 ("Kernel data", size // 8))
        start = base
        for name, length in parts:
            length -= length % PAGE_SIZE
            self.insert(Resource(start, start + length, name, "kernel", "wb"))
            start += length
        self.insert(Resource(start, base + size, "Kernel bss", "kernel", "wb"))

    def insert(self, res: Resource, siblings: list[Resource] | None = None) -> None:
        """Insert under the innermost resource that contains it (an equal range nests inside)."""
        siblings = self.top if siblings is None else siblings
        for s in siblings:
            if s.contains(res):
                return self.insert(res, s.children)
            if s.overlaps(res.start, res.end) and not res.contains(s):
                raise InvalidArgument(f"{res.name} {res.start:#x}-{res.end - 1:#x} "
                                      f"partly overlaps {s.name}")
        inside = [s for s in siblings if res.contains(s)]
        for s in inside:
            siblings.remove(s)
        res.children.extend(inside)
        res.children.sort(key=lambda c: c.start)
        siblings.append(res)
        siblings.sort(key=lambda c: c.start)

    def remove(self, start: int, end: int, name: str) -> None:
        """Take away the resources named name that lie in [start, end) (hot-remove of RAM)."""
        def rec(items):
            for r in list(items):
                if r.name == name and start <= r.start and r.end <= end:
                    items.remove(r)
                    items.extend(r.children)
                    items.sort(key=lambda c: c.start)
                else:
                    rec(r.children)
        rec(self.top)

    def walk(self):
        """(depth, resource) in address order, parents before children."""
        def rec(items, depth):
            for r in items:
                yield depth, r
                yield from rec(r.children, depth + 1)
        yield from rec(self.top, 0)

    # ------------------------------------------------------------------
    # PCI BARs
    # ------------------------------------------------------------------

    def place_bar(self, size: int, *, name: str | None, wide: bool, prefetch: bool) -> Resource:
        """Find a naturally aligned hole for a BAR of `size` bytes and claim it.

        A 32-bit BAR goes below 4 GiB; a 64-bit one prefers windows above 4 GiB.
        """
        if not is_power_of_two(size) or size < PAGE_SIZE:
            raise InvalidArgument(f"bar: size {fmt_size(size)} is not a power of two of at least 4K "
                                  f"(a BAR's size always is: try {fmt_size(_next_pow2(max(size, PAGE_SIZE)))})")
        windows = [w for _, w in self.walk() if w.kind == "pci"]
        low = [w for w in windows if w.end <= 4 * GiB]
        high = [w for w in windows if w.end > 4 * GiB]
        for w in (high + low if wide else low):
            addr = self._find_hole(w, size)
            if addr is not None:
                label = name or f"0000:00:{self._next_device:02x}.0"
                if name is None:
                    self._next_device += 1
                flags = tuple(f for f, on in (("64bit", wide), ("prefetch", prefetch)) if on)
                bar = Resource(addr, addr + size, label, "bar", "wc" if prefetch else "uc", flags)
                w.children.append(bar)
                w.children.sort(key=lambda c: c.start)
                return bar
        where = "any PCI window" if wide else "the PCI windows below 4 GiB (add 64bit to look above)"
        raise OutOfMemory(f"bar: no free, {fmt_size(size)}-aligned {fmt_size(size)} hole in {where}")

    @staticmethod
    def _find_hole(window: Resource, size: int) -> int | None:
        addr = -(-window.start // size) * size
        for child in sorted(window.children, key=lambda c: c.start):
            if addr + size <= child.start:
                break
            if child.end > addr:
                addr = -(-child.end // size) * size
        return addr if addr + size <= window.end else None

    # ------------------------------------------------------------------
    # views
    # ------------------------------------------------------------------

    def iomem_lines(self) -> list[tuple[int, int, int, str]]:
        """(depth, start, last byte, name) rows as /proc/iomem shows them."""
        return [(d, r.start, r.end - 1, r.name) for d, r in self.walk()]

    def physmap_rows(self) -> list[tuple[int, Resource]]:
        return list(self.walk())


def _next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


CACHE_NAMES = CACHE_TYPES
