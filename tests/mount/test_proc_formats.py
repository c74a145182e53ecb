"""Per-process files laid out as Linux lays them out (fs/proc/array.c, task_mmu.c; proc(5)).

The process: spawn, mmap 1M (-> 0x7ffff7eff000), write its first 16 pages.
"""
import errno
import re

import pytest

A1 = 0x7FFFF7EFF000
KTHREADD = 5000001

SMAPS_KEYS = ["Size", "KernelPageSize", "MMUPageSize", "Rss", "Pss", "Pss_Dirty", "Shared_Clean",
              "Shared_Dirty", "Private_Clean", "Private_Dirty", "Referenced", "Anonymous", "KSM",
              "LazyFree", "AnonHugePages", "ShmemPmdMapped", "FilePmdMapped", "Shared_Hugetlb",
              "Private_Hugetlb", "Swap", "SwapPss", "Locked", "THPeligible", "VmFlags"]
ROLLUP_KEYS = ["Rss", "Pss", "Pss_Dirty", "Pss_Anon", "Pss_File", "Pss_Shmem", "Shared_Clean",
               "Shared_Dirty", "Private_Clean", "Private_Dirty", "Referenced", "Anonymous", "KSM",
               "LazyFree", "AnonHugePages", "ShmemPmdMapped", "FilePmdMapped", "Shared_Hugetlb",
               "Private_Hugetlb", "Swap", "SwapPss", "Locked"]
MEMORY_LINES = ["VmPeak", "VmSize", "VmLck", "VmPin", "VmHWM", "VmRSS", "RssAnon", "RssFile",
                "RssShmem", "VmData", "VmStk", "VmExe", "VmLib", "VmPTE", "VmSwap", "HugetlbPages"]


@pytest.fixture
def proc(machine):
    pid = machine.spawn("fmt")
    assert machine.mmap(pid, "1M") == A1
    machine.pctl(pid, f"fill {A1:#x} 64K")
    return pid


def test_status_memory_lines_are_tab_then_width_8(machine, proc):
    lines = machine.read(f"{proc}/status").splitlines()
    got = [line.split(":")[0] for line in lines if line.split(":")[0] in MEMORY_LINES]
    assert got == MEMORY_LINES
    for line in lines:
        if line.split(":")[0] in MEMORY_LINES:
            assert re.fullmatch(r"\w+:\t[ \d]{8} kB", line), repr(line)
    st = machine.status(proc)
    assert st["VmRSS"] == st["RssAnon"] + st["RssFile"] + st["RssShmem"] == 4 + 64
    assert st["Tgid"] == st["Pid"] == proc
    for key in ("Uid", "Gid"):
        assert re.search(rf"^{key}:\t1000\t1000\t1000\t1000$", machine.read(f"{proc}/status"), re.M)
    for key in ("Threads", "voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
        assert re.search(rf"^{key}:\t\d+$", machine.read(f"{proc}/status"), re.M), key


def test_status_groups_line_ends_with_a_space(machine, proc):
    line = next(line for line in machine.read(f"{proc}/status").splitlines() if line.startswith("Groups:"))
    assert line == "Groups:\t "


def test_kernel_thread_status_has_no_memory_lines(machine):
    status = machine.read(f"{KTHREADD}/status")
    assert not any(line.split(":")[0] in MEMORY_LINES for line in status.splitlines())
    assert "Kthread:\t1" in status.splitlines()


@pytest.mark.parametrize("who", ["user", "kthread"])
def test_stat_has_52_fields(machine, proc, who):
    pid = proc if who == "user" else KTHREADD
    stat = machine.read(f"{pid}/stat")
    assert stat.endswith("\n") and stat.count("\n") == 1
    head, _, rest = stat.rpartition(")")
    assert head == f"{pid} ({'fmt' if who == 'user' else 'kthreadd'}"
    fields = rest.split()
    assert len(fields) == 50 and fields[0] == "S"
    assert all(re.fullmatch(r"-?\d+", f) for f in fields[1:])
    if who == "user":
        # 26 startcode, 27 endcode: the text VMA; 45-47 start_data, end_data, start_brk
        assert (int(fields[26 - 3]), int(fields[27 - 3])) == (0x400000, 0x500000)
        assert [int(f) for f in fields[45 - 3:48 - 3]] == [0x500000, 0x540000, 0x540000]


def test_statm_is_seven_numbers(machine, proc):
    statm = machine.read(f"{proc}/statm")
    assert re.fullmatch(r"\d+( \d+){6}\n", statm)
    # size: 256 + 64 + 256 + 33 pages; resident 1 + 16; text 256; data 64 + 256 + 33
    assert statm == "609 17 0 256 0 353 0\n"


def test_maps_lines_pad_names_to_column_73(machine, proc):
    lines = machine.read(f"{proc}/maps").splitlines()
    assert len(lines) == 4
    for line in lines:
        m = re.match(r"([0-9a-f]{8,})-([0-9a-f]{8,}) ([r-][w-][x-][sp]) ([0-9a-f]{8}) "
                     r"([0-9a-f]{2}:[0-9a-f]{2}) (\d+) ", line)
        assert m, repr(line)
        if line.endswith(" 0 "):
            continue                                    # anonymous, unnamed: no padding
        assert line[72] == " " and line[73] != " ", repr(line)
    assert lines[2] == "7ffff7eff000-7ffff7fff000 rw-p 00000000 00:00 0 "
    assert lines[3].endswith(" [stack]") and lines[0].endswith(" /usr/bin/fmt")
    starts = [int(line.split("-")[0], 16) for line in lines]
    assert starts == sorted(starts)


def test_smaps_blocks_have_linux_keys_in_order(machine, proc):
    blocks = re.split(r"^(?=[0-9a-f]{8,}-)", machine.read(f"{proc}/smaps"), flags=re.M)[1:]
    assert len(blocks) == 4
    for block in blocks:
        lines = block.splitlines()
        keys = [line.split(":")[0] for line in lines[1:]]
        assert keys == SMAPS_KEYS, keys
        values = {line.split(":")[0]: line for line in lines[1:]}
        for key in SMAPS_KEYS[:-2]:
            assert re.fullmatch(r"\w+: +\d+ kB", values[key]) and len(values[key]) == 16 + 8 + 3, \
                repr(values[key])
        assert re.fullmatch(r"THPeligible: +[01]", values["THPeligible"])
        assert re.fullmatch(r"VmFlags:( [a-z]{2})+ ", values["VmFlags"]), repr(values["VmFlags"])
        n = {k: int(v.split()[1]) for k, v in values.items() if k not in ("VmFlags", "THPeligible")}
        assert n["Rss"] == n["Shared_Clean"] + n["Shared_Dirty"] + n["Private_Clean"] + n["Private_Dirty"]
    anon = blocks[2].splitlines()
    assert anon[0] == "7ffff7eff000-7ffff7fff000 rw-p 00000000 00:00 0 "
    assert "Rss:                  64 kB" in anon and "Anonymous:            64 kB" in anon
    assert anon[-1] == "VmFlags: rd wr mr mw me ac sd "


def test_smaps_rollup_sums_smaps(machine, proc):
    lines = machine.read(f"{proc}/smaps_rollup").splitlines()
    assert [line.split(":")[0] for line in lines[1:]] == ROLLUP_KEYS
    rollup = machine.kb(f"{proc}/smaps_rollup")
    per_vma = {}
    for line in machine.read(f"{proc}/smaps").splitlines():
        m = re.fullmatch(r"(\w+): +(\d+) kB", line)
        if m:
            per_vma[m.group(1)] = per_vma.get(m.group(1), 0) + int(m.group(2))
    for key in ROLLUP_KEYS:
        if key in per_vma:
            assert rollup[key] == per_vma[key], key
    assert rollup["Pss_Anon"] == 68 and rollup["Pss_File"] == rollup["Pss_Shmem"] == 0


def test_comm_and_cmdline(machine, proc):
    assert machine.read(f"{proc}/comm") == "fmt\n"
    assert (machine / f"{proc}/cmdline").read_bytes() == b"/usr/bin/fmt\0"


def test_creating_a_file_in_a_process_folder_fails_with_eacces(machine, proc):
    try:
        open(machine / f"{proc}/newfile", "w").close()
    except OSError as e:
        assert e.errno == errno.EACCES, f"got {errno.errorcode[e.errno]}"
    else:
        raise AssertionError("a new file was created")
