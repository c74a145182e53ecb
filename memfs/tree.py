"""The mounted tree: node types and the tables that register every file.

As fs/proc registers files with one line each (proc_create_single), each file
here is one row: name, mode, and the functions that show it (read) or store
into it (write). Directories are tables of rows; a directory whose entries
depend on the machine (nodes now, processes later) gives a function.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

from .proc import iomem, meminfo, pressure, stat, swaps, vmstat, zoneinfo
from .proc import memfs_files
from .proc import heap as proc_heap
from .proc import pid as proc_pid
from .sysfs import balloon as sysfs_balloon
from .sysfs import hugepages as sysfs_hugepages
from .sysfs import memory as sysfs_memory
from .sysfs import node as sysfs_node
from .sysfs import thp as sysfs_thp


@dataclass(frozen=True)
class File:
    mode: int                                            # 0o444 read-only, 0o200 write-only, 0o644 both
    show: Callable[[object], str | bytes] | None = None  # machine -> content (rendered at offset 0)
    store: Callable[[object, str], str | None] | None = None   # (machine, text) -> result line
    transaction: bool = False        # a read returns the result of this handle's last write
    help: str = ""                   # one line for the README
    # Binary files indexed by offset: (machine, offset, size) -> bytes, computed per read.
    read_range: Callable[[object, int, int], bytes] | None = None
    stream: bool = False             # the event stream: reads block at its end (trace)

    @property
    def readable(self) -> bool:
        return (self.show is not None or self.transaction or self.read_range is not None
                or self.stream)

    @property
    def writable(self) -> bool:
        return self.store is not None


@dataclass(frozen=True)
class Link:
    target: Callable[[object], str | None]      # machine -> where it points (None: gone)
    help: str = ""


@dataclass(frozen=True)
class Dir:
    entries: dict | Callable[[object], dict] = field(default_factory=dict)
    mode: int = 0o555
    help: str = ""
    # Entries that come and go (process folders): name -> node without listing them all.
    find: Callable[[object, str], object] | None = None
    names: Callable[[object], list[str]] | None = None

    def children(self, machine) -> dict:
        """The static entries (and, for listing, the dynamic ones)."""
        static = self.entries(machine) if callable(self.entries) else self.entries
        if self.names is None:
            return static
        out = dict(static)
        for name in self.names(machine):
            node = self.find(machine, name)
            if node is not None:
                out[name] = node
        return out

    def child(self, machine, name: str):
        static = self.entries(machine) if callable(self.entries) else self.entries
        node = static.get(name)
        if node is None and self.find is not None:
            node = self.find(machine, name)
        return node


def _ro(show, help="", mode=0o444) -> File:
    return File(mode, show=show, help=help)


def _sysctl_dir(machine) -> dict:
    def knob(name: str) -> File:
        t = machine.tunables[name]
        store = lambda m, text, n=name: m.sysctl_write(n, text)     # noqa: E731
        if t.write_only:                    # an action (drop_caches): 0200, EACCES on read
            return File(0o200, store=store, help=t.help)
        return File(0o644, show=lambda m, n=name: m.sysctl_read(n), store=store, help=t.help)
    H = sysfs_hugepages
    knobs = {name: knob(name) for name in sorted(machine.tunables)}
    knobs["nr_hugepages"] = File(0o644, show=H.show_nr, store=H.store_nr,
                                 help="2 MiB hugetlb pool pages: write a count, the pool grows "
                                      "(nodes in turn, as far as memory allows) or shrinks")
    knobs["nr_overcommit_hugepages"] = File(0o644, show=H.show_overcommit,
                                            store=H.store_overcommit,
                                            help="surplus huge pages allowed (kept; none is "
                                                 "ever allocated)")
    return dict(sorted(knobs.items()))


def _hstate_dir(node: int | None = None) -> Dir:
    """hugepages-2048kB: the machine's (kernel/mm/hugepages) or a node's counts."""
    H = sysfs_hugepages
    where = "the machine's" if node is None else "the node's"
    files = {
        "nr_hugepages": File(0o644, show=lambda m: H.show_nr(m, node),
                             store=lambda m, t: H.store_nr(m, t, node),
                             help=f"{where} pool pages; write a count (short of memory the pool "
                                  f"stops where it can: read it back)"),
        "free_hugepages": _ro(lambda m: H.show_free(m, node), f"{where} pool pages not in use"),
        "surplus_hugepages": _ro(lambda m: H.show_surplus(m, node),
                                 "pages allocated beyond the pool (overcommit)"),
    }
    if node is None:
        files["resv_hugepages"] = _ro(H.show_resv, "pool pages promised to mappings, not yet "
                                                   "faulted in")
        files["nr_overcommit_hugepages"] = File(0o644, show=H.show_overcommit,
                                                store=H.store_overcommit,
                                                help="surplus huge pages allowed")
    return Dir(files, help="the 2 MiB huge page pool (default hstate)")


def _node_dir(node: int) -> Dir:
    def entries(m) -> dict:
        out = dict(files)
        for i, n in sorted(m.hotplug_view()["nodes"].items()):
            if n == node:
                out[f"memory{i}"] = Link(lambda m, i=i: f"../../memory/memory{i}",
                                         help="a memory block of the node")
        return out
    files = {
        "meminfo": _ro(lambda m: sysfs_node.show_node_meminfo(m, node),
                       "the node's memory, as /sys/devices/system/node/nodeN/meminfo"),
        "distance": _ro(lambda m: sysfs_node.show_node_distance(m, node),
                        "SLIT distances from this node to every node"),
        "numastat": _ro(lambda m: sysfs_node.show_node_numastat(m, node),
                        "numa_hit, numa_miss, numa_foreign ... of the node's allocations"),
        "vmstat": _ro(lambda m: sysfs_node.show_node_vmstat(m, node),
                      "the node's zone and node counters"),
        "cpulist": _ro(lambda m: sysfs_node.show_node_cpulist(m, node), "the node's CPUs"),
        "hugepages": Dir({sysfs_hugepages.HSTATE_DIR: _hstate_dir(node)},
                         help="the node's share of the hugetlb pool"),
    }
    return Dir(entries, help="one NUMA node; memoryN links to its memory blocks")


def _nodes(machine) -> dict:
    entries = {f"node{n.id}": _node_dir(n.id) for n in machine.config.nodes}
    for which, what in (("online", "are online"), ("possible", "could ever be online"),
                        ("has_memory", "have memory"),
                        ("has_normal_memory", "have memory in a Normal zone"),
                        ("has_cpu", "have CPUs")):
        entries[which] = _ro(lambda m, w=which: sysfs_node.show_node_list(m, w),
                             f"nodes that {what} (range list)")
    return entries


@functools.lru_cache(maxsize=4096)
def memory_block_dir(index: int) -> Dir:
    """devices/system/memory/memoryN (built once per block number)."""
    M = sysfs_memory

    def entries(m) -> dict:
        out = {
            "online": File(0o644, show=lambda m: M.show_online(m, index),
                           store=lambda m, t: M.store_online(m, index, t),
                           help="1 online, 0 offline; write 1 (default zone) or 0"),
            "state": File(0o644, show=lambda m: M.show_state(m, index),
                          store=lambda m, t: M.store_state(m, index, t),
                          help="online or offline; write online, online_kernel, "
                               "online_movable or offline (migrates every page away, EBUSY "
                               "if one cannot move)"),
            "phys_index": _ro(lambda m: M.show_phys_index(m, index), "the block number, hex"),
            "phys_device": _ro(lambda m: "0\n", "0 (s390 legacy)"),
            "removable": _ro(lambda m: "1\n", "1: the kernel can offline memory"),
            "valid_zones": _ro(lambda m: M.show_valid_zones(m, index),
                               "online: its zone (none if it spans zones); offline: the zones "
                               "it may go to, the default first"),
        }
        info = m.memory_block_view(index)
        if info is not None:
            out[f"node{info['node']}"] = Link(lambda m: M.node_link(m, index),
                                              help="its NUMA node")
        return out
    return Dir(entries, help="one memory block")


def _find_block(machine, name: str):
    if not name.startswith("memory") or not name[6:].isdigit() or name[6:] != str(int(name[6:])):
        return None
    index = int(name[6:])
    return memory_block_dir(index) if machine.memory_block_view(index) is not None else None


def _balloon_dir() -> Dir:
    B = sysfs_balloon
    return Dir({
        "target": File(0o644, show=B.show_target, store=B.store_target,
                       help="pages (4 KiB) the host wants in the balloon (num_pages); the "
                            "driver inflates or deflates towards it, 2048 pages a tick"),
        "actual": _ro(B.show_actual, "pages in the balloon now"),
        "stats": _ro(B.show_stats, "the guest's balloon statistics (virtio tags 0-15), "
                                   "name value per line"),
        "features": _ro(lambda m: B.FEATURES, "the feature bits the device offers"),
        "reported_pages": _ro(B.show_reported, "free pages (in blocks of 2 MiB and up) the "
                                               "last free page report (every 2 s) covered"),
    }, help="the virtio balloon, host side")


def _memory_dir() -> Dir:
    M = sysfs_memory
    return Dir({
        "block_size_bytes": _ro(M.show_block_size, "memory block size, hex"),
        "auto_online_blocks": File(0o644, show=M.show_auto_online, store=M.store_auto_online,
                                   help="what a hot-added block does: offline, online, "
                                        "online_kernel or online_movable"),
        "probe": File(0o200, store=M.store_probe,
                      help="write a block-aligned physical address: a memory block appears there"),
        "hard_offline_page": File(0o200, store=M.store_hard_offline,
                                  help="write a physical address: its frame is bad from now on; "
                                       "its content is lost (processes using it get SIGBUS, "
                                       "clean page cache is dropped)"),
        "soft_offline_page": File(0o200, store=M.store_soft_offline,
                                  help="write a physical address: its page is migrated away and "
                                       "the frame never used again"),
    }, find=_find_block, names=M.block_names,
        help="memory hot-plug, as /sys/devices/system/memory")


# ---------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=4096)
def pid_dir(pid: int) -> Dir:
    """The folder of one process (built once per pid: pids are never reused)."""
    def ro(show, help, mode=0o444):
        return File(mode, show=lambda m: show(m, pid), help=help)
    return Dir({
        "status": ro(proc_pid.show_status, "name, state, ids and memory figures (VmRSS, VmPTE, ...)"),
        "statm": ro(proc_pid.show_statm, "size resident shared text lib data dt, in pages"),
        "stat": ro(proc_pid.show_stat, "one line: state, ppid, minflt, majflt, starttime, vsize, rss"),
        "maps": ro(proc_pid.show_maps, "the memory mappings (VMAs)"),
        "smaps": ro(proc_pid.show_smaps, "each mapping with Rss, Pss, shared/private, swap, flags"),
        "smaps_rollup": ro(proc_pid.show_smaps_rollup, "smaps summed over all mappings"),
        "numa_maps": ro(proc_pid.show_numa_maps, "each mapping's memory policy and its pages "
                                                 "by node (N0=, N1=, ...)"),
        "pagemap": File(0o400, read_range=lambda m, off, size: proc_pid.read_pagemap(m, pid, off, size),
                        help="binary: one u64 per virtual page at offset vpn*8 (PFN, swap, "
                             "present/swapped/file/exclusive/soft-dirty bits)"),
        "cmdline": ro(proc_pid.show_cmdline, "the arguments, each ended by NUL"),
        "comm": File(0o644, show=lambda m: proc_pid.show_comm(m, pid),
                     store=lambda m, text: proc_pid.store_comm(m, pid, text),
                     help="the name (write to rename, at most 15 characters)"),
        "oom_score": ro(proc_pid.show_oom_score, "how likely the OOM killer picks it (0..2000 scale)"),
        "oom_score_adj": File(0o644, show=lambda m: proc_pid.show_oom_score_adj(m, pid),
                              store=lambda m, text: proc_pid.store_oom_score_adj(m, pid, text),
                              help="-1000..1000 added to its OOM badness; -1000 = never killed"),
        "pte": ro(proc_pid.show_pte, "the page tables: every non-empty entry, raw and decoded"),
        "heap": ro(proc_heap.show_heap, "the heap: pools, free lists, live allocations, "
                                        "fragmentation; the stack pointer"),
        "limit": ro(pressure.show_limit, "its resident-set limit (limit command): frames, "
                                         "policy, resident pages, faults, evictions"),
        "ctl": File(0o644, store=lambda m, text: memfs_files.store_proc_ctl(m, pid, text),
                    transaction=True, help="per-process commands (below)"),
    }, help="one simulated process")


def _find_pid(machine, name: str):
    if not name.isdigit() or name != str(int(name)):
        return None
    pid = int(name)
    return pid_dir(pid) if machine.has_pid(pid) else None


def _pid_names(machine) -> list[str]:
    return [str(p) for p in machine.pids()]


def _find_by_name(machine, name: str):
    pid = machine.proc_names().get(name)
    if pid is None:
        return None
    return Link(lambda m, n=name: (f"../{m.proc_names()[n]}" if n in m.proc_names() else None),
                help="link to the oldest process of this name")


def _by_name_names(machine) -> list[str]:
    return sorted(machine.proc_names())


def build_root() -> Dir:
    return Dir(find=_find_pid, names=_pid_names, entries={
        "README": _ro(memfs_files.show_readme, "this help page"),
        "ctl": File(0o644, store=memfs_files.store_ctl, transaction=True,
                    help="machine-wide commands (below); the result is read back on the same open file"),
        "clock": File(0o644, show=memfs_files.show_clock, store=memfs_files.store_clock,
                      help="read: tick, state, rate; write: pause, resume, step N, hz N"),
        "kmsg": _ro(memfs_files.show_kmsg,
                    "kernel log: boot, every command's result, every rejected write and why"),
        "trace": File(0o444, stream=True,
                      help="event stream, one line an event: TICK PID EVENT DETAILS (fault, "
                           "malloc, free, scavenge, fork, exit, sigsegv, ...); a read at the end "
                           "blocks until there are new events (cat and tail -f follow it)"),
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
        "pressure": Dir({"memory": _ro(pressure.show_pressure_memory,
                                       "memory stall (PSI): some/full avg10/avg60/avg300 total")},
                        help="pressure stall information, as /proc/pressure"),
        "stat": _ro(stat.show_stat, "CPU time and boot time, as /proc/stat"),
        "kpagecount": File(0o400, read_range=proc_pid.read_kpagecount,
                           help="binary: one u64 per frame at offset pfn*8: how many page-table "
                                "entries map it"),
        "kpageflags": File(0o400, read_range=proc_pid.read_kpageflags,
                           help="binary: one u64 per frame at offset pfn*8: KPF_* flags "
                                "(anon, lru, buddy, pgtable, zero page, ...)"),
        "files": _ro(proc_pid.show_files, "simulated files: size, pages cached and dirty, mappings"),
        "by-name": Dir(find=_find_by_name, names=_by_name_names,
                       help="by-name/NAME links to the folder of the oldest process called NAME"),
        "sys": Dir({"vm": Dir(_sysctl_dir, help="tunables, as /proc/sys/vm")}),
        "kernel": Dir({"mm": Dir({
            "hugepages": Dir({sysfs_hugepages.HSTATE_DIR: _hstate_dir()},
                             help="the hugetlb pool, as /sys/kernel/mm/hugepages"),
            "transparent_hugepage": Dir({
                "enabled": File(0o644, show=sysfs_thp.show_enabled, store=sysfs_thp.store_enabled,
                                help="anonymous THP: always, madvise (only where madvise "
                                     "hugepage was given) or never; [the mode in force]"),
                "hpage_pmd_size": _ro(sysfs_thp.show_hpage_pmd_size,
                                      "bytes one PMD entry maps (2 MiB)"),
            }, help="transparent huge pages, as /sys/kernel/mm/transparent_hugepage")},
            help="memory-management knobs, as /sys/kernel/mm")},
            help="as /sys/kernel"),
        "devices": Dir({"system": Dir({
            "node": Dir(_nodes, help="NUMA nodes, as /sys/devices/system/node"),
            "memory": _memory_dir()}),
            "virtio": Dir({"balloon": _balloon_dir()})}),
    })


def lookup(root: Dir, machine, path: str):
    """The node at a mount-relative path ("/sys/vm/swappiness"), or None."""
    node = root
    for part in path.strip("/").split("/"):
        if not part:
            continue
        if not isinstance(node, Dir):
            return None
        node = node.child(machine, part)
        if node is None:
            return None
    return node
