"""NUMA memory policies (set_mempolicy semantics, engine/vmm/mempolicy.py), frame by frame.

Machines and figures worked out by hand:

  default     config/default.yaml: node 0 owns physical [0, 2G) (pfns 0-0x7ffff), node 1
              owns [2G, 5G) (pfns 0x80000-0x13ffff; RAM there up to 0xbffe0000 and from
              4 GiB). CPU 0 is on node 0, CPU 1 on node 1; a process's CPU is
              (pid - 5000000) mod 2, so the first spawn (5000002) runs on node 0 and
              its fork (5000003) on node 1.
  64 MiB      a fresh process's first mmap of 64 MiB is [0x7ffff3fff000, 0x7ffff7fff000):
              it touches the 2 MiB blocks 0x7ffff3e00000 ... 0x7ffff7e00000, 33 of them,
              under the PMD that already maps the stack (same 1 GiB): filling it makes
              33 new PTE tables and 16384 pages. 8 MiB at 0x7ffff77ff000: 5 tables.
  two-node    a 256 MiB variant of config/small.yaml with two CPUs, node 0 = [0, 128M),
              node 1 = [128M, 256M), no swap, no zswap, overcommit_memory 1: a bound
              process past node 1's ~125 MiB can only be helped by the OOM killer.
  three-node  the same plus node 2 = [256M, 512M) with no RAM (memoryless).

Linux semantics checked (mm/mempolicy.c, mm/page_alloc.c zone_statistics,
mm/oom_kill.c): numa_hit counts on the node the allocation preferred (for bind the
first allowed node of the zonelist), numa_miss on the node it fell back to and
numa_foreign on the preferred zone; interleave_hit counts pages placed on the node
whose turn it was; an OOM for a bind policy that leaves out some memory node is
CONSTRAINT_MEMORY_POLICY, weighs only processes whose policy may use those nodes,
and lists only them in the task dump.
"""
from __future__ import annotations

import re

import pytest
import yaml

from engine.errors import InvalidArgument, OutOfMemory
from engine.vmm import pte as P
from vmm_common import MIB, PAGE, RW, MMAP_BASE, FIRST_PID, event, ptes

# node -> pfn ranges, from config/default.yaml's numa.nodes (start/end in bytes)
DEFAULT_NODES = {0: [(0x0, 0x80000)], 1: [(0x80000, 0x140000)]}
TWO_NODES = {0: [(0x0, 0x8000)], 1: [(0x8000, 0x10000)]}
A64 = MMAP_BASE - 64 * MIB           # 0x7ffff3fff000
TABLES_64M = 33                      # 2 MiB blocks the 64 MiB mapping touches
NUMA = ("numa_hit", "numa_miss", "numa_foreign", "numa_interleave", "numa_local",
        "numa_other")


# ---------------------------------------------------------------------------
# machines
# ---------------------------------------------------------------------------

def small_numa_yaml(builtin_yaml, memoryless_node: bool = False) -> str:
    d = yaml.safe_load(builtin_yaml("small"))
    d["machine"]["cpus"] = 2
    for r in d["memory_map"]:
        if r.get("end") == 0x04000000:            # the RAM up to 64 MiB: now up to 256 MiB
            r["end"] = 0x10000000
    nodes = [{"id": 0, "start": 0, "end": "128M", "cpus": [0]},
             {"id": 1, "start": "128M", "end": "256M", "cpus": [1]}]
    dist = [[10, 21], [21, 10]]
    if memoryless_node:
        nodes.append({"id": 2, "start": "256M", "end": "512M", "cpus": []})
        dist = [[10, 21, 31], [21, 10, 21], [31, 21, 10]]
    d["numa"] = {"nodes": nodes, "distance": dist}
    d["swap"] = []
    d["zswap"] = {"enabled": False}
    return yaml.safe_dump(d)


@pytest.fixture
def two_nodes(builtin_yaml, machine_from_yaml):
    m = machine_from_yaml(small_numa_yaml(builtin_yaml))
    m.sysctl_write("overcommit_memory", "1")
    assert [(n.start >> 12, n.end >> 12) for n in m.config.nodes] == [TWO_NODES[0][0],
                                                                       TWO_NODES[1][0]]
    assert m.swaps() == []
    return m


@pytest.fixture
def three_nodes(builtin_yaml, machine_from_yaml):
    m = machine_from_yaml(small_numa_yaml(builtin_yaml, memoryless_node=True))
    m.sysctl_write("overcommit_memory", "1")
    return m


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def node_of(pfn: int, nodes=None) -> int:
    nodes = nodes or DEFAULT_NODES
    for n, ranges in nodes.items():
        if any(lo <= pfn < hi for lo, hi in ranges):
            return n
    raise AssertionError(f"pfn {pfn:#x} is in no node")


def data_pfns(m, pid, start, length) -> list[int]:
    """The frames of the present pages of [start, start + length), in address order."""
    ents = ptes(m, pid)
    out = []
    for va in range(start, start + length, PAGE):
        e = ents.get(va)
        assert e is not None and e & P.P, f"{va:#x} is not present"
        out.append(P.pfn_of(e))
    return out


def tables(m, pid) -> set[int]:
    """Frames of every page table of pid (PGD included)."""
    d = m.pte_dump(pid)
    return {pfn for _, _, pfn in d.tables} | {d.pgd}


def by_node(pfns, nodes=None) -> dict[int, int]:
    out = {0: 0, 1: 0}
    for pfn in pfns:
        n = node_of(pfn, nodes)
        out[n] = out.get(n, 0) + 1
    return out


def numastat(m) -> dict[tuple[int, str], int]:
    """(node, counter) -> value: every zone's NUMA counters summed per node (numastat)."""
    out = {}
    for z in m.zoneinfo():
        for name, value in z.counters:
            if name in NUMA:
                out[z.node, name] = out.get((z.node, name), 0) + value
    return out


def zone_stat(m, node, zone, name) -> int:
    for z in m.zoneinfo():
        if z.node == node and z.name == zone:
            return dict(z.counters)[name]
    raise AssertionError(f"no zone {zone} on node {node}")


def delta(after, before) -> dict:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def policies(m, pid) -> set[str]:
    return {v.policy for v in m.numa_maps(pid)}


def kmsg(m) -> list[str]:
    return [re.sub(r"^\[\s*[\d.]+\] ", "", line) for line in m.kmsg_lines()]


def squeeze_node(m, node: int, keep: int) -> int:
    """A driver takes every free frame of node's zones but keep in each (one contiguous
    run per zone, from zoneinfo's figures). Returns the node's free pages left."""
    for z in m.zoneinfo():
        if z.node == node and z.present and z.free > keep:
            m.palloc(count=z.free - keep, node=node, zone=z.name, contiguous=True)
    return m.meminfo(node).free


def spawn_on(m, node: int, name: str) -> int:
    """Spawn processes until one runs on a CPU of node (the others are killed)."""
    for _ in range(len(m.config.nodes) + 1):
        pid = m.tasks.spawn(name)
        if m.tasks.procs[pid].cpu in m.config.nodes[node].cpus:
            return pid
        m.tasks.kill(pid)
    raise AssertionError(f"no process landed on node {node}")


# ---------------------------------------------------------------------------
# bind
# ---------------------------------------------------------------------------

def test_bind_to_node_1_puts_every_page_and_every_new_page_table_on_node_1(default, invariants):
    m = default
    pid = m.tasks.spawn("bound")
    assert pid == FIRST_PID and m.tasks.procs[pid].cpu in m.config.nodes[0].cpus
    assert policies(m, pid) == {"default"}
    old_tables = tables(m, pid)
    assert {node_of(t) for t in old_tables} == {0}, "before the policy: the local node"
    s0 = numastat(m)

    assert m.tasks.set_mempolicy(pid, "bind", "1") == "bind:1"
    assert kmsg(m)[-1] == f"mempolicy: {pid} (bound): bind:1"
    a = m.tasks.mmap(pid, 64 * MIB, prot=RW)
    assert a == A64
    m.tasks.fill(pid, a, 64 * MIB, seed=11)

    pfns = data_pfns(m, pid, a, 64 * MIB)
    assert by_node(pfns) == {0: 0, 1: 16384}
    new_tables = tables(m, pid) - old_tables
    assert len(new_tables) == TABLES_64M
    assert by_node(new_tables) == {0: 0, 1: TABLES_64M}
    assert m.tasks.verify(pid, a, 64 * MIB, seed=11) == 0

    # every allocation preferred node 1 (the bound zonelist's first node) and got it,
    # from a CPU of node 0
    d = delta(numastat(m), s0)
    total = 16384 + TABLES_64M
    assert d == {(1, "numa_hit"): total, (1, "numa_other"): total}
    # numa_maps: every VMA shows the task policy; the mapping is all N1
    views = {v.start: v for v in m.numa_maps(pid)}
    assert policies(m, pid) == {"bind:1"}
    assert views[a].nodes == ((1, 16384),) and views[a].anon == 16384
    invariants(m)


def test_bind_lists_every_node_with_memory(default, invariants):
    m = default
    pid = m.tasks.spawn("b")
    assert m.tasks.set_mempolicy(pid, "bind", "0,1") == "bind:0-1"
    assert m.tasks.set_mempolicy(pid, "bind", "all") == "bind:0-1"
    assert m.tasks.set_mempolicy(pid, "interleave", "1,0") == "interleave:0-1"
    assert m.tasks.set_mempolicy(pid, "preferred", "1") == "prefer:1"
    assert m.tasks.set_mempolicy(pid, "local") == "local"
    assert m.tasks.set_mempolicy(pid, "default") == "default"
    assert policies(m, pid) == {"default"}
    invariants(m)


# ---------------------------------------------------------------------------
# preferred
# ---------------------------------------------------------------------------

def test_preferred_node_1_falls_back_to_node_0_when_node_1_is_nearly_full(default, invariants):
    m = default
    # a driver takes node 1 down to 3000 free pages in each of its zones
    assert squeeze_node(m, 1, 3000) == 6000
    pid = m.tasks.spawn("pref")
    assert m.tasks.procs[pid].cpu in m.config.nodes[0].cpus
    old_tables = tables(m, pid)
    s0 = numastat(m)
    foreign_normal = zone_stat(m, 1, "Normal", "numa_foreign")
    foreign_dma32 = zone_stat(m, 1, "DMA32", "numa_foreign")

    assert m.tasks.set_mempolicy(pid, "preferred", "1") == "prefer:1"
    a = m.tasks.mmap(pid, 64 * MIB, prot=RW)
    m.tasks.fill(pid, a, 64 * MIB, seed=3)
    assert m.tasks.verify(pid, a, 64 * MIB, seed=3) == 0

    pfns = data_pfns(m, pid, a, 64 * MIB)
    new_tables = tables(m, pid) - old_tables
    assert len(new_tables) == TABLES_64M
    on = by_node(pfns + sorted(new_tables))
    # node 1 first, down to its watermarks (fewer than the 8192 free), then node 0
    assert 0 < on[1] < 6000 and on[0] > 16384 + TABLES_64M - 6000
    first = [node_of(p) for p in pfns]
    assert first[0] == 1, "the first page comes from the preferred node"
    assert first[-1] == 0, "the last ones from the fallback"

    d = delta(numastat(m), s0)
    assert d == {(1, "numa_hit"): on[1], (1, "numa_other"): on[1],
                 (0, "numa_miss"): on[0], (0, "numa_local"): on[0],
                 (1, "numa_foreign"): on[0]}
    # numa_foreign is counted on the preferred zone: the first zone of node 1's zonelist,
    # Normal for both movable user pages and page tables
    assert zone_stat(m, 1, "Normal", "numa_foreign") - foreign_normal == on[0]
    assert zone_stat(m, 1, "DMA32", "numa_foreign") == foreign_dma32
    view = {v.start: v for v in m.numa_maps(pid)}[a]
    assert view.policy == "prefer:1"
    assert view.nodes == ((0, by_node(pfns)[0]), (1, by_node(pfns)[1]))
    invariants(m)


# ---------------------------------------------------------------------------
# interleave
# ---------------------------------------------------------------------------

def test_interleave_alternates_pages_between_the_nodes(default, invariants):
    m = default
    pid = m.tasks.spawn("il")
    old_tables = tables(m, pid)
    s0 = numastat(m)
    ev0 = event(m, "numa_interleave")
    assert m.tasks.set_mempolicy(pid, "interleave", "0-1") == "interleave:0-1"
    a = m.tasks.mmap(pid, 64 * MIB, prot=RW)
    m.tasks.fill(pid, a, 64 * MIB, seed=5)
    assert m.tasks.verify(pid, a, 64 * MIB, seed=5) == 0

    pfns = data_pfns(m, pid, a, 64 * MIB)
    new_tables = tables(m, pid) - old_tables
    assert len(new_tables) == TABLES_64M
    nodes = [node_of(p) for p in pfns]
    on = by_node(pfns)
    # page tables take turns too: each one can shift the data pages' count by one, and
    # break the alternation in one place
    assert abs(on[0] - 8192) <= TABLES_64M and abs(on[1] - 8192) <= TABLES_64M
    same = sum(1 for x, y in zip(nodes, nodes[1:]) if x == y)
    assert same <= TABLES_64M, f"{same} neighbouring pages on the same node"
    all_on = by_node(pfns + sorted(new_tables))
    assert all_on[0] + all_on[1] == 16384 + TABLES_64M
    assert abs(all_on[0] - all_on[1]) <= 1, "turns alternate strictly over every allocation"

    # nothing was short: every page landed where its turn said
    d = delta(numastat(m), s0)
    assert d == {(0, "numa_hit"): all_on[0], (0, "numa_interleave"): all_on[0],
                 (0, "numa_local"): all_on[0],
                 (1, "numa_hit"): all_on[1], (1, "numa_interleave"): all_on[1],
                 (1, "numa_other"): all_on[1]}
    assert event(m, "numa_interleave") - ev0 == 16384 + TABLES_64M
    view = {v.start: v for v in m.numa_maps(pid)}[a]
    assert view.policy == "interleave:0-1" and view.nodes == ((0, on[0]), (1, on[1]))
    invariants(m)


def test_interleave_places_an_anonymous_page_by_its_place_in_the_mapping(default, invariants):
    """get_vma_policy's interleave index: an anonymous page's node is its page offset in
    the mapping (vm_pgoff + offset, i.e. va >> 12 for anonymous memory) modulo the nodes,
    whatever order the pages are touched in."""
    m = default
    pid = m.tasks.spawn("il")
    m.tasks.set_mempolicy(pid, "interleave", "0-1")
    a = m.tasks.mmap(pid, 1 * MIB, prot=RW)
    for va in reversed(range(a, a + MIB, PAGE)):          # backwards, one page at a time
        m.tasks.write(pid, va, 7)
    for va, pfn in zip(range(a, a + MIB, PAGE), data_pfns(m, pid, a, MIB)):
        assert node_of(pfn) == (va >> 12) % 2, f"{va:#x} on node {node_of(pfn)}"
    invariants(m)


def test_interleave_hit_counts_only_pages_that_landed_on_their_turns_node(default, invariants):
    m = default
    assert squeeze_node(m, 1, 3000) == 6000
    pid = m.tasks.spawn("il")
    old_tables = tables(m, pid)
    s0 = numastat(m)
    m.tasks.set_mempolicy(pid, "interleave", "0-1")
    a = m.tasks.mmap(pid, 64 * MIB, prot=RW)
    m.tasks.fill(pid, a, 64 * MIB, seed=6)
    assert m.tasks.verify(pid, a, 64 * MIB, seed=6) == 0

    total = 16384 + TABLES_64M
    on = by_node(data_pfns(m, pid, a, 64 * MIB) + sorted(tables(m, pid) - old_tables))
    assert on[0] + on[1] == total and 0 < on[1] < 6000
    d = delta(numastat(m), s0)
    # turns: node 0 first, so node 0 has ceil(total / 2) of them, node 1 the rest; node 1's
    # turns that found it short fell back to node 0 (a miss there, foreign on node 1)
    turns0, turns1 = (total + 1) // 2, total // 2
    fell_back = turns1 - on[1]
    assert fell_back > 0
    assert d[0, "numa_interleave"] == turns0
    assert d[1, "numa_interleave"] == on[1]
    assert d[0, "numa_miss"] == d[1, "numa_foreign"] == fell_back
    assert d[0, "numa_hit"] == turns0 and d[1, "numa_hit"] == on[1]
    assert d[0, "numa_interleave"] + d[1, "numa_interleave"] + fell_back == total
    invariants(m)


# ---------------------------------------------------------------------------
# bind and the OOM killer
# ---------------------------------------------------------------------------

def test_bound_process_past_node_1s_memory_is_oom_killed_and_node_0_keeps_its_memory(
        two_nodes, invariants):
    m = two_nodes
    pid = spawn_on(m, 0, "greedy")
    node0_free = m.meminfo(0).free
    s0 = numastat(m)
    kills = event(m, "oom_kill")
    assert m.tasks.set_mempolicy(pid, "bind", "1") == "bind:1"
    a = m.tasks.mmap(pid, 192 * MIB, prot=RW)        # node 1 holds 128 MiB at most
    with pytest.raises(OutOfMemory, match=f"OOM killer chose {pid}"):
        m.tasks.fill(pid, a, 192 * MIB, seed=1)
    assert pid not in m.tasks.procs
    assert event(m, "oom_kill") == kills + 1

    # no allocation landed on node 0, and the victim's few node-0 frames (its page tables
    # and stack page from before the policy) went back there
    d = delta(numastat(m), s0)
    assert {k for k in d if k[0] == 0} == set(), d
    assert m.meminfo(0).free >= node0_free
    lines = kmsg(m)
    summary = [x for x in lines if x.startswith("oom-kill:")]
    assert summary == [f"oom-kill:constraint=CONSTRAINT_MEMORY_POLICY,nodemask=1,cpuset=/,"
                       f"mems_allowed=0-1,global_oom,task_memcg=/,task=greedy,pid={pid},"
                       f"uid=1000"]
    assert any(x.startswith(f"Out of memory: Killed process {pid} (greedy)") for x in lines)
    invariants(m)


def test_an_oom_on_node_1_spares_a_bigger_process_bound_to_node_0(two_nodes, invariants):
    m = two_nodes
    q = spawn_on(m, 0, "q")        # bound to node 0: the biggest process
    r = m.tasks.spawn("r")         # bound to node 1: the biggest there
    p = m.tasks.spawn("p")         # bound to node 1: runs node 1 out of memory
    for pid, node in ((q, "0"), (r, "1"), (p, "1")):
        m.tasks.set_mempolicy(pid, "bind", node)
    qa = m.tasks.mmap(q, 96 * MIB, prot=RW)
    m.tasks.fill(q, qa, 96 * MIB, seed=1)
    ra = m.tasks.mmap(r, 72 * MIB, prot=RW)
    m.tasks.fill(r, ra, 72 * MIB, seed=2)
    rss = {pid: m.proc_view(pid).rss_anon for pid in (q, r)}
    assert rss[q] > rss[r], "an unconstrained OOM would choose q"

    pa = m.tasks.mmap(p, 64 * MIB, prot=RW)     # 72 + 64 MiB do not fit node 1's 128 MiB
    m.tasks.fill(p, pa, 64 * MIB, seed=3)        # succeeds: r is killed for it
    assert q in m.tasks.procs and p in m.tasks.procs and r not in m.tasks.procs
    assert m.tasks.verify(q, qa, 96 * MIB, seed=1) == 0
    assert m.tasks.verify(p, pa, 64 * MIB, seed=3) == 0
    assert by_node(data_pfns(m, p, pa, 64 * MIB), TWO_NODES) == {0: 0, 1: 16384}
    summary = [x for x in kmsg(m) if x.startswith("oom-kill:")]
    assert summary == [f"oom-kill:constraint=CONSTRAINT_MEMORY_POLICY,nodemask=1,cpuset=/,"
                       f"mems_allowed=0-1,global_oom,task_memcg=/,task=r,pid={r},uid=1000"]
    invariants(m)


def test_a_policy_oom_weighs_oom_score_adj_against_the_nodes_ram_only(two_nodes, invariants):
    """constrained_alloc: totalpages is node 1's present pages (32768, no swap), so
    oom_score_adj 600 is worth 600 x 32 = 19200 points, not 600 x 62 = 37200 as against
    all RAM (62209 pages). At the OOM, p has ~31700 resident pages; r has 257 and adj
    600: p goes (against all RAM r would)."""
    m = two_nodes
    r = m.tasks.spawn("r", oom_score_adj=600)
    p = m.tasks.spawn("p")
    for pid in (r, p):
        m.tasks.set_mempolicy(pid, "bind", "1")
    ra = m.tasks.mmap(r, MIB, prot=RW)
    m.tasks.fill(r, ra, MIB, seed=1)
    pa = m.tasks.mmap(p, 192 * MIB, prot=RW)
    with pytest.raises(OutOfMemory, match=f"OOM killer chose {p}"):
        m.tasks.fill(p, pa, 192 * MIB, seed=2)
    assert r in m.tasks.procs and p not in m.tasks.procs
    assert m.tasks.verify(r, ra, MIB, seed=1) == 0
    invariants(m)


def test_a_bound_process_reads_a_file_into_page_cache_on_its_node(default, invariants):
    m = default
    path = m.tasks.create_file("/data", 4 * MIB)
    pid = m.tasks.spawn("reader")                      # on node 0
    assert m.tasks.set_mempolicy(pid, "bind", "1") == "bind:1"
    a = m.tasks.mmap(pid, 4 * MIB, prot=RW, file=path)
    m.tasks.touch(pid, a, 4 * MIB, write=False)
    assert by_node(data_pfns(m, pid, a, 4 * MIB)) == {0: 0, 1: 1024}
    view = {v.start: v for v in m.numa_maps(pid)}[a]
    assert (view.policy, view.where, view.pages, view.anon, view.nodes) == \
        ("bind:1", " file=/data", 1024, 0, ((1, 1024),))
    invariants(m)


def _oom_task_table(m) -> list[str]:
    """The names in the last OOM report's task dump."""
    lines = kmsg(m)
    start = max(i for i, x in enumerate(lines) if x.startswith("[  pid  ]"))
    names = []
    for x in lines[start + 1:]:
        if not x.startswith("["):
            break
        names.append(x.split()[-1])
    return names


def test_the_oom_task_dump_lists_only_processes_in_the_policys_domain(two_nodes):
    m = two_nodes
    q = spawn_on(m, 0, "q")
    p = m.tasks.spawn("p")
    m.tasks.set_mempolicy(q, "bind", "0")
    m.tasks.set_mempolicy(p, "bind", "1")
    qa = m.tasks.mmap(q, 16 * MIB, prot=RW)
    m.tasks.fill(q, qa, 16 * MIB, seed=1)
    pa = m.tasks.mmap(p, 192 * MIB, prot=RW)
    with pytest.raises(OutOfMemory):
        m.tasks.fill(p, pa, 192 * MIB, seed=2)
    assert _oom_task_table(m) == ["p"]


def test_bind_to_every_memory_node_is_an_unconstrained_oom(two_nodes):
    m = two_nodes
    pid = m.tasks.spawn("all")
    assert m.tasks.set_mempolicy(pid, "bind", "0-1") == "bind:0-1"
    a = m.tasks.mmap(pid, 300 * MIB, prot=RW)
    with pytest.raises(OutOfMemory):
        m.tasks.fill(pid, a, 300 * MIB, seed=1)
    summary = [x for x in kmsg(m) if x.startswith("oom-kill:")]
    assert summary == [f"oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,"
                       f"mems_allowed=0-1,global_oom,task_memcg=/,task=all,pid={pid},uid=1000"]


# ---------------------------------------------------------------------------
# fork, default, local
# ---------------------------------------------------------------------------

def test_fork_inherits_the_policy(default, invariants):
    m = default
    parent = m.tasks.spawn("parent")
    assert m.tasks.set_mempolicy(parent, "bind", "0") == "bind:0"
    a = m.tasks.mmap(parent, 8 * MIB, prot=RW)
    m.tasks.fill(parent, a, 8 * MIB, seed=1)
    child = m.tasks.fork(parent)
    assert child == parent + 1
    assert m.tasks.procs[child].cpu in m.config.nodes[1].cpus, "the child runs on node 1"
    assert policies(m, child) == {"bind:0"}
    # every table the child has (fork's copies included) is on node 0, not its CPU's node
    assert by_node(tables(m, child))[1] == 0
    # its copy-on-write copies and new pages too
    m.tasks.fill(child, a, 8 * MIB, seed=2)
    b = m.tasks.mmap(child, 8 * MIB, prot=RW)
    m.tasks.fill(child, b, 8 * MIB, seed=3)
    assert by_node(data_pfns(m, child, a, 8 * MIB)) == {0: 2048, 1: 0}
    assert by_node(data_pfns(m, child, b, 8 * MIB)) == {0: 2048, 1: 0}
    assert by_node(tables(m, child))[1] == 0
    assert m.tasks.verify(parent, a, 8 * MIB, seed=1) == 0
    assert m.tasks.verify(child, a, 8 * MIB, seed=2) == 0
    assert m.tasks.verify(child, b, 8 * MIB, seed=3) == 0
    # a later change in the child is its own
    m.tasks.set_mempolicy(child, "default")
    assert policies(m, child) == {"default"} and policies(m, parent) == {"bind:0"}
    invariants(m)


def test_fork_of_a_default_process_places_the_child_on_its_own_node(default, invariants):
    m = default
    parent = m.tasks.spawn("parent")
    child = m.tasks.fork(parent)
    assert policies(m, child) == {"default"}
    b = m.tasks.mmap(child, 8 * MIB, prot=RW)
    m.tasks.fill(child, b, 8 * MIB, seed=3)
    assert by_node(data_pfns(m, child, b, 8 * MIB)) == {0: 0, 1: 2048}
    invariants(m)


@pytest.mark.parametrize("back", ["default", "local"])
def test_default_and_local_restore_local_placement(default, invariants, back):
    m = default
    pid = m.tasks.spawn("mover")           # on node 0
    m.tasks.set_mempolicy(pid, "bind", "1")
    a = m.tasks.mmap(pid, 8 * MIB, prot=RW)
    m.tasks.fill(pid, a, 8 * MIB, seed=1)
    assert by_node(data_pfns(m, pid, a, 8 * MIB)) == {0: 0, 1: 2048}

    assert m.tasks.set_mempolicy(pid, back) == back
    assert policies(m, pid) == {back}
    s0 = numastat(m)
    b = m.tasks.mmap(pid, 8 * MIB, prot=RW)
    m.tasks.fill(pid, b, 8 * MIB, seed=2)
    assert by_node(data_pfns(m, pid, b, 8 * MIB)) == {0: 2048, 1: 0}
    # the pages already placed stay where they are
    assert by_node(data_pfns(m, pid, a, 8 * MIB)) == {0: 0, 1: 2048}
    d = delta(numastat(m), s0)
    # 2048 pages and 4 PTE tables (8 MiB at 0x7ffff6fff000, below a: the 2 MiB blocks
    # 0x7ffff6e00000-0x7ffff7400000; 0x7ffff7600000 already has a's table)
    assert d == {(0, "numa_hit"): 2048 + 4, (0, "numa_local"): 2048 + 4}
    assert m.tasks.verify(pid, a, 8 * MIB, seed=1) == 0
    assert m.tasks.verify(pid, b, 8 * MIB, seed=2) == 0
    invariants(m)


# ---------------------------------------------------------------------------
# bad requests
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode,nodes", [
    ("random", "1"),              # unknown mode
    ("bind", "5"),                # no node 5 on a 2-node machine
    ("interleave", "0-5"),
    ("bind", None),               # bind needs nodes
    ("interleave", None),
    ("preferred", None),
    ("default", "1"),             # default and local take none
    ("local", "0"),
    ("preferred", "0-1"),         # preferred takes one node
    ("preferred", "0,1"),
    ("bind", "1-0"),              # malformed lists
    ("bind", "x"),
    ("bind", ""),
    ("bind", "0,,1"),
    ("bind", "-1"),
])
def test_bad_policies_are_invalid_and_change_nothing(default, invariants, mode, nodes):
    m = default
    pid = m.tasks.spawn("p")
    assert m.tasks.set_mempolicy(pid, "interleave", "0-1") == "interleave:0-1"
    a = m.tasks.mmap(pid, 64 * PAGE, prot=RW)
    m.tasks.fill(pid, a, 32 * PAGE, seed=1)
    with pytest.raises(InvalidArgument, match="mempolicy"):
        m.tasks.set_mempolicy(pid, mode, nodes)
    assert policies(m, pid) == {"interleave:0-1"}
    # and the policy still acts: the next pages keep alternating
    m.tasks.fill(pid, a + 32 * PAGE, 32 * PAGE, seed=1)
    on = by_node(data_pfns(m, pid, a, 64 * PAGE))
    assert abs(on[0] - on[1]) <= 2
    invariants(m)


def test_set_mempolicy_of_a_missing_process_or_a_kernel_thread_fails(default):
    from engine.errors import NoSuchProcess
    m = default
    with pytest.raises(NoSuchProcess):
        m.tasks.set_mempolicy(5_099_999, "bind", "1")
    with pytest.raises(InvalidArgument):
        m.tasks.set_mempolicy(FIRST_PID - 1, "bind", "1")       # kthreadd


# ---------------------------------------------------------------------------
# nodes without memory
# ---------------------------------------------------------------------------

def test_nodes_without_memory_are_dropped_and_none_left_is_invalid(three_nodes, invariants):
    m = three_nodes
    assert len(m.config.nodes) == 3 and m.meminfo(2).total == 0
    pid = m.tasks.spawn("p")
    assert m.tasks.set_mempolicy(pid, "bind", "1-2") == "bind:1"
    assert m.tasks.set_mempolicy(pid, "interleave", "all") == "interleave:0-1"
    for mode, nodes in (("bind", "2"), ("preferred", "2"), ("interleave", "2")):
        with pytest.raises(InvalidArgument, match="no memory"):
            m.tasks.set_mempolicy(pid, mode, nodes)
        assert policies(m, pid) == {"interleave:0-1"}
    with pytest.raises(InvalidArgument):
        m.tasks.set_mempolicy(pid, "bind", "3")
    a = m.tasks.mmap(pid, 4 * MIB, prot=RW)
    m.tasks.fill(pid, a, 4 * MIB, seed=1)
    nodes3 = {0: [(0, 0x8000)], 1: [(0x8000, 0x10000)]}
    on = by_node(data_pfns(m, pid, a, 4 * MIB), nodes3)
    assert on[0] + on[1] == 1024 and abs(on[0] - on[1]) <= 4
    invariants(m)


def test_oom_mems_allowed_lists_only_nodes_with_memory(three_nodes):
    m = three_nodes
    pid = m.tasks.spawn("p")
    m.tasks.set_mempolicy(pid, "bind", "1")
    a = m.tasks.mmap(pid, 192 * MIB, prot=RW)
    with pytest.raises(OutOfMemory):
        m.tasks.fill(pid, a, 192 * MIB, seed=1)
    summary = [x for x in kmsg(m) if x.startswith("oom-kill:")]
    assert len(summary) == 1 and ",mems_allowed=0-1," in summary[0], summary
