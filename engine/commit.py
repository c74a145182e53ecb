"""Overcommit accounting: CommitLimit and the knobs that set it.

Committed_AS is the sum of what address spaces have committed; the limit is
what strict overcommit (mode 2) would allow:
    CommitLimit = MemTotal * overcommit_ratio / 100 + SwapTotal
                  (overcommit_kbytes / 4 + SwapTotal when overcommit_kbytes is set)
"""
from .sysctl import Tunable
from .units import PAGE_SIZE, KiB

TUNABLES = (
    Tunable("overcommit_ratio", 50, 0, 1 << 30,
            "percentage of RAM that CommitLimit counts (with swap) in strict mode"),
    Tunable("overcommit_kbytes", 0, 0, 1 << 40,
            "if non-zero, CommitLimit counts this many kB of RAM instead of overcommit_ratio"),
)


def commit_limit_pages(total_ram_pages: int, total_swap_pages: int, ratio: int, kbytes: int) -> int:
    if kbytes:
        allowed = kbytes // (PAGE_SIZE // KiB)
    else:
        allowed = total_ram_pages * ratio // 100
    return allowed + total_swap_pages
