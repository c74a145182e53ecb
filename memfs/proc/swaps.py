"""/proc/swaps: the active swap areas, laid out as mm/swapfile.c's swap_show.

The header is tab-separated; each area's path (octal-escaped) is padded to
column 40, then the type, size and used kB and the priority, with an extra
tab after a size or used figure below 10000000 so short numbers still line up.
"""
from __future__ import annotations

from engine.views import SwapView

from ..textfmt import octal_escape, pad_to_column

HEADER = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
PATH_COLUMN = 40
ALIGNED_BELOW_KB = 10_000_000       # figures below this get a second tab


def show_swaps(m) -> str:
    return HEADER + "".join(swap_line(s) for s in m.swaps())


def swap_line(s: SwapView) -> str:
    kind = "partition" if s.kind == "partition" else "file\t"
    return (pad_to_column(octal_escape(s.name), PATH_COLUMN) + kind + "\t"
            + tabbed_kb(s.size_kb) + tabbed_kb(s.used_kb) + f"{s.priority}\n")


def tabbed_kb(value_kb: int) -> str:
    return f"{value_kb}\t" + ("\t" if value_kb < ALIGNED_BELOW_KB else "")
