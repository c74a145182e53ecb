"""memfs exec: unmodified free, vmstat and psutil see the simulated machine.

The default machine's MemTotal, worked out from config/default.yaml: RAM pages
158 + (0xbffe0000-0x100000)/4K = 786144 + 1 GiB/4K = 262144, so 1048446 present;
the kernel keeps 158 low pages, 8192 image pages, and the memmap of each node:
node 0 has 524190 pages -> ceil(524190*64/4096) = 8191, node 1 has 524256 -> 8192.
MemTotal = 1048446 - 158 - 8192 - 8191 - 8192 = 1023713 pages = 4094852 kB.
"""
import sys

from .conftest import memfs

MEMTOTAL_KB = 4094852


def host_memtotal_kb() -> int:
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            return int(line.split()[1])


def test_free_sees_the_simulated_machine(default_running):
    r = memfs("exec", default_running.path, "--", "free", "-k")
    mem = next(line for line in r.stdout.splitlines() if line.startswith("Mem:")).split()
    assert int(mem[1]) == MEMTOTAL_KB, r.stdout
    assert int(mem[1]) != host_memtotal_kb()
    swap = next(line for line in r.stdout.splitlines() if line.startswith("Swap:")).split()
    assert int(swap[1]) == 1048572, "1 GiB swap less its header page"


def test_free_m_prints_simulated_total_used_and_free(default_running):
    """The machine runs while free reads it, so its figures lie between meminfo read just
    before and just after."""
    before = default_running.meminfo()
    r = memfs("exec", default_running.path, "--", "free", "-m")
    after = default_running.meminfo()
    mem = next(line for line in r.stdout.splitlines() if line.startswith("Mem:")).split()
    assert int(mem[1]) == MEMTOTAL_KB // 1024

    def between(value, key):
        lo, hi = sorted((key(before) // 1024, key(after) // 1024))
        return lo <= int(value) <= hi

    assert between(mem[3], lambda mi: mi["MemFree"]), (r.stdout, before, after)
    assert between(mem[2], lambda mi: mi["MemTotal"] - mi["MemAvailable"]), r.stdout


def test_vmstat_and_psutil_see_the_simulated_machine(default_running):
    r = memfs("exec", default_running.path, "--", "vmstat", "-s")
    assert f"{MEMTOTAL_KB} K total memory" in r.stdout, r.stdout
    code = "import psutil; print(psutil.virtual_memory().total, psutil.swap_memory().total)"
    r = memfs("exec", default_running.path, "--", sys.executable, "-c", code)
    assert r.stdout.split() == [str(MEMTOTAL_KB * 1024), str(1048572 * 1024)]


def test_exec_leaves_the_host_proc_alone(default_running):
    memfs("exec", default_running.path, "--", "true")
    assert host_memtotal_kb() != MEMTOTAL_KB


def test_exec_reports_a_missing_command(default_running):
    r = memfs("exec", default_running.path, "--", "no-such-command-here", check=False)
    assert r.returncode == 127 and "not found" in r.stderr
