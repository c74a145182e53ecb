"""Segfaults and rejected commands on the per-process tree.

A write outside any mapping kills only the writer; a rejected command fails
with its errno, says why in kmsg and changes nothing; unknown pids have no
folder; read-only files refuse writes; by-name links resolve.

Addresses as worked out in test_proc_memory.py: a fresh process's first
`mmap 1M` lands at 0x7ffff7fff000 - 1 MiB = 0x7ffff7eff000.
"""
import errno
import os
import re
import stat
import subprocess
import sys

import pytest

A1 = 0x7FFFF7EFF000
KTHREADD = 5000001


def machine_state(m, pid=None):
    """Everything a rejected command must leave alone."""
    files = ["meminfo", "vmstat", "buddyinfo", "files"]
    if pid is not None:
        files += [f"{pid}/{name}" for name in ("status", "statm", "stat", "maps", "smaps", "pte",
                                                "oom_score_adj")]
    return {f: m.read(f) for f in files} | {"pids": m.pids()}


def process_with_memory(m, name):
    pid = m.spawn(name)
    assert m.mmap(pid, "1M") == A1
    m.pctl(pid, f"fill {A1:#x} 64K seed=1")
    return pid


# ---------------------------------------------------------------------------
# segfaults
# ---------------------------------------------------------------------------

SEGV_LINE = (r"\[ *\d+\.\d{{6}}\] {name}\[{pid}\]: segfault at {addr:x} "
             r"ip [0-9a-f]{{16}} sp [0-9a-f]{{16}} error {err} in {name}\[400000\+100000\]")


def test_write_outside_any_mapping_kills_only_that_process(machine):
    bystander = process_with_memory(machine, "bystander")
    mi0 = machine.meminfo()
    victim = process_with_memory(machine, "victim")
    code, reason = machine.rejected("write 0x1000 5", f"{victim}/ctl")
    assert code == errno.EFAULT
    assert "SIGSEGV at 0x1000" in reason and "killed" in reason, reason
    # its folder is gone at once, its link too; nobody else is touched
    assert not os.path.exists(machine / str(victim))
    assert victim not in machine.pids()
    assert not os.path.lexists(machine / "by-name/victim")
    assert machine.pids() >= {KTHREADD, bystander}
    assert machine.pctl(bystander, f"verify {A1:#x} 64K seed=1") == "0"
    # error 6: a user-mode write (bits 1, 2) to a page that is not present (bit 0 clear)
    log = machine.read("kmsg")
    assert re.search(SEGV_LINE.format(name="victim", pid=victim, addr=0x1000, err=6), log), log[-600:]
    # every frame and every committed page of the victim went back
    mi1 = machine.meminfo()
    assert mi1["MemFree"] == mi0["MemFree"] and mi1["Committed_AS"] == mi0["Committed_AS"]


def test_access_to_a_dead_process_ctl_fails_with_enoent(machine):
    pid = machine.spawn("gone")
    machine.rejected("touch 0x10 4K", f"{pid}/ctl")
    with pytest.raises(FileNotFoundError):
        os.open(machine / f"{pid}/ctl", os.O_RDWR)
    with pytest.raises(FileNotFoundError):
        machine.read(f"{pid}/status")


def test_write_to_a_read_only_mapping_is_a_protection_fault(machine):
    pid = machine.spawn("rdonly")
    assert machine.mmap(pid, "1M prot=r") == A1
    assert machine.pctl(pid, f"read {A1:#x}") == "0"        # maps the zero page: now present
    code, reason = machine.rejected(f"write {A1:#x} 1", f"{pid}/ctl")
    assert code == errno.EFAULT and "r--p" in reason, reason
    assert pid not in machine.pids()
    # error 7: user-mode write to a present page (protection violation)
    assert re.search(SEGV_LINE.format(name="rdonly", pid=pid, addr=A1, err=7), machine.read("kmsg"))


def test_write_to_untouched_text_reports_a_not_present_fault(machine):
    pid = machine.spawn("txt")
    code, _ = machine.rejected("write 0x400000 1", f"{pid}/ctl")
    assert code == errno.EFAULT
    assert re.search(SEGV_LINE.format(name="txt", pid=pid, addr=0x400000, err=6),
                     machine.read("kmsg")), machine.kmsg_tail(2)


def test_exit_and_kill_remove_the_folder_at_once(machine):
    a, b = machine.spawn("exiter"), machine.spawn("killed")
    free0 = machine.meminfo()["MemFree"]
    assert machine.pctl(a, "exit") == ""
    assert not os.path.exists(machine / str(a))
    assert machine.ctl(f"kill {b}") == ""
    assert not os.path.exists(machine / str(b))
    assert "kill: %d (killed) killed by SIGKILL" % b in machine.kmsg_tail()[0]
    # each fresh process held its 4 page-table pages and its stack page
    assert machine.meminfo()["MemFree"] == free0 + 2 * 5 * 4


# ---------------------------------------------------------------------------
# rejected commands
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("command,code,words", [
    ("frobnicate", errno.EINVAL, "unknown command"),
    ("mmap", errno.EINVAL, "missing argument"),
    ("mmap abc", errno.EINVAL, "abc"),
    ("mmap 0", errno.EINVAL, "more than 0"),
    ("mmap 1M 2M", errno.EINVAL, "unexpected '2M'"),
    ("mmap 1M colour=red", errno.EINVAL, "unknown option colour="),
    ("mmap 1M prot=q", errno.EINVAL, "prot=q"),
    ("mmap 1M addr=0x123", errno.EINVAL, "not page aligned"),
    ("mmap 1M offset=4K", errno.EINVAL, "offset= needs file="),
    ("mmap 4K addr=0x7ffff7eff000", errno.EEXIST, "overlaps"),
    ("mmap 200T", errno.ENOMEM, "no free range"),
    ("munmap", errno.EINVAL, "missing argument"),
    ("munmap 0x7ffff7eff001 4K", errno.EINVAL, "not page aligned"),
    ("munmap 0x7ffff7eff000 0", errno.EINVAL, "more than 0"),
    ("mprotect 0x7ffff7eff000 4K", errno.EINVAL, "missing argument"),
    ("mprotect 0x7ffff7eff000 4K q", errno.EINVAL, "'q'"),
    ("mprotect 0x10000000 4K r", errno.ENOMEM, "not entirely mapped"),
    ("madvise 0x7ffff7eff000 4K maybe", errno.EINVAL, "maybe"),
    ("madvise 0x10000000 4K dontneed", errno.ENOMEM, "not entirely mapped"),
    ("touch 0x7ffff7eff000 4K sideways", errno.EINVAL, "sideways"),
    ("read", errno.EINVAL, "missing argument"),
    ("read zz", errno.EINVAL, "zz"),
    ("read 0x7ffff7eff000 extra", errno.EINVAL, "extra"),
    ("write 0x7ffff7eff000", errno.EINVAL, "missing argument"),
    ("write 0x7ffff7eff000 abc", errno.EINVAL, "abc"),
    ("write 0x7ffff7eff000 18446744073709551616", errno.EINVAL, "64 bits"),
    ("fill 0x7ffff7eff000", errno.EINVAL, "missing argument"),
    ("fill 0x7ffff7eff000 4K seed=x", errno.EINVAL, "seed=x"),
    ("verify", errno.EINVAL, "missing argument"),
    ("fork extra", errno.EINVAL, "extra"),
    ("brk zz", errno.EINVAL, "zz"),
    ("brk 0x1000", errno.EINVAL, "below the start of the heap"),
    ("exit abc", errno.EINVAL, "abc"),
    ("mmap 1M\nmmap 1M", errno.EINVAL, "one command per write"),
])
def test_rejected_process_command_changes_nothing(machine, command, code, words):
    pid = process_with_memory(machine, "target")
    before = machine_state(machine, pid)
    got, reason = machine.rejected(command, f"{pid}/ctl")
    assert got == code, f"{command!r}: expected {errno.errorcode[code]}, got {errno.errorcode[got]}: {reason}"
    assert reason.startswith("error: ") and words in reason, reason
    last = machine.kmsg_tail()[0]
    assert f"/{pid}/ctl" in last and words in last, last
    assert machine_state(machine, pid) == before, f"{command!r} changed the machine"


@pytest.mark.parametrize("command,code,words", [
    ("spawn", errno.EINVAL, "missing argument"),
    ("spawn web colour=red", errno.EINVAL, "unknown option colour="),
    ("kill 5999999", errno.ESRCH, "no process 5999999"),
    ("kill abc", errno.EINVAL, "abc"),
    ("file", errno.EINVAL, "missing argument"),
    ("file x abc", errno.EINVAL, "abc"),
])
def test_rejected_machine_command_changes_nothing(machine, command, code, words):
    before = machine_state(machine)
    got, reason = machine.rejected(command)
    assert got == code, f"{command!r}: expected {errno.errorcode[code]}, got {errno.errorcode[got]}: {reason}"
    assert words in reason and words in machine.kmsg_tail()[0], reason
    assert machine_state(machine) == before


def test_echo_of_a_bad_process_command_prints_write_error(machine):
    pid = machine.spawn("echoer")
    r = subprocess.run(["bash", "-c", f"echo mmap lots > {machine / str(pid)}/ctl"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "write error: Invalid argument" in r.stderr, r.stderr


def test_memfs_ctl_through_by_name_prints_the_address(machine):
    machine.spawn("byname")
    r = subprocess.run([sys.executable, "-m", "memfs", "ctl", str(machine / "by-name/byname/ctl"),
                        "mmap", "64M"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "0x7ffff3fff000\n"


def test_process_ctl_is_a_transaction_file(machine):
    pid = machine.spawn("tx")
    fd = os.open(machine / f"{pid}/ctl", os.O_RDWR)
    try:
        os.write(fd, b"mmap 1M\n")
        assert os.read(fd, 100) == b"0x7ffff7eff000\n"
        assert os.read(fd, 100) == b"", "the result is read once"
        os.write(fd, b"write 0x7ffff7eff000 42\n")
        assert os.read(fd, 100) == b""
        os.write(fd, b"read 0x7ffff7eff000\n")
        assert os.read(fd, 100) == b"42\n"
        os.write(fd, b"mmap 4K\n")
        assert os.read(fd, 100) == b"0x7ffff7efe000\n", "the next free range below, top-down"
    finally:
        os.close(fd)


@pytest.mark.parametrize("command,result", [("mmap 1M", "0x7ffff7eff000"), ("brk +1M", "0x640000")])
def test_an_address_result_is_recorded_in_kmsg(machine, command, result):
    pid = machine.spawn("logged")
    assert machine.pctl(pid, command) == result
    assert result in machine.kmsg_tail()[0], machine.kmsg_tail()[0]


# ---------------------------------------------------------------------------
# unknown pids, read-only files, by-name links
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["5999999", "4999999", "1", "5000001x"])
def test_unknown_pid_has_no_folder(machine, name):
    with pytest.raises(FileNotFoundError):
        os.stat(machine / name)
    with pytest.raises(FileNotFoundError):
        machine.read(f"{name}/status")
    assert name not in os.listdir(machine.path)


def test_kthreadd_always_exists_without_memory(machine):
    assert KTHREADD in machine.pids()
    assert machine.read(f"{KTHREADD}/statm") == "0 0 0 0 0 0 0\n"
    assert machine.read(f"{KTHREADD}/maps") == ""
    assert "VmRSS" not in machine.read(f"{KTHREADD}/status")
    assert machine.read(f"{KTHREADD}/comm") == "kthreadd\n"
    assert machine.read(f"{KTHREADD}/cmdline") == ""


READ_ONLY = {"status": 0o444, "statm": 0o444, "stat": 0o444, "maps": 0o444, "smaps": 0o444,
             "smaps_rollup": 0o444, "pagemap": 0o400, "cmdline": 0o444, "oom_score": 0o444,
             "pte": 0o444}


@pytest.mark.parametrize("name", sorted(READ_ONLY))
def test_write_to_a_read_only_process_file_fails_with_eacces(machine, name):
    pid = process_with_memory(machine, "ro")
    path = machine / f"{pid}/{name}"
    assert stat.S_IMODE(os.stat(path).st_mode) == READ_ONLY[name]
    before = machine_state(machine, pid)
    with pytest.raises(PermissionError) as e:
        with open(path, "w") as f:
            f.write("1\n")
    assert e.value.errno == errno.EACCES
    assert machine_state(machine, pid) == before


@pytest.mark.parametrize("name,mode", [("kpagecount", 0o400), ("kpageflags", 0o400), ("files", 0o444)])
def test_write_to_a_read_only_machine_file_fails_with_eacces(machine, name, mode):
    assert stat.S_IMODE(os.stat(machine / name).st_mode) == mode
    with pytest.raises(PermissionError):
        machine.write(name, "0\n")
    assert name in machine.kmsg_tail()[0]


def test_process_folder_modes(machine):
    pid = machine.spawn("modes")
    assert stat.S_IMODE(os.stat(machine / str(pid)).st_mode) == 0o555
    assert stat.S_IMODE(os.stat(machine / f"{pid}/ctl").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(machine / f"{pid}/oom_score_adj").st_mode) == 0o644


def test_oom_score_adj_refuses_values_out_of_range(machine):
    pid = machine.spawn("adj")
    for bad in ("1001", "-1001", "abc"):
        with pytest.raises(OSError) as e:
            machine.write(f"{pid}/oom_score_adj", bad + "\n")
        assert e.value.errno == errno.EINVAL
    assert machine.read(f"{pid}/oom_score_adj") == "0\n"


def test_by_name_links_to_the_oldest_process_of_that_name(machine):
    first = machine.spawn("twin")
    second = machine.spawn("twin")
    link = machine / "by-name/twin"
    assert os.readlink(link) == f"../{first}"
    assert os.path.realpath(link) == str(machine / str(first))
    assert machine.read("by-name/twin/comm") == "twin\n"
    assert machine.status(first)["Pid"] == first
    assert os.readlink(machine / "by-name/kthreadd") == f"../{KTHREADD}"
    child = int(machine.pctl(first, "fork"))
    assert os.readlink(link) == f"../{first}", "a forked child has the same name but is younger"
    machine.ctl(f"kill {first}")
    assert os.readlink(link) == f"../{second}"
    machine.ctl(f"kill {second}")
    assert os.readlink(link) == f"../{child}"
    machine.ctl(f"kill {child}")
    assert not os.path.lexists(link)
