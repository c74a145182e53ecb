"""Units and number parsing shared by the whole engine.

Owns: the page size, pfn <-> physical address conversion, and the one parser
for sizes and addresses that every command and config key goes through.
"""

from collections.abc import Iterable

import numpy as np

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT          # bytes in a 4 KiB frame
KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40

_SUFFIX = {"K": KiB, "M": MiB, "G": GiB, "T": TiB}


def pfn_to_pa(pfn: int) -> int:
    return pfn << PAGE_SHIFT


def pa_to_pfn(pa: int) -> int:
    return pa >> PAGE_SHIFT


def pages_to_kb(nr_pages: int) -> int:
    return nr_pages * (PAGE_SIZE // KiB)


def parse_number(text) -> int:
    """Parse decimal or 0x-hex, with an optional K/M/G/T suffix (powers of 1024).

    Accepts ints unchanged (YAML already turns 0x1000 into 4096). Raises
    ValueError with a message meant for a human on anything else.
    """
    if isinstance(text, bool):
        raise ValueError(f"expected a number, got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"expected a non-negative number, got {text}")
        return text
    if not isinstance(text, str):
        raise ValueError(f"expected a number, got {text!r}")
    s = text.strip()
    mult = 1
    if s and s[-1].upper() in _SUFFIX:
        mult = _SUFFIX[s[-1].upper()]
        s = s[:-1]
    try:
        if s.lower().startswith("0x"):
            value = int(s[2:], 16)
        elif s.isdigit():
            value = int(s, 10)
        else:
            raise ValueError
    except ValueError:
        raise ValueError(f"bad number {text!r}: expected decimal, 0x hex, "
                         f"or a size such as 64K, 16M, 1G") from None
    return value * mult


def fmt_size(nr_bytes: int) -> str:
    """Shortest exact human form: 16M, 4K, 1536K, 4097 (bytes)."""
    for suffix, unit in (("T", TiB), ("G", GiB), ("M", MiB), ("K", KiB)):
        if nr_bytes and nr_bytes % unit == 0:
            return f"{nr_bytes // unit}{suffix}"
    return str(nr_bytes)


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def mask_runs(mask, base: int) -> list[tuple[int, int]]:
    """(first pfn, count) of each run of True in a boolean numpy array whose element 0 is
    pfn base."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.view(np.int8), [0]))))
    return [(base + int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2])]


def runs_of(pfns) -> list[tuple[int, int]]:
    """Frame numbers -> sorted (first, count) runs of consecutive frames."""
    runs: list[tuple[int, int]] = []
    for p in sorted(pfns):
        if runs and runs[-1][0] + runs[-1][1] == p:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((p, 1))
    return runs


def range_list(numbers: Iterable[int]) -> str:
    """`0-1,3,5-7`: sorted numbers, runs of two or more as first-last (the kernel's %*pbl)."""
    runs: list[list[int]] = []
    for n in sorted(set(numbers)):
        if runs and runs[-1][1] == n - 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
