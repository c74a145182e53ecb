"""The mounted tree: node types and the tables that register every file.

As fs/proc registers files with one line each (proc_create_single), each file
here is one row: name, mode, and the functions that show it (read) or store
into it (write). Directories are tables of rows; a directory whose entries
depend on the machine (nodes now, processes later) gives a function.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .proc import iomem, meminfo, stat, swaps, vmstat, zoneinfo
from .proc import memfs_files
from .sysfs import node as sysfs_node


@dataclass(frozen=True)
class File:
    mode: int                                            # 0o444 read-only, 0o200 write-only, 0o644 both
    show: Callable[[object], str | bytes] | None = None  # machine -> content (rendered at offset 0)
    store: Callable[[object, str], str | None] | None = None   # (machine, text) -> result line
    transaction: bool = False        # a read returns the result of this handle's last write
    help: str = ""                   # one line for the README

    @property
    def readable(self) -> bool:
        return self.show is not None or self.transaction

    @property
    def writable(self) -> bool:
        return self.store is not None


@dataclass(frozen=True)
class Dir:
    entries: dict | Callable[[object], dict] = field(default_factory=dict)
    mode: int = 0o555
    help: str = ""

    def children(self, machine) -> dict:
        return self.entries(machine) if callable(self.entries) else self.entries


def _ro(show, help="", mode=0o444) -> File:
    return File(mode, show=show, help=help)


def _sysctl_dir(machine) -> dict:
    return {name: File(0o644, show=lambda m, n=name: m.sysctl_read(n),
                       store=lambda m, text, n=name: m.sysctl_write(n, text),
                       help=machine.tunables[name].help)
            for name in sorted(machine.tunables)}


def _node_dir(node: int) -> Dir:
    return Dir({
        "meminfo": _ro(lambda m: sysfs_node.show_node_meminfo(m, node),
                       "the node's memory, as /sys/devices/system/node/nodeN/meminfo"),
        "distance": _ro(lambda m: sysfs_node.show_node_distance(m, node),
                        "SLIT distances from this node to every node"),
        "numastat": _ro(lambda m: sysfs_node.show_node_numastat(m, node),
                        "numa_hit, numa_miss, numa_foreign ... of the node's allocations"),
        "vmstat": _ro(lambda m: sysfs_node.show_node_vmstat(m, node),
                      "the node's zone and node counters"),
        "cpulist": _ro(lambda m: sysfs_node.show_node_cpulist(m, node), "the node's CPUs"),
    }, help="one NUMA node")


def _nodes(machine) -> dict:
    entries = {f"node{n.id}": _node_dir(n.id) for n in machine.config.nodes}
    for which in ("online", "possible", "has_memory", "has_normal_memory", "has_cpu"):
        entries[which] = _ro(lambda m, w=which: sysfs_node.show_node_list(m, w),
                             f"nodes that are {which.replace('_', ' ')} (range list)")
    return entries


def build_root() -> Dir:
    return Dir({
        "README": _ro(memfs_files.show_readme, "this help page"),
        "ctl": File(0o644, store=memfs_files.store_ctl, transaction=True,
                    help="machine-wide commands (below); the result is read back on the same open file"),
        "clock": File(0o644, show=memfs_files.show_clock, store=memfs_files.store_clock,
                      help="read: tick, state, rate; write: pause, resume, step N, hz N"),
        "kmsg": _ro(memfs_files.show_kmsg,
                    "kernel log: boot, every command's result, every rejected write and why"),
        "meminfo": _ro(meminfo.show_meminfo, "memory summary, as /proc/meminfo"),
        "vmstat": _ro(vmstat.show_vmstat, "counters, as /proc/vmstat"),
        "zoneinfo": _ro(zoneinfo.show_zoneinfo,
                        "per-zone watermarks, protection, per-cpu stacks, as /proc/zoneinfo"),
        "buddyinfo": _ro(zoneinfo.show_buddyinfo,
                         "free blocks per order per zone, as /proc/buddyinfo"),
        "pagetypeinfo": _ro(zoneinfo.show_pagetypeinfo,
                            "free blocks per order and migrate type, as /proc/pagetypeinfo",
                            0o400),
        "iomem": _ro(iomem.show_iomem, "the physical address map, as /proc/iomem"),
        "physmap": _ro(iomem.show_physmap,
                       "the physical address map with each range's type, cacheability and flags"),
        "swaps": _ro(swaps.show_swaps, "swap areas, as /proc/swaps"),
        "stat": _ro(stat.show_stat, "CPU time and boot time, as /proc/stat"),
        "sys": Dir({"vm": Dir(_sysctl_dir, help="tunables, as /proc/sys/vm")}),
        "devices": Dir({"system": Dir({"node": Dir(
            _nodes, help="NUMA nodes, as /sys/devices/system/node")})}),
    })


def lookup(root: Dir, machine, path: str):
    """The node at a mount-relative path ("/sys/vm/swappiness"), or None."""
    node = root
    for part in path.strip("/").split("/"):
        if not part:
            continue
        if not isinstance(node, Dir):
            return None
        node = node.children(machine).get(part)
        if node is None:
            return None
    return node
