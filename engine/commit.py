"""Overcommit accounting: CommitLimit and the knobs that set it.

Committed_AS is the sum of what address spaces have committed; the limit is
what strict overcommit (mode 2) would allow:
    CommitLimit = (MemTotal - hugetlb pool frames) * overcommit_ratio / 100 + SwapTotal
                  (overcommit_kbytes / 4 + SwapTotal when overcommit_kbytes is set)
(vm_commit_limit: the hugetlb pool's frames are RAM no process can commit.)
"""
from .sysctl import Tunable
from .units import PAGE_SIZE, KiB

OVERCOMMIT_GUESS, OVERCOMMIT_ALWAYS, OVERCOMMIT_NEVER = 0, 1, 2

TUNABLES = (
    Tunable("overcommit_memory", 0, 0, 2,
            "0: refuse only a single request larger than RAM + swap (heuristic); "
            "1: never refuse; 2: strict, refuse past CommitLimit"),
    Tunable("overcommit_ratio", 50, 0, 1 << 30,
            "percentage of RAM that CommitLimit counts (with swap) in strict mode"),
    Tunable("overcommit_kbytes", 0, 0, 1 << 40,
            "if non-zero, CommitLimit counts this many kB of RAM instead of overcommit_ratio"),
    Tunable("admin_reserve_kbytes", None, 0, 1 << 40,
            "strict mode: kB kept back from processes without CAP_SYS_ADMIN (non-root); "
            "default min(3% of free memory, 8 MiB)"),
    Tunable("user_reserve_kbytes", None, 0, 1 << 40,
            "strict mode: kB kept back from each process's own requests, at most 1/32 of "
            "its size; default min(3% of free memory, 128 MiB)"),
    Tunable("max_map_count", 65530, 0, 1 << 31,
            "the most memory mappings (VMAs) a process may have"),
)


def default_reserves_kb(free_pages: int) -> dict:
    """init_admin_reserve / init_user_reserve: 1/32 of free memory, capped."""
    free_kb = free_pages * (PAGE_SIZE // KiB)
    return {"admin_reserve_kbytes": min(free_kb // 32, 8192),
            "user_reserve_kbytes": min(free_kb // 32, 131072)}


def enough_memory(pages: int, committed: int, *, mode: int, total_ram: int, total_swap: int,
                  limit: int, admin_reserve_kb: int, user_reserve_kb: int, is_admin: bool,
                  mm_total_vm: int | None) -> bool:
    """__vm_enough_memory (mm/util.c): may `pages` more be committed on top of `committed`?"""
    if mode == OVERCOMMIT_ALWAYS:
        return True
    if mode == OVERCOMMIT_GUESS:
        return pages <= total_ram + total_swap
    allowed = limit
    if not is_admin:
        allowed -= admin_reserve_kb // (PAGE_SIZE // KiB)
    if mm_total_vm is not None:
        allowed -= min(mm_total_vm // 32, user_reserve_kb // (PAGE_SIZE // KiB))
    return committed + pages < allowed


def commit_limit_pages(total_ram_pages: int, total_swap_pages: int, ratio: int, kbytes: int,
                       hugetlb_pages: int = 0) -> int:
    if kbytes:
        allowed = kbytes // (PAGE_SIZE // KiB)
    else:
        allowed = (total_ram_pages - hugetlb_pages) * ratio // 100
    return allowed + total_swap_pages
