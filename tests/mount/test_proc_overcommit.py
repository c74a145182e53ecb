"""Overcommit policies through sys/vm/overcommit_memory, seen in mmap's errno and meminfo.

Linux's rules (mm/util.c __vm_enough_memory, mm/mmap.c accountable_mapping):
  - a private writable mapping is charged to Committed_AS, one page per page, at mmap;
    a read-only private mapping is not (until mprotect makes it writable);
  - 0 (heuristic): refuse one request larger than RAM + swap pages;
  - 1 (always): never refuse (the charge is still counted);
  - 2 (strict): refuse when Committed_AS would pass CommitLimit (less the admin
    and user reserves); CommitLimit = MemTotal pages * overcommit_ratio / 100 + swap pages.
"""
import errno

PAGE_KB = 4


def commit_limit_kb(m) -> int:
    mi = m.meminfo()
    ratio = int(m.read("sys/vm/overcommit_ratio"))
    assert int(m.read("sys/vm/overcommit_kbytes")) == 0
    return (mi["MemTotal"] // PAGE_KB * ratio // 100 + mi["SwapTotal"] // PAGE_KB) * PAGE_KB


def test_strict_mode_refuses_a_mapping_the_heuristic_allows(small):
    assert small.read("sys/vm/overcommit_memory") == "0\n"
    pid = small.spawn("committer")
    mi0 = small.meminfo()
    limit = commit_limit_kb(small)
    assert mi0["CommitLimit"] == limit
    # one MiB past what strict mode could still commit, yet well within RAM + swap
    size_kb = ((limit - mi0["Committed_AS"]) // 1024 + 1) * 1024
    assert limit - mi0["Committed_AS"] < size_kb < mi0["MemTotal"] + mi0["SwapTotal"]

    a = small.mmap(pid, f"{size_kb}K")
    assert small.meminfo()["Committed_AS"] == mi0["Committed_AS"] + size_kb
    small.pctl(pid, f"munmap {a:#x} {size_kb}K")
    assert small.meminfo()["Committed_AS"] == mi0["Committed_AS"]

    small.write("sys/vm/overcommit_memory", "2\n")
    assert small.read("sys/vm/overcommit_memory") == "2\n"
    maps = small.read(f"{pid}/maps")
    code, reason = small.rejected(f"mmap {size_kb}K", f"{pid}/ctl")
    assert code == errno.ENOMEM and "overcommit" in reason, reason
    assert "overcommit" in small.kmsg_tail()[0]
    assert small.meminfo()["Committed_AS"] == mi0["Committed_AS"]
    assert small.read(f"{pid}/maps") == maps

    # a small mapping still fits, and moves Committed_AS by exactly its pages
    small.mmap(pid, "1M")
    assert small.meminfo()["Committed_AS"] == mi0["Committed_AS"] + 1024
    # a read-only private mapping is not charged; making it writable would be
    b = small.mmap(pid, f"{size_kb}K prot=r")
    assert small.meminfo()["Committed_AS"] == mi0["Committed_AS"] + 1024
    code, _ = small.rejected(f"mprotect {b:#x} {size_kb}K rw", f"{pid}/ctl")
    assert code == errno.ENOMEM
    assert small.meminfo()["Committed_AS"] == mi0["Committed_AS"] + 1024


def test_heuristic_refuses_more_than_ram_plus_swap_and_always_allows_it(small):
    pid = small.spawn("greedy")
    mi0 = small.meminfo()
    assert 1024 * 1024 > mi0["MemTotal"] + mi0["SwapTotal"]       # 1 GiB is more than both
    code, _ = small.rejected("mmap 1G", f"{pid}/ctl")
    assert code == errno.ENOMEM
    assert small.meminfo()["Committed_AS"] == mi0["Committed_AS"]
    small.write("sys/vm/overcommit_memory", "1\n")
    a = small.mmap(pid, "1G")
    assert small.meminfo()["Committed_AS"] == mi0["Committed_AS"] + 1024 * 1024
    assert small.meminfo()["MemFree"] == mi0["MemFree"], "nothing is touched yet"
    small.pctl(pid, f"munmap {a:#x} 1G")
    assert small.meminfo()["Committed_AS"] == mi0["Committed_AS"]


def test_overcommit_knobs_refuse_bad_values(small):
    for bad in ("3", "-1", "abc"):
        try:
            small.write("sys/vm/overcommit_memory", bad + "\n")
        except OSError as e:
            assert e.errno == errno.EINVAL
        else:
            raise AssertionError(f"overcommit_memory accepted {bad!r}")
    assert small.read("sys/vm/overcommit_memory") == "0\n"
    small.write("sys/vm/overcommit_ratio", "100\n")
    mi = small.meminfo()
    assert mi["CommitLimit"] == mi["MemTotal"] // PAGE_KB * PAGE_KB + mi["SwapTotal"]
