"""NUMA memory policies (mm/mempolicy.c): where a process's pages come from.

A process's policy (set_mempolicy, inherited by fork) picks the node an
allocation starts from and which nodes it may fall back to:

    default      the node of the CPU the process runs on, then by distance
    local        the same, stated explicitly (MPOL_LOCAL)
    preferred N  node N first, then by distance from N
    bind NODES   only NODES: the nearest of them to the process's node first;
                 when they are all short, reclaim and the OOM killer act on
                 those nodes alone (CONSTRAINT_MEMORY_POLICY)
    interleave   one page per node of NODES in turn: an anonymous page (and a
       NODES     huge page) by its place in the mapping (page offset modulo
                 the nodes, as get_vma_policy's interleave index), anything
                 else (page cache, page tables) by a per-process counter; a
                 node that is short falls back by distance, and interleave_hit
                 counts the pages that landed where the turn said

Every user allocation of the process follows it: its anonymous and page-cache
pages, its page tables, swap-ins and their readahead.
"""
from __future__ import annotations

from ..errors import InvalidArgument
from ..units import range_list

MODES = ("default", "local", "preferred", "bind", "interleave")
NEEDS_NODES = ("preferred", "bind", "interleave")


def parse_nodelist(text: str, nr_nodes: int) -> tuple[int, ...]:
    """`0-1,3` or `all` (numactl's node list) -> sorted node numbers; InvalidArgument if
    malformed or naming a node the machine does not have."""
    if text == "all":
        return tuple(range(nr_nodes))
    nodes: set[int] = set()
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise InvalidArgument(f"mempolicy: {text!r} is not a node list (like 0, 0-1, 0,1 "
                                  f"or all)")
        first, last = int(lo), int(hi) if sep else int(lo)
        if last < first:
            raise InvalidArgument(f"mempolicy: node range {part!r} ends before it starts")
        if last >= nr_nodes:
            raise InvalidArgument(f"mempolicy: no node {last} (nodes: 0-{nr_nodes - 1})")
        nodes.update(range(first, last + 1))
    return tuple(sorted(nodes))


class MemPolicy:
    """A non-default task policy. (The default policy is None on the process.)"""
    __slots__ = ("mode", "nodes", "il_next")

    def __init__(self, mode: str, nodes: tuple[int, ...] = ()):
        self.mode = mode
        self.nodes = nodes
        self.il_next = 0                  # interleave: index in nodes of the next page's node

    def copy(self) -> "MemPolicy":
        p = MemPolicy(self.mode, self.nodes)
        p.il_next = self.il_next
        return p

    def text(self) -> str:
        """mpol_to_str, as numa_maps shows it: `bind:1`, `interleave:0-1`, `prefer:1`, `local`."""
        if self.mode == "local":
            return "local"
        name = "prefer" if self.mode == "preferred" else self.mode
        return f"{name}:{range_list(self.nodes)}"

    def next_interleave(self) -> int:
        node = self.nodes[self.il_next]
        self.il_next = (self.il_next + 1) % len(self.nodes)
        return node


def make_policy(mode: str, nodes_text: str | None, nr_nodes: int) -> MemPolicy | None:
    """The policy a `mempolicy MODE [NODES]` command asks for (None: default)."""
    if mode not in MODES:
        raise InvalidArgument(f"mempolicy: unknown mode {mode!r} (modes: {', '.join(MODES)})")
    if mode in NEEDS_NODES:
        if nodes_text is None:
            raise InvalidArgument(f"mempolicy: {mode} needs a node list (like {mode} 0-1)")
        nodes = parse_nodelist(nodes_text, nr_nodes)
        if mode == "preferred" and len(nodes) != 1:
            raise InvalidArgument("mempolicy: preferred takes one node")
        return MemPolicy(mode, nodes)
    if nodes_text is not None:
        raise InvalidArgument(f"mempolicy: {mode} takes no node list")
    return None if mode == "default" else MemPolicy("local")
