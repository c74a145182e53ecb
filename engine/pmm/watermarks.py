"""Zone watermarks, lowmem protection and per-cpu stack sizes (Linux __setup_per_zone_wmarks).

Owns the arithmetic that turns the tunables below into each zone's min/low/
high/promo watermarks, its protection[] array and its per-cpu stack high and
batch. Recomputed whenever a tunable or a zone's managed pages change.
"""
from __future__ import annotations

import math

from ..sysctl import Tunable
from ..units import PAGE_SIZE, KiB
from .zone import NR_ZONES, ZONE_MOVABLE, ZONE_DEVICE, Zone

MIN_PERCPU_PAGELIST_HIGH_FRACTION = 8


def default_min_free_kbytes(lowmem_pages: int) -> int:
    """sqrt(16 * lowmem_kbytes), clamped to [128, 262144] (calculate_min_free_kbytes)."""
    lowmem_kbytes = lowmem_pages * (PAGE_SIZE // KiB)
    return max(128, min(262144, math.isqrt(lowmem_kbytes * 16)))


TUNABLES = (
    Tunable("min_free_kbytes", None, 0, 1 << 30,
            "free memory (kB) the allocator keeps for emergencies: sets every zone's min "
            "watermark, and low/high above it"),
    Tunable("watermark_scale_factor", 10, 1, 3000,
            "gap between min, low and high watermarks, in units of 0.01% of the zone"),
    Tunable("lowmem_reserve_ratio", (256, 256, 32, 0, 0), 0, 1 << 30,
            "per zone: how much of the higher zones' memory it protects from their "
            "allocations (1/ratio); 0 = no protection", length=NR_ZONES),
    Tunable("percpu_pagelist_high_fraction", 0, 0, 1 << 30,
            "0: per-cpu stacks sized from the low watermark; N >= 8: at most 1/N of the "
            "zone's pages on the stacks", check=lambda v: v == 0 or v >= 8,
            check_text="0 or at least 8"),
)


def lowmem_pages(zones: list[Zone]) -> int:
    return sum(z.managed_pages for z in zones if z.idx not in (ZONE_MOVABLE, ZONE_DEVICE))


def setup_watermarks(zones: list[Zone], min_free_kbytes: int, scale_factor: int) -> None:
    pages_min = min_free_kbytes // (PAGE_SIZE // KiB)
    lowmem = lowmem_pages(zones) or 1
    for z in zones:
        managed = z.managed_pages
        share = pages_min * managed // lowmem
        if z.idx in (ZONE_MOVABLE, ZONE_DEVICE):
            share = min(128, max(32, managed // 1024)) if managed else 0
        gap = max(share // 4, managed * scale_factor // 10000)
        z.wmark_min = share
        z.wmark_low = share + gap
        z.wmark_high = share + 2 * gap
        z.wmark_promo = share + 3 * gap


def setup_lowmem_reserve(nodes_zones: list[list[Zone]], ratios: tuple[int, ...]) -> None:
    """protection[j] of zone i = managed pages of zones i+1..j on the node / ratio[i].

    An empty zone protects nothing (Linux 5.9+ setup_per_zone_lowmem_reserve).
    """
    for zones in nodes_zones:
        for i, z in enumerate(zones):
            z.lowmem_reserve = [0] * NR_ZONES
            clear = ratios[i] <= 0 or not z.managed_pages
            total = 0
            for j in range(i + 1, NR_ZONES):
                total += zones[j].managed_pages
                if not clear:
                    z.lowmem_reserve[j] = total // ratios[i]


def _batchsize(managed: int) -> int:
    batch = min(managed >> 10, (1 << 20) // PAGE_SIZE) // 4
    batch = max(1, batch)
    batch = (1 << ((batch + batch // 2).bit_length() - 1)) - 1      # rounddown_pow_of_two - 1
    return max(1, batch)


def _highsize(z: Zone, batch: int, cpus_on_node: int, fraction: int) -> int:
    total = z.wmark_low if not fraction else z.managed_pages // fraction
    high = total // max(1, cpus_on_node)
    return max(high, batch << 2)


def setup_pcp(z: Zone, high_fraction: int) -> None:
    batch = _batchsize(z.managed_pages)
    cpus = len(z.pcp)
    for pcp in z.pcp.values():
        pcp.batch = batch
        pcp.high_min = _highsize(z, batch, cpus, high_fraction)
        pcp.high_max = max(pcp.high_min,
                           _highsize(z, batch, cpus, MIN_PERCPU_PAGELIST_HIGH_FRACTION))
        pcp.high = pcp.high_min


def totalreserve_pages(zones: list[Zone]) -> int:
    """Pages user space can never get: high watermark plus the largest protection, per zone."""
    return sum(min(z.managed_pages, z.wmark_high + max(z.lowmem_reserve)) for z in zones)


def stats_threshold(z: Zone, online_cpus: int) -> int:
    """The per-cpu counter drift threshold zoneinfo shows (calculate_normal_threshold)."""
    mem = z.managed_pages >> (27 - 12)
    threshold = 2 * online_cpus.bit_length() * (1 + mem.bit_length())
    return min(125, threshold)
