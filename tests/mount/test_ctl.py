"""ctl as a transaction file, and rejected commands: errno, kmsg reason, nothing changed."""
import errno
import os
import subprocess
import sys

import pytest

STATE_FILES = ("meminfo", "vmstat", "zoneinfo", "buddyinfo", "pagetypeinfo", "iomem")


def snapshot(m):
    return {name: m.read(name) for name in STATE_FILES}


def rejected(m, command) -> OSError:
    fd = os.open(m / "ctl", os.O_RDWR)
    try:
        with pytest.raises(OSError) as e:
            os.write(fd, command.encode() + b"\n")
        reason = os.read(fd, 4096).decode()
    finally:
        os.close(fd)
    assert reason.startswith("error: "), reason
    return e.value, reason


def test_result_is_read_back_on_the_same_open_file(small):
    fd = os.open(small / "ctl", os.O_RDWR)
    try:
        os.write(fd, b"palloc\n")
        first = os.read(fd, 100)
        assert first.startswith(b"0x") and first.endswith(b"\n")
        assert os.read(fd, 100) == b"", "the result is read once"
        os.write(fd, b"palloc count=2 contiguous\n")
        assert os.read(fd, 100).startswith(b"0x")
    finally:
        os.close(fd)


@pytest.mark.parametrize("command,code,words", [
    ("palloc count=abc", errno.EINVAL, "count=abc"),
    ("palloc colour=red", errno.EINVAL, "unknown option"),
    ("frobnicate", errno.EINVAL, "unknown command"),
    ("palloc count=100000", errno.ENOMEM, "100000"),
    ("palloc count=16 contiguous boundary=32K", errno.EINVAL, "boundary"),
    ("palloc zone=Highmem", errno.EINVAL, "unknown zone"),
    ("pfree 0x1", errno.EINVAL, "reserved"),
    ("pfree 0x2000", errno.EINVAL, "free"),
    ("bar 3M", errno.EINVAL, "power of two"),
    ("bar 4G", errno.ENOMEM, "no free"),
])
def test_rejected_command_gives_errno_reason_and_changes_nothing(small, command, code, words):
    before = snapshot(small)
    err, reason = rejected(small, command)
    assert err.errno == code, f"{command}: expected {errno.errorcode[code]}, got {err}"
    assert words in reason, reason
    assert words in small.kmsg_tail()[0], small.kmsg_tail()
    assert snapshot(small) == before, f"{command} changed the machine"


def test_echo_of_a_bad_command_prints_write_error(small):
    r = subprocess.run(["bash", "-c", f"echo palloc count=-1 > {small / 'ctl'}"],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "write error: Invalid argument" in r.stderr


def test_one_command_per_write(small):
    before = snapshot(small)
    err, reason = rejected(small, "palloc\npalloc")
    assert err.errno == errno.EINVAL and "one command per write" in reason
    assert snapshot(small) == before


def test_memfs_ctl_prints_the_result_and_takes_a_mountpoint_or_ctl_path(small):
    r = subprocess.run([sys.executable, "-m", "memfs", "ctl", str(small.path), "palloc", "count=2"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    pfns = r.stdout.split()
    assert pfns and all(p.startswith("0x") for p in pfns), r.stdout
    r = subprocess.run([sys.executable, "-m", "memfs", "ctl", str(small / "ctl"), "pfree"] + pfns,
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "", r.stderr


def test_memfs_ctl_exits_nonzero_with_the_kernel_log_reason(small):
    r = subprocess.run([sys.executable, "-m", "memfs", "ctl", str(small.path), "pfree", "0x2000"],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "Invalid argument" in r.stderr and "0x2000 is free" in r.stderr, r.stderr


def test_pfree_frees_all_or_nothing(small):
    taken = small.ctl("palloc count=4 contiguous")
    first = int(taken, 16)
    before = snapshot(small)
    err, _ = rejected(small, f"pfree {first:#x}-{first + 4:#x}")     # one frame too many
    assert err.errno == errno.EINVAL
    assert snapshot(small) == before
    small.ctl(f"pfree {first:#x}-{first + 3:#x}")
    assert small.meminfo()["MemFree"] == 55300
