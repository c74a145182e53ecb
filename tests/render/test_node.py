"""devices/system/node: node meminfo, distance, numastat, vmstat, cpulist and node lists.

config/default.yaml by hand (4 KiB pages): node 0 spans 0-2G, node 1 2G-5G.
  node 0: present 158 (DMA below 640K) + 3840 (DMA from 1M) + 520192 (DMA32 16M-2G)
          = 524190; reserved 158 low + 8192 image (32M) + memmap ceil(524190*64/4096) = 8191
          -> 507649 managed pages = 2030596 kB
  node 1: present 262112 (2G to 0xbffe0000) + 262144 (4G-5G) = 524256;
          reserved memmap ceil(524256*64/4096) = 8192 -> 516064 pages = 2064256 kB
"""
import re

import yaml

from engine import Machine, parse
from memfs.machines import builtin
from memfs.proc.vmstat import show_vmstat
from memfs.sysfs.node import (show_node_cpulist, show_node_distance, show_node_list,
                              show_node_meminfo, show_node_numastat, show_node_vmstat)

NODE_TOTAL_KB = (2030596, 2064256)
KEYS = """
MemTotal MemFree MemUsed SwapCached Active Inactive Active(anon) Inactive(anon) Active(file)
Inactive(file) Unevictable Mlocked Dirty Writeback FilePages Mapped AnonPages Shmem KernelStack
PageTables SecPageTables NFS_Unstable Bounce WritebackTmp KReclaimable Slab SReclaimable
SUnreclaim AnonHugePages ShmemHugePages ShmemPmdMapped FileHugePages FilePmdMapped Balloon
HugePages_Total HugePages_Free HugePages_Surp
""".split()
LINE = re.compile(r"^Node (\d+) ([A-Za-z_()]+):\s+(\d+)( kB)?$")


def node_fields(text: str) -> dict[str, int]:
    return {LINE.match(line).group(2): int(LINE.match(line).group(3)) for line in text.splitlines()}


def pairs(text: str) -> list[tuple[str, int]]:
    return [(line.split(" ")[0], int(line.split(" ")[1])) for line in text.splitlines()]


# ---------------------------------------------------------------------------
# meminfo
# ---------------------------------------------------------------------------

def test_node_meminfo_keys_and_layout(shared_default):
    for node in (0, 1):
        lines = show_node_meminfo(shared_default, node).splitlines()
        assert [LINE.match(line).group(2) for line in lines] == KEYS
        prefix = f"Node {node} "
        for line in lines:
            assert LINE.match(line).group(1) == str(node)
            if line.endswith(" kB"):
                assert line.index(" kB") == len(prefix) + 24, f"{line!r}"
        assert lines[-3:] == [f"Node {node} HugePages_Total:     0",
                              f"Node {node} HugePages_Free:      0",
                              f"Node {node} HugePages_Surp:      0"]


def test_node_meminfo_values_by_hand(shared_default):
    for node in (0, 1):
        f = node_fields(show_node_meminfo(shared_default, node))
        assert f["MemTotal"] == f["MemFree"] == NODE_TOTAL_KB[node]
        assert f["MemUsed"] == 0


def test_node_meminfo_memused_after_palloc(default):
    default.palloc(count=100, node=1)
    f = node_fields(show_node_meminfo(default, 1))
    assert f["MemUsed"] == 400 == f["MemTotal"] - f["MemFree"]
    assert node_fields(show_node_meminfo(default, 0))["MemUsed"] == 0


def test_small_node_meminfo_matches_machine_total(shared_small):
    assert node_fields(show_node_meminfo(shared_small, 0))["MemTotal"] == 55300


# ---------------------------------------------------------------------------
# numastat, vmstat
# ---------------------------------------------------------------------------

def test_numastat_names_and_values(default):
    default.palloc(count=8, node=1)
    assert show_node_numastat(default, 1) == (
        "numa_hit 8\nnuma_miss 0\nnuma_foreign 0\ninterleave_hit 0\nlocal_node 8\nother_node 0\n")
    assert show_node_numastat(default, 0).startswith("numa_hit 0\n")


def test_node_vmstat_blocks_in_order(shared_default):
    names = [n for n, _ in pairs(show_node_vmstat(shared_default, 0))]
    assert names[0] == "nr_free_pages"
    assert names.index("nr_free_cma") < names.index("numa_hit") < names.index("numa_other") \
        < names.index("nr_inactive_anon") < names.index("nr_balloon_pages")
    assert "nr_dirty_threshold" not in names and "pgfault" not in names
    assert len(names) == len(set(names))


def test_node_vmstat_free_pages_by_hand(shared_default):
    for node in (0, 1):
        free = dict(pairs(show_node_vmstat(shared_default, node)))["nr_free_pages"]
        assert free * 4 == NODE_TOTAL_KB[node]


def test_node_counters_add_up_to_vmstat(default):
    default.palloc(count=5, node=0)
    default.palloc(count=7, node=1)
    machine = dict(pairs(show_vmstat(default)))
    nodes = [dict(pairs(show_node_vmstat(default, n))) for n in (0, 1)]
    for name in ("nr_free_pages", "numa_hit", "numa_local", "nr_inactive_anon"):
        assert nodes[0][name] + nodes[1][name] == machine[name], name


# ---------------------------------------------------------------------------
# distance, cpulist, node lists
# ---------------------------------------------------------------------------

def test_distance_is_the_slit_row(shared_default, shared_small):
    assert show_node_distance(shared_default, 0) == "10 21\n"
    assert show_node_distance(shared_default, 1) == "21 10\n"
    assert show_node_distance(shared_small, 0) == "10\n"


def test_cpulist(shared_default, shared_small):
    assert show_node_cpulist(shared_default, 0) == "0\n"
    assert show_node_cpulist(shared_default, 1) == "1\n"
    assert show_node_cpulist(shared_small, 0) == "0\n"


def test_node_lists(shared_default, shared_small):
    for which in ("online", "possible", "has_memory", "has_normal_memory", "has_cpu"):
        assert show_node_list(shared_default, which) == "0-1\n"
        assert show_node_list(shared_small, which) == "0\n"


def three_node_machine():
    """default.yaml with node 1 CPU-less and a node 2 that has CPUs but no RAM."""
    raw = yaml.safe_load(builtin("default").read_text())
    raw["machine"]["cpus"] = 4
    raw["numa"] = {"nodes": [
        {"id": 0, "start": 0, "end": "2G", "cpus": [0, 1]},
        {"id": 1, "start": "2G", "end": 0x140000000, "cpus": []},
        {"id": 2, "start": 0x140000000, "end": 0x180000000, "cpus": [2, 3]}]}
    return Machine(parse(raw), paused=True)


def test_cpu_less_and_memory_less_nodes():
    m = three_node_machine()
    assert [show_node_list(m, w) for w in ("online", "possible", "has_memory",
                                           "has_normal_memory", "has_cpu")] == \
        ["0-2\n", "0-2\n", "0-1\n", "0-1\n", "0,2\n"]
    assert [show_node_cpulist(m, n) for n in range(3)] == ["0-1\n", "\n", "2-3\n"]
    assert show_node_distance(m, 1) == "20 10 20\n"            # no SLIT given: remote is 20
    assert node_fields(show_node_meminfo(m, 2))["MemTotal"] == 0
