"""Text layout rules shared by the /proc and /sys renderers.

Each function here is one of the kernel's seq_file layout rules (see
reference/linux-mm-interfaces.md §0): a padded label with a right-aligned
value, `name value` lines, zero-padded hex, a node or CPU range list, octal
escapes of file names. Renderers compose these and never repeat a padding
rule of their own. Everything returns text ending in a newline where the
rule produces a whole line.
"""
from __future__ import annotations

from collections.abc import Iterable

# meminfo: a 16-column label, the value right-aligned in 8, so it ends at column 24.
MEMINFO_LABEL_WIDTH = 16
MEMINFO_VALUE_WIDTH = 8
# meminfo's exceptions (HardwareCorrupted, HugePages_*): 19-column label, width 5.
MEMINFO_WIDE_LABEL_WIDTH = 19
MEMINFO_WIDE_VALUE_WIDTH = 5
# node meminfo's hugetlb lines: "HugePages_Total: %5u", a 17-column label.
NODE_HUGEPAGES_LABEL_WIDTH = 17


def padded_line(label: str, value: int, *, label_width: int, value_width: int,
                unit: str = "") -> str:
    """`label` left-justified in label_width columns, `value` right-aligned in value_width.

    A longer label or value is never cut: the line just widens, as
    seq_put_decimal_ull_width does.
    """
    return f"{label:<{label_width}}{value:>{value_width}}{unit}\n"


def kb_line(key: str, value_kb: int, *, prefix: str = "") -> str:
    """`MemTotal:       16369492 kB`: key and colon in 16 columns, value in 8, then ` kB`."""
    return prefix + padded_line(f"{key}:", value_kb, label_width=MEMINFO_LABEL_WIDTH,
                                value_width=MEMINFO_VALUE_WIDTH, unit=" kB")


def wide_kb_line(key: str, value_kb: int) -> str:
    """`HardwareCorrupted:     0 kB`: key and colon in 19 columns, value in 5, then ` kB`."""
    return padded_line(f"{key}:", value_kb, label_width=MEMINFO_WIDE_LABEL_WIDTH,
                       value_width=MEMINFO_WIDE_VALUE_WIDTH, unit=" kB")


def wide_count_line(key: str, count: int) -> str:
    """`HugePages_Total:       0`: key and colon in 19 columns, a count in 5, no unit."""
    return padded_line(f"{key}:", count, label_width=MEMINFO_WIDE_LABEL_WIDTH,
                       value_width=MEMINFO_WIDE_VALUE_WIDTH)


def node_hugepages_line(node: int, key: str, count: int) -> str:
    """`Node 0 HugePages_Total:     0`: key and colon in 17 columns, a count in 5."""
    return node_prefix(node) + padded_line(f"{key}:", count, label_width=NODE_HUGEPAGES_LABEL_WIDTH,
                                           value_width=MEMINFO_WIDE_VALUE_WIDTH)


def node_prefix(node: int) -> str:
    """`Node 0 `: what every line of a node's meminfo starts with."""
    return f"Node {node} "


def name_value_line(name: str, value: int) -> str:
    """`pgfault 42`: vmstat's layout, exactly one space, no alignment."""
    return f"{name} {value}\n"


def name_value_lines(pairs: Iterable[tuple[str, int]]) -> str:
    return "".join(name_value_line(name, value) for name, value in pairs)


def hex_digits(value: int, min_digits: int) -> str:
    """Lowercase hex, no 0x, zero-padded to at least min_digits (never cut)."""
    return f"{value:0{min_digits}x}"


def pad_to_column(text: str, column: int) -> str:
    """`text` followed by spaces up to `column`, and at least one space (swaps' `%*s`)."""
    return text + " " * max(column - len(text), 1)


def octal_escape(text: str, chars: str = " \t\n\\") -> str:
    """Each of `chars` in text as a backslash and three octal digits (the kernel's mangle_path)."""
    return "".join(f"\\{ord(c):03o}" if c in chars else c for c in text)
