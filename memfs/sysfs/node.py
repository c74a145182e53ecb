"""devices/system/node: the NUMA node files (drivers/base/node.c).

Top level: `online`, `possible`, `has_memory`, `has_normal_memory`,
`has_cpu`, each a node range list. Per node: `meminfo` (`Node N Key:` with
a 16-column key and `%8lu kB`, hugetlb counts last), `distance`,
`numastat`, `vmstat` and `cpulist`. Numbers come from Machine.meminfo(node),
Machine.zoneinfo and Machine.node_stats; the renderers only add a node's
zones together and convert pages to kB.
"""
from __future__ import annotations

from engine.pmm.zone import ZONE_NORMAL
from engine.units import pages_to_kb, range_list
from engine.views import MemInfo, ZoneView

from ..textfmt import kb_line, name_value_lines, node_hugepages_line, node_prefix

# numastat's names for the NUMA event counters, which vmstat calls numa_*.
NUMASTAT_NAMES = (("numa_hit", "numa_hit"), ("numa_miss", "numa_miss"),
                  ("numa_foreign", "numa_foreign"), ("interleave_hit", "numa_interleave"),
                  ("local_node", "numa_local"), ("other_node", "numa_other"))
NODE_LISTS = ("online", "possible", "has_memory", "has_normal_memory", "has_cpu")


# ---------------------------------------------------------------------------
# nodeN/meminfo
# ---------------------------------------------------------------------------

def show_node_meminfo(m, node: int) -> str:
    i = m.meminfo(node)
    prefix = node_prefix(node)
    return ("".join(prefix + kb_line(key, kb) for key, kb in node_meminfo_rows(i))
            + node_hugepages_line(node, "HugePages_Total", i.hugepages_total)
            + node_hugepages_line(node, "HugePages_Free", i.hugepages_free)
            + node_hugepages_line(node, "HugePages_Surp", i.hugepages_surp))


def node_meminfo_rows(i: MemInfo) -> list[tuple[str, int]]:
    """(key, kB) in node_read_meminfo's order, up to the hugetlb lines."""
    pages = [("MemTotal", i.total), ("MemFree", i.free), ("MemUsed", i.total - i.free),
             ("SwapCached", i.swap_cached), ("Active", i.active_anon + i.active_file),
             ("Inactive", i.inactive_anon + i.inactive_file),
             ("Active(anon)", i.active_anon), ("Inactive(anon)", i.inactive_anon),
             ("Active(file)", i.active_file), ("Inactive(file)", i.inactive_file),
             ("Unevictable", i.unevictable), ("Mlocked", i.mlocked),
             ("Dirty", i.dirty), ("Writeback", i.writeback), ("FilePages", i.file_pages),
             ("Mapped", i.mapped), ("AnonPages", i.anon_pages), ("Shmem", i.shmem)]
    rows = [(key, pages_to_kb(n)) for key, n in pages]
    rows.append(("KernelStack", i.kernel_stack_kb))
    pages = [("PageTables", i.page_tables), ("SecPageTables", i.sec_page_tables),
             ("NFS_Unstable", 0), ("Bounce", 0), ("WritebackTmp", i.writeback_tmp),
             ("KReclaimable", i.kreclaimable),
             ("Slab", i.slab_reclaimable + i.slab_unreclaimable),
             ("SReclaimable", i.slab_reclaimable), ("SUnreclaim", i.slab_unreclaimable),
             ("AnonHugePages", i.anon_huge), ("ShmemHugePages", i.shmem_huge),
             ("ShmemPmdMapped", i.shmem_pmd_mapped), ("FileHugePages", i.file_huge),
             ("FilePmdMapped", i.file_pmd_mapped), ("Balloon", i.balloon)]
    return rows + [(key, pages_to_kb(n)) for key, n in pages]


# ---------------------------------------------------------------------------
# nodeN/numastat, nodeN/vmstat
# ---------------------------------------------------------------------------

def node_zone_counters(m, node: int) -> list[tuple[str, int]]:
    """The zone gauges and NUMA events of the node's zones, added together, in order."""
    zones = zones_of_node(m.zoneinfo(), node)
    names = [name for name, _ in zones[0].counters]
    return [(name, sum(z.counters[k][1] for z in zones)) for k, name in enumerate(names)]


def show_node_numastat(m, node: int) -> str:
    counters = dict(node_zone_counters(m, node))
    return name_value_lines((shown, counters[counter]) for shown, counter in NUMASTAT_NAMES)


def show_node_vmstat(m, node: int) -> str:
    return name_value_lines(node_zone_counters(m, node) + m.node_stats(node))


# ---------------------------------------------------------------------------
# nodeN/distance, nodeN/cpulist
# ---------------------------------------------------------------------------

def show_node_distance(m, node: int) -> str:
    """SLIT distances from this node to every node, in node order."""
    return " ".join(str(d) for d in m.config.distance[node]) + "\n"


def show_node_cpulist(m, node: int) -> str:
    return range_list(m.config.nodes[node].cpus) + "\n"


# ---------------------------------------------------------------------------
# top-level node lists
# ---------------------------------------------------------------------------

def show_node_list(m, which: str) -> str:
    """`online`, `possible`, `has_memory`, `has_normal_memory` or `has_cpu`: `0-1\\n`."""
    if which not in NODE_LISTS:
        raise ValueError(f"show_node_list: {which!r} is not one of {', '.join(NODE_LISTS)}")
    return range_list(nodes_in_state(m, which)) + "\n"


def nodes_in_state(m, which: str) -> list[int]:
    nodes = [n.id for n in m.config.nodes]
    if which in ("online", "possible"):
        return nodes
    if which == "has_cpu":
        return [n.id for n in m.config.nodes if n.cpus]
    zones = [z for z in m.zoneinfo() if z.populated]
    if which == "has_normal_memory":
        zones = [z for z in zones if z.idx <= ZONE_NORMAL]
    return sorted({z.node for z in zones})


def zones_of_node(zones: list[ZoneView], node: int) -> list[ZoneView]:
    return [z for z in zones if z.node == node]
