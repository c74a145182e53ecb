"""The hugetlb pool's files (mm/hugetlb.c, mm/hugetlb_sysctl.c, drivers/base/node.c).

    sys/vm/nr_hugepages, sys/vm/nr_overcommit_hugepages            (as /proc/sys/vm)
    kernel/mm/hugepages/hugepages-2048kB/{nr_hugepages, free_hugepages,
        resv_hugepages, surplus_hugepages, nr_overcommit_hugepages}  (as /sys/kernel/mm)
    devices/system/node/nodeN/hugepages/hugepages-2048kB/{nr_hugepages,
        free_hugepages, surplus_hugepages}

Each file is one decimal number and a newline. Writing nr_hugepages asks for
that many pages (a node's file: that many on the node); the pool grows as far
as memory allows and the write still succeeds, as on Linux: read it back for
the count reached. A write that is not a count (text, a sign, more than
2^63 - 1) fails with EINVAL and changes nothing. Numbers come from
Machine.hugetlb_view; the stores call Machine.hugetlb_set and
hugetlb_set_overcommit.
"""
from __future__ import annotations

from engine.errors import InvalidArgument
from engine.pmm.hugetlb import HPAGE_NAME, MAX_COUNT

HSTATE_DIR = HPAGE_NAME            # "hugepages-2048kB"


def parse_count(text: str, what: str) -> int:
    """A decimal count as kstrtoul reads one (an optional +; white space around it is
    fine), at most 2^63 - 1; InvalidArgument with the reason otherwise."""
    t = text.strip()
    digits = t[1:] if t.startswith("+") else t
    if t.startswith("-") and t[1:].isascii() and t[1:].isdigit():
        raise InvalidArgument(f"{what}: {t!r} is negative; write a count of huge pages, 0 or more")
    if not (digits.isascii() and digits.isdigit()):
        raise InvalidArgument(f"{what}: {t!r} is not a decimal count of huge pages")
    n = int(digits)
    if n > MAX_COUNT:
        raise InvalidArgument(f"{what}: {t} is too large (at most {MAX_COUNT})")
    return n


def _node_or_all(m, node: int | None) -> dict:
    v = m.hugetlb_view()
    return v if node is None else v["nodes"][node]


def show_nr(m, node: int | None = None) -> str:
    return f"{_node_or_all(m, node)['nr']}\n"


def store_nr(m, text: str, node: int | None = None) -> None:
    what = "nr_hugepages" if node is None else f"node{node} nr_hugepages"
    m.hugetlb_set(parse_count(text, what), node)


def show_free(m, node: int | None = None) -> str:
    return f"{_node_or_all(m, node)['free']}\n"


def show_surplus(m, node: int | None = None) -> str:
    return f"{_node_or_all(m, node)['surplus']}\n"


def show_resv(m) -> str:
    return f"{m.hugetlb_view()['resv']}\n"


def show_overcommit(m) -> str:
    return f"{m.hugetlb_view()['overcommit']}\n"


def store_overcommit(m, text: str) -> None:
    m.hugetlb_set_overcommit(parse_count(text, "nr_overcommit_hugepages"))
