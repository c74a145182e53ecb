"""/proc/zoneinfo, /proc/buddyinfo and /proc/pagetypeinfo: the per-zone views.

Layouts are mm/vmstat.c's (zoneinfo_show_print, frag_show_print,
pagetypeinfo_showfree_print, pagetypeinfo_showblockcount_print). zoneinfo
lists every zone of every node, populated or not; buddyinfo and
pagetypeinfo list populated zones only. The counts all come from
Machine.zoneinfo and Machine.node_stats.
"""
from __future__ import annotations

from engine.pmm.frames import MIGRATE_NAMES, NR_ORDERS, PAGEBLOCK_ORDER
from engine.views import PagesetView, ZoneView

PAGETYPE_COUNT_CAP = 100000         # the kernel stops counting a free list here, prints `>100000`


def zone_header(node: int, zone_name: str) -> str:
    """`Node 0, zone      DMA`: the zone name right-aligned in 8."""
    return f"Node {node}, zone {zone_name:>8}"


def counter_line(name: str, value: int) -> str:
    """`      nr_free_pages 3840`: 6 spaces, the name left-justified in 12, one space."""
    return f"      {name:<12} {value}\n"


def nodes_of(zones: list[ZoneView]) -> list[int]:
    return sorted({z.node for z in zones})


# ---------------------------------------------------------------------------
# zoneinfo
# ---------------------------------------------------------------------------

def show_zoneinfo(m) -> str:
    zones = m.zoneinfo()
    node_stats = {node: m.node_stats(node) for node in nodes_of(zones)}
    return "".join(zoneinfo_zone(z, node_stats[z.node]) for z in zones)


def zoneinfo_zone(z: ZoneView, node_stats: list[tuple[str, int]]) -> str:
    text = zone_header(z.node, z.name) + "\n"
    if z.first_of_node:
        text += "  per-node stats\n" + "".join(counter_line(n, v) for n, v in node_stats)
    text += watermark_block(z)
    if not z.populated:
        return text
    return (text + "".join(counter_line(n, v) for n, v in z.counters)
            + "  pagesets\n" + "".join(pageset_block(p, z.stats_threshold) for p in z.pagesets)
            + zone_tail(z))


def watermark_block(z: ZoneView) -> str:
    """`  pages free …` through `        protection: (…)`."""
    rows = (("boost", 0), ("min", z.min), ("low", z.low), ("high", z.high), ("promo", z.promo),
            ("spanned", z.spanned), ("present", z.present), ("managed", z.managed), ("cma", 0))
    protection = ", ".join(str(p) for p in z.protection)
    return (f"  pages free     {z.free}\n"
            + "".join(f"        {label:<8} {value}\n" for label, value in rows)
            + f"        protection: ({protection})\n")


def pageset_block(p: PagesetView, stats_threshold: int) -> str:
    rows = (("count", p.count), ("high", p.high), ("batch", p.batch),
            ("high_min", p.high_min), ("high_max", p.high_max))
    return (f"    cpu: {p.cpu}\n"
            + "".join(f"              {label + ':':<9} {value}\n" for label, value in rows)
            + f"  vm stats threshold: {stats_threshold}\n")


def zone_tail(z: ZoneView) -> str:
    return (f"  node_unreclaimable:  0\n"
            f"  start_pfn:           {z.start_pfn}\n"
            f"  reserved_highatomic: 0\n"
            f"  free_highatomic:     0\n")


# ---------------------------------------------------------------------------
# buddyinfo
# ---------------------------------------------------------------------------

def show_buddyinfo(m) -> str:
    return "".join(buddyinfo_line(z) for z in m.zoneinfo() if z.populated)


def buddyinfo_line(z: ZoneView) -> str:
    """Free blocks of each order, `%6lu ` each, so the line ends with a space."""
    return zone_header(z.node, z.name) + " " + "".join(f"{n:6d} " for n in z.free_by_order) + "\n"


# ---------------------------------------------------------------------------
# pagetypeinfo
# ---------------------------------------------------------------------------

def show_pagetypeinfo(m) -> str:
    """One section per node with memory, as the kernel's per-node seq_file walk prints it."""
    zones = [z for z in m.zoneinfo() if z.populated]
    return "".join(pagetypeinfo_node([z for z in zones if z.node == node])
                   for node in nodes_of(zones))


def pagetypeinfo_node(zones: list[ZoneView]) -> str:
    return (f"Page block order: {PAGEBLOCK_ORDER}\n"
            f"Pages per block:  {1 << PAGEBLOCK_ORDER}\n"
            "\n"
            + free_count_header() + "".join(free_count_rows(z) for z in zones)
            + block_count_header() + "".join(block_count_row(z) for z in zones))


def free_count_header() -> str:
    orders = "".join(f"{order:6d} " for order in range(NR_ORDERS))
    return f"{'Free pages count per migrate type at order':<43} {orders}\n"


def free_count_rows(z: ZoneView) -> str:
    return "".join(
        f"Node {z.node:4d}, zone {z.name:>8}, type {mt_name:>12} "
        + "".join(capped_count(n) for n in z.free_by_order_mt[mt]) + "\n"
        for mt, mt_name in enumerate(MIGRATE_NAMES))


def capped_count(count: int) -> str:
    """`%6lu `, or `>100000 ` once the count reaches the kernel's cap."""
    if count >= PAGETYPE_COUNT_CAP:
        return f">{PAGETYPE_COUNT_CAP:6d} "
    return f"{count:6d} "


def block_count_header() -> str:
    return (f"\n{'Number of blocks type ':<23}"
            + "".join(f"{mt_name:>12} " for mt_name in MIGRATE_NAMES) + "\n")


def block_count_row(z: ZoneView) -> str:
    return zone_header(z.node, z.name) + " " + "".join(f"{n:12d} " for n in z.blocks_by_mt) + "\n"
