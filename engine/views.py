"""Snapshots of machine state for the renderers: gather numbers, format nothing.

Each function here runs under the engine lock (Machine calls it) and returns
plain frozen data in pages (or in the unit its name says). The memfs
renderers turn these into Linux text; they never count anything themselves
(fs/proc/meminfo.c's si_meminfo split).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .commit import commit_limit_pages
from .pmm import watermarks
from .pmm.frames import HPAGE_PMD_NR, NR_MIGRATE, NR_ORDERS, PAGEBLOCK_ORDER
from .pmm.hugetlb import HPAGE_KB
from .pmm.zone import NR_ZONES, ZONE_NAMES, Zone
from .stats import NUMA_EVENT_NAMES, VM_EVENT_NAMES, PageStat, ZoneStat
from .units import GiB, KiB, MiB, PAGE_SHIFT, PAGE_SIZE

KB_PER_PAGE = PAGE_SIZE // KiB


@dataclass(frozen=True)
class MemInfo:
    """meminfo in pages, except fields ending in _kb. node is None for the machine."""
    node: int | None
    total: int
    free: int
    available: int
    buffers: int = 0
    cached: int = 0
    swap_cached: int = 0
    active_anon: int = 0
    inactive_anon: int = 0
    active_file: int = 0
    inactive_file: int = 0
    unevictable: int = 0
    mlocked: int = 0
    swap_total: int = 0
    swap_free: int = 0
    zswap: int = 0
    zswapped: int = 0
    dirty: int = 0
    writeback: int = 0
    anon_pages: int = 0
    mapped: int = 0
    shmem: int = 0
    kreclaimable: int = 0
    slab_reclaimable: int = 0
    slab_unreclaimable: int = 0
    kernel_stack_kb: int = 0
    page_tables: int = 0
    sec_page_tables: int = 0
    writeback_tmp: int = 0
    commit_limit: int = 0
    committed_as: int = 0
    vmalloc_used: int = 0
    percpu_kb: int = 0
    hardware_corrupted: int = 0
    anon_huge: int = 0
    shmem_huge: int = 0
    shmem_pmd_mapped: int = 0
    file_huge: int = 0
    file_pmd_mapped: int = 0
    balloon: int = 0
    hugepages_total: int = 0
    hugepages_free: int = 0
    hugepages_rsvd: int = 0
    hugepages_surp: int = 0
    hugepage_size_kb: int = 2048
    hugetlb_kb: int = 0
    directmap_4k_kb: int = 0
    directmap_2m_kb: int = 0
    directmap_1g_kb: int = 0
    file_pages: int = 0


def _node_zones(m, node):
    return m.zones if node is None else m.node_zones[node]


def available_pages(zones: list[Zone], free: int, pagecache: int, reclaimable: int) -> int:
    """MemAvailable, as si_mem_available computes it."""
    wmark_low = sum(z.wmark_low for z in zones)
    avail = free - watermarks.totalreserve_pages(zones)
    avail += pagecache - min(pagecache // 2, wmark_low)
    avail += reclaimable - min(reclaimable // 2, wmark_low)
    return max(avail, 0)


def page_stats(m, zones) -> list[int]:
    """The VMM's page gauges (PageStat) summed over zones."""
    out = [0] * len(PageStat)
    for z in zones:
        g = m.vmm.gauges[z.zid]
        for i in range(len(PageStat)):
            out[i] += g[i]
    return out


def meminfo(m, node: int | None) -> MemInfo:
    zones = _node_zones(m, node)
    total = sum(z.managed_pages for z in zones)
    free = sum(z.free_pages for z in zones)
    swap_total = m.swap.total_slots()
    swap_free = m.swap.free_slots()
    zswap = m.swap.zswap
    s = m.sysctl
    g = page_stats(m, zones)
    pagecache = g[PageStat.ACTIVE_FILE] + g[PageStat.INACTIVE_FILE]
    dm4k, dm2m, dm1g = m.direct_map_kb
    return MemInfo(
        node=node, total=total, free=free,
        available=available_pages(zones, free, pagecache, 0),
        cached=g[PageStat.FILE], file_pages=g[PageStat.FILE], swap_cached=g[PageStat.SWAPCACHE],
        zswap=zswap.pool_pages() if node is None else 0,
        zswapped=zswap.stored_pages if node is None else 0,
        active_anon=g[PageStat.ACTIVE_ANON], inactive_anon=g[PageStat.INACTIVE_ANON],
        active_file=g[PageStat.ACTIVE_FILE], inactive_file=g[PageStat.INACTIVE_FILE],
        swap_total=swap_total, swap_free=swap_free, dirty=g[PageStat.FILE_DIRTY],
        anon_pages=g[PageStat.ANON], mapped=g[PageStat.FILE_MAPPED], shmem=g[PageStat.SHMEM],
        page_tables=g[PageStat.PAGETABLE], anon_huge=g[PageStat.ANON_THPS] * HPAGE_PMD_NR,
        commit_limit=commit_limit_pages(total, swap_total, s["overcommit_ratio"], s["overcommit_kbytes"],
                                        m.hugetlb.total_pages(node)),
        committed_as=m.vmm.committed,
        hardware_corrupted=len(m.poisoned) if node is None else 0,
        balloon=m.balloon.pages_on(node),
        hugepages_total=m.hugetlb.nr_on(node), hugepages_free=m.hugetlb.free_on(node),
        hugepage_size_kb=HPAGE_KB, hugetlb_kb=m.hugetlb.nr_on(node) * HPAGE_KB,
        directmap_4k_kb=dm4k, directmap_2m_kb=dm2m, directmap_1g_kb=dm1g)


def direct_map_kb(ram_regions) -> tuple[int, int, int]:
    """The kernel's direct map of RAM by page size, largest page alignment allows: (4k, 2M, 1G) kB.

    Closed form per region: 4 KiB pages up to the first 2 MiB boundary and after
    the last; 2 MiB pages up to the first 1 GiB boundary and after the last;
    1 GiB pages in between. Computed at boot (and when RAM is added or removed).
    """
    sizes = [0, 0, 0]
    for r in ram_regions:
        s2, e2 = -(-r.start // (2 * MiB)) * 2 * MiB, r.end // (2 * MiB) * 2 * MiB
        if s2 >= e2:
            sizes[0] += r.end - r.start
            continue
        sizes[0] += (s2 - r.start) + (r.end - e2)
        s1, e1 = -(-s2 // GiB) * GiB, e2 // GiB * GiB
        if s1 >= e1:
            sizes[1] += e2 - s2
            continue
        sizes[1] += (s1 - s2) + (e2 - e1)
        sizes[2] += e1 - s1
    return sizes[0] // KiB, sizes[1] // KiB, sizes[2] // KiB


# ---------------------------------------------------------------------------
# zones
# ---------------------------------------------------------------------------

ZONE_GAUGES = ("nr_free_pages", "nr_zone_inactive_anon", "nr_zone_active_anon",
               "nr_zone_inactive_file", "nr_zone_active_file", "nr_zone_unevictable",
               "nr_zone_write_pending", "nr_mlock", "nr_zspages", "nr_free_cma")

NODE_GAUGES = """
nr_inactive_anon nr_active_anon nr_inactive_file nr_active_file nr_unevictable
nr_slab_reclaimable nr_slab_unreclaimable nr_isolated_anon nr_isolated_file workingset_nodes
workingset_refault_anon workingset_refault_file workingset_activate_anon workingset_activate_file
workingset_restore_anon workingset_restore_file workingset_nodereclaim nr_anon_pages nr_mapped
nr_file_pages nr_dirty nr_writeback nr_writeback_temp nr_shmem nr_shmem_hugepages
nr_shmem_pmdmapped nr_file_hugepages nr_file_pmdmapped nr_anon_transparent_hugepages
nr_vmscan_write nr_vmscan_immediate_reclaim nr_dirtied nr_written nr_throttled_written
nr_kernel_misc_reclaimable nr_foll_pin_acquired nr_foll_pin_released nr_kernel_stack
nr_page_table_pages nr_sec_page_table_pages nr_iommu_pages nr_swapcached pgpromote_success
pgpromote_candidate pgdemote_kswapd pgdemote_direct pgdemote_khugepaged nr_hugetlb
nr_balloon_pages
""".split()


@dataclass(frozen=True)
class PagesetView:
    cpu: int
    count: int
    high: int
    batch: int
    high_min: int
    high_max: int


@dataclass(frozen=True)
class ZoneView:
    node: int
    name: str
    idx: int
    populated: bool
    first_of_node: bool          # the first populated zone of its node prints the node stats
    free: int
    min: int
    low: int
    high: int
    promo: int
    spanned: int
    present: int
    managed: int
    protection: tuple[int, ...]
    counters: tuple[tuple[str, int], ...]        # zone gauges then NUMA events
    pagesets: tuple[PagesetView, ...]
    stats_threshold: int
    start_pfn: int
    free_by_order: tuple[int, ...]
    free_by_order_mt: tuple[tuple[int, ...], ...]   # [mt][order]
    blocks_by_mt: tuple[int, ...]


ZONE_PAGE_GAUGES = {"nr_zone_inactive_anon": PageStat.INACTIVE_ANON,
                    "nr_zone_active_anon": PageStat.ACTIVE_ANON,
                    "nr_zone_inactive_file": PageStat.INACTIVE_FILE,
                    "nr_zone_active_file": PageStat.ACTIVE_FILE,
                    "nr_zone_write_pending": PageStat.FILE_DIRTY}

NODE_PAGE_GAUGES = {"nr_inactive_anon": PageStat.INACTIVE_ANON, "nr_active_anon": PageStat.ACTIVE_ANON,
                    "nr_inactive_file": PageStat.INACTIVE_FILE, "nr_active_file": PageStat.ACTIVE_FILE,
                    "nr_anon_pages": PageStat.ANON, "nr_mapped": PageStat.FILE_MAPPED,
                    "nr_file_pages": PageStat.FILE, "nr_dirty": PageStat.FILE_DIRTY,
                    "nr_shmem": PageStat.SHMEM, "nr_page_table_pages": PageStat.PAGETABLE,
                    "nr_swapcached": PageStat.SWAPCACHE,
                    "workingset_refault_anon": PageStat.WS_REFAULT_ANON,
                    "workingset_refault_file": PageStat.WS_REFAULT_FILE,
                    "workingset_activate_anon": PageStat.WS_ACTIVATE_ANON,
                    "workingset_activate_file": PageStat.WS_ACTIVATE_FILE,
                    "nr_vmscan_write": PageStat.VMSCAN_WRITE, "nr_written": PageStat.WRITTEN,
                    "nr_anon_transparent_hugepages": PageStat.ANON_THPS}


def zone_counters(m, z: Zone) -> list[tuple[str, int]]:
    g = m.vmm.gauges[z.zid]
    gauges = [(name, z.free_pages if name == "nr_free_pages"
               else g[ZONE_PAGE_GAUGES[name]] if name in ZONE_PAGE_GAUGES else 0)
              for name in ZONE_GAUGES]
    numa = [(name, z.stats[ZoneStat.NUMA_HIT + i]) for i, name in enumerate(NUMA_EVENT_NAMES)]
    return gauges + numa


def zone_view(m, z: Zone) -> ZoneView:
    populated = [q for q in m.node_zones[z.node_id] if q.present_pages]
    first = bool(populated) and populated[0] is z
    if z.present_pages:
        pb_lo, pb_hi = z.start_pfn >> PAGEBLOCK_ORDER, ((z.end_pfn - 1) >> PAGEBLOCK_ORDER) + 1
        pb_mt = np.frombuffer(m.ft.pb_mt, dtype=np.uint8)[pb_lo:pb_hi]
        pb_zone = np.frombuffer(m.ft.pb_zone, dtype=np.uint8)[pb_lo:pb_hi]
        blocks = np.bincount(pb_mt[pb_zone == z.zid], minlength=NR_MIGRATE)[:NR_MIGRATE]
    else:
        blocks = [0] * NR_MIGRATE
    return ZoneView(
        node=z.node_id, name=z.name, idx=z.idx, populated=bool(z.present_pages), first_of_node=first,
        free=z.free_pages, min=z.wmark_min, low=z.wmark_low, high=z.wmark_high, promo=z.wmark_promo,
        spanned=z.spanned_pages, present=z.present_pages, managed=z.managed_pages,
        protection=tuple(z.lowmem_reserve), counters=tuple(zone_counters(m, z)),
        pagesets=tuple(PagesetView(p.cpu, p.count, p.high, p.batch, p.high_min, p.high_max)
                       for p in z.pcp.values()),
        stats_threshold=watermarks.stats_threshold(z, m.config.cpus),
        start_pfn=z.start_pfn,
        free_by_order=tuple(z.free_blocks_by_order()),
        free_by_order_mt=tuple(tuple(z.free_blocks(o, mt) for o in range(NR_ORDERS))
                               for mt in range(NR_MIGRATE)),
        blocks_by_mt=tuple(int(b) for b in blocks))


def node_counters(m, node: int | None) -> list[tuple[str, int]]:
    """The per-node gauges (zoneinfo's "per-node stats", node vmstat), summed if node is None."""
    g = page_stats(m, _node_zones(m, node))
    extra = {"nr_balloon_pages": m.balloon.pages_on(node),
             "nr_hugetlb": m.hugetlb.total_pages(node)}
    return [(name, g[NODE_PAGE_GAUGES[name]] if name in NODE_PAGE_GAUGES else extra.get(name, 0))
            for name in NODE_GAUGES]


# ---------------------------------------------------------------------------
# vmstat
# ---------------------------------------------------------------------------

def vmstat(m) -> list[tuple[str, int]]:
    zones = m.zones
    out = []
    for i, name in enumerate(ZONE_GAUGES):
        out.append((name, sum(zone_counters(m, z)[i][1] for z in zones)))
    for i, name in enumerate(NUMA_EVENT_NAMES):
        out.append((name, sum(z.stats[ZoneStat.NUMA_HIT + i] for z in zones)))
    out.extend(node_counters(m, None))
    free = sum(z.free_pages for z in zones)
    dirtyable = max(0, free - watermarks.totalreserve_pages(zones))
    out += [("nr_dirty_threshold", dirtyable * 20 // 100),
            ("nr_dirty_background_threshold", dirtyable * 10 // 100),
            ("nr_memmap_pages", sum(len(b.memmap) for b in m.hotplug.blocks.values())),
            ("nr_memmap_boot_pages", m.memmap_pages)]
    ev = m.events
    for i, name in enumerate(VM_EVENT_NAMES):
        out.append((name, ev[i]))
        if name == "pswpout":
            for prefix, stat in (("pgalloc", ZoneStat.PGALLOC), ("allocstall", ZoneStat.ALLOCSTALL),
                                 ("pgskip", None)):
                for zi in range(NR_ZONES):
                    total = 0 if stat is None else sum(
                        m.node_zones[n][zi].stats[stat] for n in range(len(m.node_zones)))
                    out.append((f"{prefix}_{ZONE_NAMES[zi].lower()}", total))
    out.append(("nr_unstable", 0))
    return out


# ---------------------------------------------------------------------------
# swaps, cpu
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class SwapView:
    name: str
    kind: str
    size_kb: int
    used_kb: int
    priority: int


@dataclass(frozen=True)
class CpuStat:
    """/proc/stat figures, times in USER_HZ (1/100 s) ticks."""
    idle_per_cpu: tuple[int, ...]
    user_per_cpu: tuple[int, ...]
    ctxt: int
    boot_time: int
    interrupts: int
    softirq_timer: int
    processes: int
    procs_running: int
    procs_blocked: int


def cpu_stat(m) -> CpuStat:
    uptime_hz = m.clock.uptime_us // 10_000
    timer = m.clock.tick * m.config.cpus       # one local timer interrupt per tick per CPU
    user = tuple(busy * m.clock.tick_ms // 10 for busy in m.tasks.cpu_busy)
    return CpuStat(idle_per_cpu=tuple(uptime_hz - u for u in user), user_per_cpu=user,
                   ctxt=m.tasks.ctxt,
                   boot_time=m.boot_time, interrupts=timer, softirq_timer=timer,
                   processes=m.tasks.forks,
                   procs_running=sum(p.state == "R" for p in m.tasks.procs.values()),
                   procs_blocked=sum(p.state == "D" for p in m.tasks.procs.values()))


# ---------------------------------------------------------------------------
# boot log
# ---------------------------------------------------------------------------

E820_NAMES = {"ram": "usable", "reserved": "reserved", "rom": "reserved", "acpi": "ACPI data",
              "acpi_nvs": "ACPI NVS", "pmem": "persistent (type 7)"}


def log_boot(m) -> None:
    cfg = m.config
    lines = ["BIOS-provided physical RAM map:"]
    for r in cfg.memory_map:
        if r.kind in E820_NAMES:
            lines.append(f"BIOS-e820: [mem {r.start:#018x}-{r.end - 1:#018x}] {E820_NAMES[r.kind]}")
    lines.append("Zone ranges:")
    for zi, name in enumerate(ZONE_NAMES):
        zs = [z for z in m.zones if z.idx == zi and z.present_pages]
        if zs:
            lo = min(z.start_pfn for z in zs) << PAGE_SHIFT
            hi = (max(z.end_pfn for z in zs) << PAGE_SHIFT) - 1
            lines.append(f"  {name:<8} [mem {lo:#018x}-{hi:#018x}]")
        else:
            lines.append(f"  {name:<8} empty")
    lines.append("Early memory node ranges")
    for node, ranges in enumerate(m.node_ram):
        for s, e in ranges:
            lines.append(f"  node {node:3d}: [mem {s << PAGE_SHIFT:#018x}-{(e << PAGE_SHIFT) - 1:#018x}]")
    for r in m.reservations:
        lines.append(f"memblock: reserved [mem {r.start_pfn << PAGE_SHIFT:#018x}-"
                     f"{(r.end_pfn << PAGE_SHIFT) - 1:#018x}] {r.what}")
    present = sum(z.present_pages for z in m.zones)
    managed = sum(z.managed_pages for z in m.zones)
    lines.append(f"Built {len(m.node_zones)} zonelists, mobility grouping on.  Total pages: {managed}")
    lines.append(f"Memory: {managed * KB_PER_PAGE}K/{present * KB_PER_PAGE}K available "
                 f"({cfg.kernel.image_size // KiB}K kernel image, "
                 f"{(present - managed) * KB_PER_PAGE}K reserved, 0K cma-reserved)")
    for d in m.swap.active():
        lines.append(f"Adding {d.size_kb}k swap on {d.name}.  Priority:{d.priority} extents:1 "
                     f"across:{d.size_kb}k")
    for line in lines:
        m.kmsg.log(0, line)
