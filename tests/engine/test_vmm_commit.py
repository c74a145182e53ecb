"""Overcommit on the small machine, with the limits worked out by hand.

small: MemTotal 13825 pages, one swap area of 128 MiB = 32768 pages less the
header page = 32767 pages.

- CommitLimit = 13825 * 50 / 100 + 32767 = 6912 + 32767 = 39679 pages.
- The reserves default to 1/32 of free memory at boot, capped:
  13825 pages = 55300 kB, / 32 = 1728 kB = 432 pages for both
  admin_reserve_kbytes (cap 8 MiB) and user_reserve_kbytes (cap 128 MiB).
- spawn("a") maps 256 + 64 + 33 = 353 pages (total_vm) and commits 97 of
  them (data and stack). Its user reserve is min(353 / 32, 432) = 11 pages.

Mode 2 (strict) lets a non-root process commit while
Committed_AS + pages < CommitLimit - admin reserve - user reserve
= 39679 - 432 - 11 = 39236, so with 97 committed a mapping of 39138 pages is
the largest allowed; root skips the admin reserve: 39679 - 11 - 97 - 1 = 39570.
Mode 0 refuses only a single request larger than RAM + swap = 46592 pages.
Mode 1 never refuses.
"""
import pytest

from engine.errors import Fault, OutOfMemory
from engine.vmm.vma import VM_READ
from vmm_common import PAGE, RW, SMALL_MEMTOTAL

COMMIT_LIMIT = 39679


def committed(m) -> int:
    return m.meminfo().committed_as


def test_commit_limit_and_reserves_of_the_small_machine(small, invariants):
    mi = small.meminfo()
    assert (mi.total, mi.swap_total, mi.commit_limit) == (SMALL_MEMTOTAL, 32767, COMMIT_LIMIT)
    assert small.sysctl_read("admin_reserve_kbytes").strip() == "1728"
    assert small.sysctl_read("user_reserve_kbytes").strip() == "1728"
    invariants(small)


def test_strict_mode_refuses_one_page_past_the_limit(small, invariants):
    small.sysctl_write("overcommit_memory", "2")
    pid = small.tasks.spawn("a")
    assert committed(small) == 97
    free = small.meminfo().free
    with pytest.raises(OutOfMemory):
        small.tasks.mmap(pid, 39139 * PAGE, prot=RW)
    assert committed(small) == 97                              # a refusal changes nothing
    assert len(small.proc_view(pid, vmas=True).vmas) == 3
    a = small.tasks.mmap(pid, 39138 * PAGE, prot=RW)
    assert committed(small) == 39235
    assert small.meminfo().free == free                        # committed, not allocated
    with pytest.raises(OutOfMemory):                           # not even one more private page
        small.tasks.mmap(pid, PAGE, prot=RW)
    ro = small.tasks.mmap(pid, PAGE, prot=VM_READ)             # read-only private: not charged
    with pytest.raises(OutOfMemory):                           # ... until it becomes writable
        small.tasks.mprotect(pid, ro, PAGE, RW)
    invariants(small)
    small.tasks.munmap(pid, a, 39138 * PAGE)
    assert committed(small) == 97
    invariants(small)


def test_strict_mode_leaves_root_the_admin_reserve(small, invariants):
    small.sysctl_write("overcommit_memory", "2")
    pid = small.tasks.spawn("root", uid=0)
    with pytest.raises(OutOfMemory):
        small.tasks.mmap(pid, 39571 * PAGE, prot=RW)
    small.tasks.mmap(pid, 39570 * PAGE, prot=RW)
    assert committed(small) == 97 + 39570
    invariants(small)


def test_heuristic_mode_allows_what_strict_mode_refuses(small, invariants):
    assert small.sysctl_read("overcommit_memory").strip() == "0"
    pid = small.tasks.spawn("a")
    small.tasks.mmap(pid, 39139 * PAGE, prot=RW)
    small.tasks.mmap(pid, 39139 * PAGE, prot=RW)               # mode 0 ignores what is committed
    assert committed(small) == 97 + 2 * 39139
    assert committed(small) > COMMIT_LIMIT
    invariants(small)


def test_heuristic_mode_refuses_a_single_mapping_larger_than_ram_and_swap(small, invariants):
    pid = small.tasks.spawn("a")
    with pytest.raises(OutOfMemory):
        small.tasks.mmap(pid, (13825 + 32767 + 1) * PAGE, prot=RW)
    small.tasks.mmap(pid, (13825 + 32767) * PAGE, prot=RW)
    assert committed(small) == 97 + 46592
    invariants(small)


def test_always_mode_never_refuses(small, invariants):
    small.sysctl_write("overcommit_memory", "1")
    pid = small.tasks.spawn("a")
    a = small.tasks.mmap(pid, 1 << 40, prot=RW)                # 1 TiB on a 64 MiB machine
    assert committed(small) == 97 + (1 << 28)
    small.tasks.write(pid, a + (1 << 39), 1)                   # any page of it can be touched
    assert small.tasks.read(pid, a + (1 << 39)) == 1
    invariants(small)
    small.tasks.exit(pid)
    assert committed(small) == 0
    invariants(small)


def test_committed_as_follows_every_kind_of_mapping_and_goes_back(small, invariants):
    small.tasks.create_file("/f", 16 * PAGE)
    pid = small.tasks.spawn("a")
    base = committed(small)
    a = small.tasks.mmap(pid, 10 * PAGE, prot=RW)               # private anon: 10
    s = small.tasks.mmap(pid, 6 * PAGE, prot=VM_READ, shared=True)   # shared anon: 6, even read-only
    fp = small.tasks.mmap(pid, 4 * PAGE, prot=RW, file="/f")    # private writable file: 4
    fs = small.tasks.mmap(pid, 4 * PAGE, prot=RW, shared=True, file="/f")   # shared file: 0
    small.tasks.mmap(pid, 3 * PAGE, prot=VM_READ, file="/f")    # private read-only: 0
    assert committed(small) == base + 10 + 6 + 4
    child = small.tasks.fork(pid)                                # the child's private areas again
    assert committed(small) == 2 * base + 2 * (10 + 4) + 6
    invariants(small)
    small.tasks.munmap(pid, a + 2 * PAGE, 5 * PAGE)
    assert committed(small) == 2 * base + 2 * (10 + 4) + 6 - 5
    small.tasks.munmap(pid, s, 6 * PAGE)                         # the child still maps the object
    assert committed(small) == 2 * base + 2 * (10 + 4) + 6 - 5
    small.tasks.munmap(child, s, 6 * PAGE)                       # now it dies
    assert committed(small) == 2 * base + 2 * (10 + 4) - 5
    small.tasks.munmap(pid, fp, 4 * PAGE)
    small.tasks.munmap(pid, fs, 4 * PAGE)
    assert committed(small) == 2 * base + 10 + 4 - 5 + 10
    invariants(small)
    small.tasks.exit(child)
    small.tasks.exit(pid)
    assert committed(small) == 0
    invariants(small)


def test_strict_mode_refuses_a_fork_that_does_not_fit_and_leaks_nothing(small, invariants):
    small.sysctl_write("overcommit_memory", "2")
    pid = small.tasks.spawn("a")
    small.tasks.mmap(pid, 20000 * PAGE, prot=RW)
    before = small.meminfo()
    with pytest.raises(OutOfMemory):
        small.tasks.fork(pid)                                   # 2 * 20097 > 39236
    after = small.meminfo()
    assert (after.free, after.page_tables, after.committed_as) == \
        (before.free, before.page_tables, before.committed_as)
    assert len(small.pids()) == 2
    invariants(small)


def test_strict_mode_refuses_brk_and_stack_growth_past_the_limit(small, invariants):
    small.sysctl_write("overcommit_memory", "2")
    pid = small.tasks.spawn("a")
    small.tasks.mmap(pid, 39138 * PAGE, prot=RW)
    with pytest.raises(OutOfMemory):
        small.tasks.brk(pid, delta=PAGE)
    assert small.tasks.brk(pid) == 0x540000
    invariants(small)
    with pytest.raises(Fault):                                  # the stack cannot grow: SIGSEGV
        small.tasks.write(pid, 0x7FFFFFFDE000 - PAGE, 1)
    assert pid not in small.pids()
    assert committed(small) == 0
    invariants(small)
