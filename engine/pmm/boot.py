"""Boot-time memory layout: from the config's physical map to populated zones.

Does what Linux's memblock and free_area_init do, once: finds each node's RAM,
carves it into zones (DMA below 16 MiB, DMA32 below 4 GiB, Normal above),
reserves what the kernel keeps (low memory, the kernel image, the memmap that
describes every frame), and hands every other RAM frame to the buddy lists.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError, MachineConfig
from ..units import GiB, MiB, PAGE_SHIFT, PAGE_SIZE
from .frames import FrameTable, PageType, PAGEBLOCK_ORDER
from .zone import NR_ZONES, Zone

# Physical limits of the zones that have one (x86-64); Movable and Device start empty.
ZONE_LIMITS = ((0, (16 * MiB) >> PAGE_SHIFT), ((16 * MiB) >> PAGE_SHIFT, (4 * GiB) >> PAGE_SHIFT),
               ((4 * GiB) >> PAGE_SHIFT, 1 << 52))


@dataclass(frozen=True)
class Reservation:
    start_pfn: int
    end_pfn: int
    what: str                 # "low memory", "kernel image", "memmap node N"


@dataclass
class BootLayout:
    ft: FrameTable
    node_zones: list[list[Zone]]
    node_ram: list[list[tuple[int, int]]]      # per node: RAM pfn ranges
    reservations: list[Reservation]
    memmap_pages: int


def _intersect(ranges, lo, hi):
    out = []
    for s, e in ranges:
        s2, e2 = max(s, lo), min(e, hi)
        if s2 < e2:
            out.append((s2, e2))
    return out


def _subtract(ranges, holes):
    """ranges minus holes; both lists of [start, end) pfn pairs."""
    out = []
    for s, e in ranges:
        pieces = [(s, e)]
        for hs, he in holes:
            nxt = []
            for a, b in pieces:
                if he <= a or b <= hs:
                    nxt.append((a, b))
                    continue
                if a < hs:
                    nxt.append((a, hs))
                if he < b:
                    nxt.append((he, b))
            pieces = nxt
        out.extend(pieces)
    return out


def _top_down(ranges, nr_pages):
    """Take nr_pages from the top of ranges (memblock allocates top-down); None if they don't fit."""
    taken, need = [], nr_pages
    for s, e in sorted(ranges, reverse=True):
        if need == 0:
            break
        n = min(need, e - s)
        taken.append((e - n, e))
        need -= n
    return taken if need == 0 else None


def boot(cfg: MachineConfig) -> BootLayout:
    ram = [(r.start >> PAGE_SHIFT, r.end >> PAGE_SHIFT) for r in cfg.ram_regions]
    max_pfn = max(e for _, e in ram)
    ft = FrameTable(max_pfn)
    k = cfg.kernel

    for s, e in ram:
        ft.set_type_range(s, e, PageType.RESERVED)

    reservations = [Reservation(0, k.low_reserve >> PAGE_SHIFT, "low memory"),
                    Reservation(k.image_base >> PAGE_SHIFT,
                                (k.image_base + k.image_size) >> PAGE_SHIFT, "kernel image")]
    node_ram = []
    memmap_total = 0
    for node in cfg.nodes:
        nram = _intersect(ram, node.start >> PAGE_SHIFT, node.end >> PAGE_SHIFT)
        node_ram.append(nram)
        present = sum(e - s for s, e in nram)
        memmap = -(-present * k.struct_page_bytes // PAGE_SIZE)
        if not memmap:
            continue
        free_here = _subtract(nram, [(r.start_pfn, r.end_pfn) for r in reservations])
        spots = _top_down(free_here, memmap)
        if spots is None:
            raise ConfigError(f"numa.nodes[{node.id}]", f"the node's RAM ({present} pages) cannot "
                              f"hold its own memmap ({memmap} pages) besides the kernel")
        for s, e in spots:
            reservations.append(Reservation(s, e, f"memmap node {node.id}"))
        memmap_total += memmap
    holes = [(r.start_pfn, r.end_pfn) for r in reservations]

    cpus_all = tuple(range(cfg.cpus))
    node_zones = []
    for node in cfg.nodes:
        nram = node_ram[node.id]
        zones = []
        for zi in range(NR_ZONES):
            zram = _intersect(nram, *ZONE_LIMITS[zi]) if zi < len(ZONE_LIMITS) else []
            if zram:
                z = Zone(ft, node.id, zi, min(s for s, _ in zram), max(e for _, e in zram), cpus_all)
            else:
                z = Zone(ft, node.id, zi, 0, 0, cpus_all)
            z.present_pages = sum(e - s for s, e in zram)
            free = _subtract(zram, holes)
            z.managed_pages = sum(e - s for s, e in free)
            if zram:
                for pb in range(z.start_pfn >> PAGEBLOCK_ORDER,
                                ((z.end_pfn - 1) >> PAGEBLOCK_ORDER) + 1):
                    ft.pb_zone[pb] = z.zid
            for s, e in free:
                ft.set_type_range(s, e, PageType.FREE)
                z.add_free_span(s, e)
            zones.append(z)
        node_zones.append(zones)
    return BootLayout(ft, node_zones, node_ram, reservations, memmap_total)
