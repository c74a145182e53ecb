"""NUMA memory policies through the mount: <pid>/ctl `mempolicy ...`, <pid>/numa_maps,
<pid>/pagemap and devices/system/node/nodeN/numastat, on the default machine (paused,
no processes).

The default machine (config/default.yaml): two nodes, CPU 0 on node 0 and CPU 1 on
node 1; memory blocks of 128 MiB (block_size_bytes 0x8000000). Node 1's memory is
what its memoryN links say: blocks 16-23 and 32-39, pfns 0x80000-0xbffff and
0x100000-0x13ffff (its zones: DMA32 from pfn 524288 spanning 262112, Normal from
1048576 spanning 262144). Each range is read from the mount and checked against
zoneinfo, never taken from the engine's own node lookup.

A fresh process's first `mmap 16M` is [0x7ffff6fff000, 0x7ffff7fff000): it touches
the 2 MiB blocks 0x7ffff6e00000 ... 0x7ffff7e00000, nine of them, so a fill takes
4096 pages and 9 new PTE tables (the PMD above them already maps the stack).

Linux semantics checked: numa_maps prints the task policy (mpol_to_str: `bind:1`,
`interleave:0-1`, `prefer:1`, `local`, `default`) on every line and N<node>=pages only
for nodes holding pages; numa_hit counts on the node the allocation preferred (for
bind, the bound node, even from a CPU of the other node, which makes it other_node
there); interleave_hit counts pages placed on their turn's node; a bad policy is
EINVAL and changes nothing.
"""
from __future__ import annotations

import errno
import os
import re

import pytest

from .conftest import _mount, _unmount

PAGE = 4096
MIB = 1 << 20
A16 = 0x7FFFF6FFF000                 # the first mmap 16M of a fresh process
TABLES_16M = 9
PM_PRESENT = 1 << 63
PM_PFN = (1 << 55) - 1
NODE = "devices/system/node"


@pytest.fixture(scope="module")
def numa_module(tmp_path_factory):
    m = _mount(tmp_path_factory.mktemp("numa"), "--config", "default", "--paused",
               "--no-processes", "--seed", "1")
    try:
        yield m
    finally:
        _unmount(m)


@pytest.fixture
def numa(numa_module):
    """The module's two-node machine; every process a test starts is killed after it."""
    before = numa_module.pids()
    try:
        yield numa_module
    finally:
        numa_module.kill_all_but(before)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def parse_list(text: str) -> set[int]:
    out = set()
    for part in text.strip().split(","):
        if part:
            lo, _, hi = part.partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
    return out


def node_ranges(m, node: int) -> list[tuple[int, int]]:
    """[first pfn, end pfn) of each memory block linked under nodeN, merged."""
    block_pages = int(m.read("devices/system/memory/block_size_bytes"), 16) // PAGE
    blocks = sorted(int(n[6:]) for n in os.listdir(m / f"{NODE}/node{node}")
                    if re.fullmatch(r"memory\d+", n))
    ranges: list[list[int]] = []
    for b in blocks:
        lo, hi = b * block_pages, (b + 1) * block_pages
        if ranges and ranges[-1][1] == lo:
            ranges[-1][1] = hi
        else:
            ranges.append([lo, hi])
    return [(lo, hi) for lo, hi in ranges]


def zone_spans(m, node: int) -> list[tuple[int, int]]:
    """[start_pfn, start_pfn + spanned) of node's populated zones, from zoneinfo."""
    out, current, spanned = [], None, None
    for line in m.read("zoneinfo").splitlines():
        z = re.match(r"Node (\d+), zone\s+(\w+)", line)
        if z:
            current, spanned = int(z.group(1)), None
            continue
        s = re.match(r"\s+spanned\s+(\d+)", line)
        if s:
            spanned = int(s.group(1))
        st = re.match(r"\s+start_pfn:\s+(\d+)", line)
        if st and current == node and spanned:
            out.append((int(st.group(1)), int(st.group(1)) + spanned))
    return out


def in_ranges(pfn: int, ranges) -> bool:
    return any(lo <= pfn < hi for lo, hi in ranges)


@pytest.fixture(scope="module")
def nodes(numa_module) -> dict[int, list[tuple[int, int]]]:
    """node -> its pfn ranges, checked against the zone spans of zoneinfo."""
    m = numa_module
    out = {n: node_ranges(m, n) for n in (0, 1)}
    assert out[1] == [(0x80000, 0xC0000), (0x100000, 0x140000)]
    for n in (0, 1):
        for lo, hi in zone_spans(m, n):
            assert in_ranges(lo, out[n]) and in_ranges(hi - 1, out[n]), (n, lo, hi)
            assert not in_ranges(lo, out[1 - n])
    return out


def node_of(pfn: int, nodes) -> int:
    hits = [n for n, r in nodes.items() if in_ranges(pfn, r)]
    assert len(hits) == 1, f"pfn {pfn:#x} is in nodes {hits}"
    return hits[0]


def numastat(m) -> dict[tuple[int, str], int]:
    out = {}
    for n in (0, 1):
        for line in m.read(f"{NODE}/node{n}/numastat").splitlines():
            k, v = line.split()
            out[n, k] = int(v)
    return out


def delta(after, before) -> dict:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def vmstat(m) -> dict[str, int]:
    return {k: int(v) for k, v in (ln.split() for ln in m.read("vmstat").splitlines())}


def numa_maps(m, pid) -> dict[int, tuple[str, str, dict[str, int]]]:
    """start -> (policy, kind (`file=PATH`, `heap`, `stack` or ""), key=value fields)."""
    out = {}
    for line in m.read(f"{pid}/numa_maps").splitlines():
        words = line.split(" ")
        start, policy, rest = int(words[0], 16), words[1], words[2:]
        kind = ""
        if rest and (rest[0].startswith("file=") or rest[0] in ("heap", "stack")):
            kind, rest = rest[0], rest[1:]
        fields = {}
        for w in rest:
            k, eq, v = w.partition("=")
            assert eq and v.isdigit(), f"bad numa_maps field {w!r} in {line!r}"
            fields[k] = int(v)
        out[start] = (policy, kind, fields)
    return out


def policies(m, pid) -> set[str]:
    return {pol for pol, _, _ in numa_maps(m, pid).values()}


def node_counts(fields: dict[str, int]) -> dict[int, int]:
    return {int(k[1:]): v for k, v in fields.items() if re.fullmatch(r"N\d+", k)}


def pfns_of(m, pid, va, pages) -> list[int]:
    ents = m.pagemap(pid, va, pages)
    assert len(ents) == pages
    missing = [i for i, e in enumerate(ents) if not e & PM_PRESENT]
    assert not missing, f"{len(missing)} pages not present, first at {va + missing[0] * PAGE:#x}"
    return [e & PM_PFN for e in ents]


def spawn_on(m, node: int, name: str) -> int:
    """Spawn until a process runs on a CPU of node (stat's processor field, node's cpulist);
    the others are killed."""
    cpus = parse_list(m.read(f"{NODE}/node{node}/cpulist"))
    for _ in range(4):
        pid = m.spawn(name)
        processor = int(m.read(f"{pid}/stat").rsplit(")", 1)[1].split()[36])
        if processor in cpus:
            return pid
        m.kill_all_but(m.pids() - {pid})
    raise AssertionError(f"no process landed on node {node}")


# ---------------------------------------------------------------------------
# bind
# ---------------------------------------------------------------------------

def test_a_bound_process_allocates_only_on_its_node(numa, nodes):
    m = numa
    pid = spawn_on(m, 0, "bound")
    assert policies(m, pid) == {"default"}
    s0 = numastat(m)

    m.write(f"{pid}/ctl", "mempolicy bind 1\n")          # echo "mempolicy bind 1" > ctl
    assert m.kmsg_tail()[0].endswith(f"mempolicy: {pid} (bound): bind:1")
    assert m.mmap(pid, "16M") == A16
    assert m.pctl(pid, f"fill {A16:#x} 16M seed=5") == ""
    assert m.pctl(pid, f"verify {A16:#x} 16M seed=5") == "0"

    pfns = pfns_of(m, pid, A16, 4096)
    off = [p for p in pfns if not in_ranges(p, nodes[1])]
    assert not off, f"{len(off)} pages outside node 1, e.g. pfn {off[0]:#x}"
    assert len(set(pfns)) == 4096

    maps = numa_maps(m, pid)
    assert {pol for pol, _, _ in maps.values()} == {"bind:1"}
    policy, kind, fields = maps[A16]
    assert kind == "" and fields["anon"] == fields["dirty"] == 4096
    assert node_counts(fields) == {1: 4096}, "N1=4096 and no N0"
    assert fields["kernelpagesize_kB"] == 4
    # every allocation (pages and page tables) preferred node 1 and got it, from CPU 0
    d = delta(numastat(m), s0)
    assert d[1, "numa_hit"] >= 4096
    assert d == {(1, "numa_hit"): 4096 + TABLES_16M, (1, "other_node"): 4096 + TABLES_16M}


def test_the_new_page_tables_of_a_bound_process_are_on_its_node(numa, nodes):
    m = numa
    pid = spawn_on(m, 0, "tables")
    before = {pfn for _, pfn in m.pte_dump(pid)[0]}
    assert {node_of(p, nodes) for p in before} == {0}
    assert m.pctl(pid, "mempolicy bind 1") == "bind:1"
    m.mmap(pid, "16M")
    m.pctl(pid, f"fill {A16:#x} 16M")
    new = {pfn for _, pfn in m.pte_dump(pid)[0]} - before
    assert len(new) == TABLES_16M
    assert {node_of(p, nodes) for p in new} == {1}


# ---------------------------------------------------------------------------
# interleave
# ---------------------------------------------------------------------------

def test_interleave_puts_about_half_of_a_mapping_on_each_node(numa, nodes):
    m = numa
    pid = spawn_on(m, 0, "spread")
    s0, v0 = numastat(m), vmstat(m)
    assert m.pctl(pid, "mempolicy interleave 0-1") == "interleave:0-1"
    assert m.mmap(pid, "16M") == A16
    m.pctl(pid, f"fill {A16:#x} 16M seed=9")
    assert m.pctl(pid, f"verify {A16:#x} 16M seed=9") == "0"

    policy, _, fields = numa_maps(m, pid)[A16]
    assert policy == "interleave:0-1"
    counts = node_counts(fields)
    assert set(counts) == {0, 1} and counts[0] + counts[1] == 4096
    # the 9 page tables take turns too: each can shift the split by one
    assert abs(counts[0] - 2048) <= TABLES_16M and abs(counts[1] - 2048) <= TABLES_16M
    by_pagemap = {0: 0, 1: 0}
    for p in pfns_of(m, pid, A16, 4096):
        by_pagemap[node_of(p, nodes)] += 1
    assert by_pagemap == counts

    d = delta(numastat(m), s0)
    total = 4096 + TABLES_16M
    assert d[0, "interleave_hit"] > 0 and d[1, "interleave_hit"] > 0
    assert d[0, "interleave_hit"] + d[1, "interleave_hit"] == total
    for n in (0, 1):
        assert d[n, "interleave_hit"] == d[n, "numa_hit"]
        assert abs(d[n, "interleave_hit"] - counts[n]) <= TABLES_16M
    assert vmstat(m)["numa_interleave"] - v0["numa_interleave"] == total


# ---------------------------------------------------------------------------
# preferred, local, default, fork
# ---------------------------------------------------------------------------

def test_preferred_local_and_default_through_the_ctl(numa, nodes):
    m = numa
    pid = spawn_on(m, 0, "mover")
    assert m.pctl(pid, "mempolicy preferred 1") == "prefer:1"
    a = m.mmap(pid, "4M")
    m.pctl(pid, f"fill {a:#x} 4M")
    assert policies(m, pid) == {"prefer:1"}
    assert node_counts(numa_maps(m, pid)[a][2]) == {1: 1024}

    assert m.pctl(pid, "mempolicy local") == "local"
    b = m.mmap(pid, "4M")
    m.pctl(pid, f"fill {b:#x} 4M")
    maps = numa_maps(m, pid)
    assert {pol for pol, _, _ in maps.values()} == {"local"}
    assert b == a - 4 * MIB and a not in maps, "b's mapping merged with a's: one VMA"
    assert node_counts(maps[b][2]) == {0: 1024, 1: 1024}
    assert {node_of(p, nodes) for p in pfns_of(m, pid, b, 1024)} == {0}
    assert {node_of(p, nodes) for p in pfns_of(m, pid, a, 1024)} == {1}, \
        "placed pages stay where they are"

    assert m.pctl(pid, "mempolicy default") == "default"
    c = m.mmap(pid, "4M")
    m.pctl(pid, f"fill {c:#x} 4M")
    assert policies(m, pid) == {"default"}
    assert {node_of(p, nodes) for p in pfns_of(m, pid, c, 1024)} == {0}


def test_a_forked_child_keeps_its_parents_policy(numa, nodes):
    m = numa
    parent = spawn_on(m, 0, "parent")
    assert m.pctl(parent, "mempolicy bind 0") == "bind:0"
    a = m.mmap(parent, "4M")
    m.pctl(parent, f"fill {a:#x} 4M seed=1")
    child = int(m.pctl(parent, "fork"))
    cpu = int(m.read(f"{child}/stat").rsplit(")", 1)[1].split()[36])
    assert cpu in parse_list(m.read(f"{NODE}/node1/cpulist")), "the child runs on node 1"
    assert policies(m, child) == {"bind:0"}
    m.pctl(child, f"fill {a:#x} 4M seed=2")            # copy-on-write copies
    assert {node_of(p, nodes) for p in pfns_of(m, child, a, 1024)} == {0}
    assert node_counts(numa_maps(m, child)[a][2]) == {0: 1024}
    assert m.pctl(parent, f"verify {a:#x} 4M seed=1") == "0"
    assert m.pctl(child, f"verify {a:#x} 4M seed=2") == "0"


def test_numa_maps_lines_have_the_linux_layout(numa):
    m = numa
    pid = spawn_on(m, 0, "layout")
    assert m.ctl("file numa_layout 1M") == ""
    f = m.mmap(pid, "1M file=numa_layout")
    m.pctl(pid, f"touch {f:#x} 1M")                    # read: page cache, not dirty
    h = int(m.pctl(pid, "malloc 100"), 16)
    m.pctl(pid, f"memset {h:#x} 100")
    lines = m.read(f"{pid}/numa_maps").splitlines()
    assert lines[0] == "00400000 default file=/usr/bin/layout"
    heap = [ln for ln in lines if " heap" in ln]
    assert len(heap) == 1 and re.fullmatch(
        r"[0-9a-f]{8,} default heap anon=1 dirty=1 active=0 N0=1 kernelpagesize_kB=4", heap[0])
    assert f"{f:x} default file=/numa_layout mapped=256 active=0 N0=256 kernelpagesize_kB=4" in lines
    assert lines[-1] == "7ffffffde000 default stack anon=1 dirty=1 active=0 N0=1 kernelpagesize_kB=4"


# ---------------------------------------------------------------------------
# bad writes
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("command", [
    "mempolicy random 1",          # unknown mode
    "mempolicy bind 5",            # no node 5
    "mempolicy interleave 0-2",
    "mempolicy bind",              # needs nodes
    "mempolicy interleave",
    "mempolicy preferred",
    "mempolicy default 1",         # takes none
    "mempolicy local 1",
    "mempolicy preferred 0-1",     # one node
    "mempolicy bind 1-0",
    "mempolicy bind one",
    "mempolicy bind 1 2",
    "mempolicy",
])
def test_a_bad_mempolicy_write_is_einval_and_changes_nothing(numa, nodes, command):
    m = numa
    pid = spawn_on(m, 0, "strict")
    assert m.pctl(pid, "mempolicy bind 1") == "bind:1"
    a = m.mmap(pid, "1M")
    m.pctl(pid, f"fill {a:#x} 1M")
    maps0, stat0 = m.read(f"{pid}/numa_maps"), numastat(m)

    assert m.write_errno(f"{pid}/ctl", command + "\n") == errno.EINVAL
    assert m.kmsg_tail()[0].split("] ", 1)[1].startswith(f"memfs: /{pid}/ctl: mempolicy: ")
    code, reason = m.rejected(command, f"{pid}/ctl")
    assert code == errno.EINVAL and "mempolicy" in reason
    assert m.read(f"{pid}/numa_maps") == maps0
    assert numastat(m) == stat0
    # still bound: the next pages go to node 1 (b's mapping merges with a's)
    b = m.mmap(pid, "1M")
    m.pctl(pid, f"fill {b:#x} 1M")
    assert {node_of(p, nodes) for p in pfns_of(m, pid, b, 256)} == {1}
    assert node_counts(numa_maps(m, pid)[b][2]) == {1: 512}


def test_mempolicy_on_a_kernel_thread_or_a_gone_process_fails(numa):
    m = numa
    assert m.write_errno("5000001/ctl", "mempolicy bind 1\n") == errno.EINVAL
    assert not (m / "5999999").exists()
