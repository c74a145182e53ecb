"""File mappings: a simulated file mapped shared by two processes, and privately by a third.

A fresh process's first `mmap 1M` lands at 0x7ffff7fff000 - 1 MiB = 0x7ffff7eff000,
in the 2 MiB block 0x7ffff7e00000: its first touch there needs one new PTE table
(the stack's table covers 0x7fffffe00000 only).

Linux semantics checked: a shared file page lives once in the page cache (Cached),
is counted once in Mapped however many processes map it, is dirty after a write
through a shared mapping, and is RssFile ("shared" in statm) in every mapper; a
private mapping reads the cached page until it writes, then gets its own
anonymous copy. Shared file mappings are not charged to Committed_AS.
"""
import errno
import itertools
import re

import pytest

PAGE = 4096
A1 = 0x7FFFF7EFF000
PM_PRESENT, PM_FILE, PM_EXCLUSIVE = 1 << 63, 1 << 61, 1 << 56
PM_PFN = (1 << 55) - 1


def files_row(m, path):
    for line in m.read("files").splitlines()[1:]:
        words = line.split()
        if words[0] == path:
            return [int(w) for w in words[1:]]
    raise AssertionError(f"{path} not in files:\n{m.read('files')}")


_names = itertools.count()


@pytest.fixture
def data_file(machine):
    """A new 1 MiB file (files outlive the test's processes, so each test has its own)."""
    name = f"data{next(_names)}"
    assert machine.ctl(f"file {name} 1M") == ""
    assert files_row(machine, f"/{name}") == [1048576, 0, 0, 0]
    return name


def test_two_processes_share_a_file_page(machine, data_file):
    p1, p2 = machine.spawn("writer"), machine.spawn("reader")
    mi0 = machine.meminfo()
    assert machine.mmap(p1, f"1M shared file={data_file}") == A1
    assert machine.mmap(p2, f"1M shared file={data_file}") == A1
    assert machine.meminfo() == mi0, "mapping a file touches nothing and charges nothing"
    line = machine.read(f"{p1}/maps").splitlines()[2]
    assert re.fullmatch(r"7ffff7eff000-7ffff7fff000 rw-s 00000000 fd:00 \d+ +/" + re.escape(data_file), line)
    assert line.index("/") == 73
    assert files_row(machine, f"/{data_file}") == [1048576, 0, 0, 2]

    va = A1 + 2 * PAGE
    machine.pctl(p1, f"write {va:#x} 4242")
    mi1 = machine.meminfo()
    assert mi1["Cached"] == mi0["Cached"] + 4 and mi1["Mapped"] == mi0["Mapped"] + 4
    assert mi1["Dirty"] == mi0["Dirty"] + 4
    assert mi1["AnonPages"] == mi0["AnonPages"]
    assert mi1["MemFree"] == mi0["MemFree"] - 8, "the cache page and p1's PTE table"

    assert machine.pctl(p2, f"read {va:#x}") == "4242"
    mi2 = machine.meminfo()
    assert mi2["Cached"] == mi1["Cached"] and mi2["Mapped"] == mi1["Mapped"], "one page, mapped twice"
    assert mi2["MemFree"] == mi1["MemFree"] - 4, "p2's PTE table only"
    assert files_row(machine, f"/{data_file}") == [1048576, 1, 1, 2]

    e1, e2 = machine.pagemap(p1, va)[0], machine.pagemap(p2, va)[0]
    assert e1 & PM_PFN == e2 & PM_PFN
    for e in (e1, e2):
        assert e & PM_PRESENT and e & PM_FILE and not e & PM_EXCLUSIVE, hex(e)
    assert machine.kpagecount(e1 & PM_PFN) == [2]
    for pid in (p1, p2):
        st = machine.status(pid)
        assert (st["RssFile"], st["RssAnon"], st["VmRSS"]) == (4, 4, 8)
        assert machine.read(f"{pid}/statm").split()[1:3] == ["2", "1"], "resident 2, shared 1"
    smaps = machine.read(f"{p2}/smaps")
    block = smaps[smaps.index("7ffff7eff000-"):]
    block = dict(re.findall(r"^(\w+):\s+(\d+) kB", block[:block.index("VmFlags")], re.M))
    assert block["Rss"] == "4" and block["Pss"] == "2" and block["Shared_Dirty"] == "4"
    assert block["Private_Dirty"] == "0" and block["Anonymous"] == "0"

    # the cache outlives the mappings: Mapped goes, Cached stays
    machine.ctl(f"kill {p1}")
    machine.ctl(f"kill {p2}")
    mi3 = machine.meminfo()
    assert mi3["Mapped"] == mi0["Mapped"] and mi3["Cached"] == mi0["Cached"] + 4
    assert files_row(machine, f"/{data_file}")[1:] == [1, 1, 0]


def test_private_file_mapping_copies_on_write(machine, data_file):
    sharer, private = machine.spawn("sharer"), machine.spawn("private")
    va = A1 + 3 * PAGE
    assert machine.mmap(sharer, f"1M shared file={data_file}") == A1
    assert machine.mmap(private, f"1M file={data_file}") == A1
    machine.pctl(sharer, f"write {va:#x} 55")
    assert machine.pctl(private, f"read {va:#x}") == "55", "a private mapping reads the cache"
    st = machine.status(private)
    assert (st["RssFile"], st["RssAnon"]) == (4, 4)
    assert machine.kpagecount(machine.pagemap(private, va)[0] & PM_PFN) == [2]
    mi0 = machine.meminfo()
    machine.pctl(private, f"write {va:#x} 66")
    mi1 = machine.meminfo()
    assert mi1["MemFree"] == mi0["MemFree"] - 4 and mi1["AnonPages"] == mi0["AnonPages"] + 4
    assert mi1["Cached"] == mi0["Cached"] and mi1["Mapped"] == mi0["Mapped"]
    assert machine.pctl(private, f"read {va:#x}") == "66"
    assert machine.pctl(sharer, f"read {va:#x}") == "55"
    st = machine.status(private)
    assert (st["RssFile"], st["RssAnon"]) == (0, 8)
    e = machine.pagemap(private, va)[0]
    assert e & PM_PRESENT and e & PM_EXCLUSIVE and not e & PM_FILE, "now private anonymous"
    cached = machine.pagemap(sharer, va)[0] & PM_PFN
    assert machine.kpagecount(cached) == [1]


def test_populate_reads_the_whole_file_into_the_cache(machine, data_file):
    pid = machine.spawn("populator")
    mi0 = machine.meminfo()
    machine.mmap(pid, f"1M shared file={data_file} populate")
    mi1 = machine.meminfo()
    assert mi1["Cached"] == mi0["Cached"] + 1024 and mi1["Mapped"] == mi0["Mapped"] + 1024
    assert machine.status(pid)["RssFile"] == 1024
    assert mi1["MemFree"] == mi0["MemFree"] - 1024 - 4, "256 cache pages and one PTE table"


def test_mapping_a_missing_file_is_refused(machine):
    pid = machine.spawn("nofile")
    maps = machine.read(f"{pid}/maps")
    mi0 = machine.meminfo()
    code, reason = machine.rejected("mmap 1M file=nosuch", f"{pid}/ctl")
    assert code == errno.EINVAL
    assert "no file /nosuch" in reason and "file nosuch SIZE" in reason, reason
    assert "no file /nosuch" in machine.kmsg_tail()[0]
    assert machine.read(f"{pid}/maps") == maps and machine.meminfo() == mi0


def test_creating_a_file_twice_is_refused(machine, data_file):
    code, reason = machine.rejected(f"file {data_file} 2M")
    assert code == errno.EEXIST and "already exists" in reason
    assert files_row(machine, f"/{data_file}")[0] == 1048576
