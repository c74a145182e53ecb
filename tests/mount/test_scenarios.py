"""The bash scenarios under scripts/scenarios, run against a real mount.

demand_paging.sh on the small machine, figures worked out by hand:
  MemFree 55300 kB on a fresh machine; spawn takes PGD, PUD, PMD, the stack's PTE
  table and exec's stack page: 55280 kB, VmRSS 4, VmPTE 12, VmSize 1024 + 256 + 132 = 1412.
  mmap 16M -> 0x7ffff7fff000 - 16 MiB = 0x7ffff6fff000; VmSize 1412 + 16384 = 17796.
  Reading [0x7ffff6fff000, +4 MiB) needs PTE tables for the 2 MiB blocks 0x7ffff6e00000,
  0x7ffff7000000 and 0x7ffff7200000: VmPTE 12 -> 24, MemFree 55280 -> 55268.
  Writing [0x7ffff6fff000, +8 MiB) adds the blocks 0x7ffff7400000 and 0x7ffff7600000
  and 2048 frames: VmRSS 4 -> 8196, VmPTE 24 -> 32, MemFree 55268 -> 55268 - 8192 - 8 = 47068.
  kill gives everything back: 55300.
"""
import os
import subprocess
import sys
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parents[2] / "scripts" / "scenarios"


def run(script, *args):
    return subprocess.run(["bash", str(SCENARIOS / script), *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def test_demand_paging_scenario_on_the_small_machine(small):
    r = run("demand_paging.sh", small.path)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for line in ("   VmRSS 4 kB, VmSize 1412 kB, VmPTE 12 kB, MemFree 55280 kB",
                 "   mapped at 0x7ffff6fff000",
                 "   VmSize 1412 -> 17796 kB (+16384)",
                 "   VmPTE 12 -> 24 kB (+12)",
                 "   MemFree 55280 -> 55268 kB (-12)",
                 "   VmRSS 4 -> 8196 kB (+8192)",
                 "   VmPTE 24 -> 32 kB (+8)",
                 "   MemFree 55268 -> 47068 kB (-8200)",
                 "   MemFree 55300 -> 55300 kB (+0)",
                 "demand_paging: every figure as expected"):
        assert line in out.splitlines(), f"missing {line!r} in:\n{out}"
    assert "WRONG" not in out
    assert small.read("clock").splitlines()[1] == "state paused", "a paused clock stays paused"
    assert small.pids() == {5000001}, "the scenario's process is gone"
    assert small.meminfo()["MemFree"] == 55300


def test_demand_paging_scenario_resumes_a_running_clock(default_running):
    r = run("demand_paging.sh", default_running.path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "demand_paging: every figure as expected" in r.stdout
    assert default_running.read("clock").splitlines()[1] == "state running"


def test_demand_paging_scenario_refuses_a_directory_that_is_not_a_machine(tmp_path):
    r = run("demand_paging.sh", tmp_path)
    assert r.returncode == 2
    assert "not a mounted memfs machine" in r.stderr


def test_heap_scavenge_scenario_on_the_small_machine(small):
    """heap_scavenge.sh, figures worked out by hand: a fresh process's break is 0x540000;
    100 chunks of 1 KiB from 0x540000 and the kept 32-byte chunk at 0x559000 write every
    page from 0x540000 to 0x559000 (the top's header lies in it too): 26 pages, VmRSS
    4 + 104 = 108 kB (after 25, 50, 75 objects: 7, 13, 19 pages written: 32, 56, 80 kB).
    The first malloc grew [heap] once by brk to page_up(1024 + 32 + 128K) = 0x21000 bytes:
    0x540000-0x561000. The freed objects form one free area [0x540000, 0x559000), whose
    whole pages past the 48-byte free-chunk header are 0x541000-0x559000: 24 pages,
    96 kB; VmRSS 108 -> 12 kB."""
    before = small.meminfo()["MemFree"]
    r = run("heap_scavenge.sh", small.path)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout.splitlines()
    for line in ("0. spawn heapdemo -> pid 5000002",
                 "   VmRSS 4 kB",
                 "1. malloc and write 100 objects of 1016 bytes (the break is at 0x540000)",
                 "   25 objects: VmRSS 32 kB",
                 "   50 objects: VmRSS 56 kB",
                 "   75 objects: VmRSS 80 kB",
                 "   100 objects: VmRSS 108 kB",
                 "   kept: 16 bytes at 0x559010, allocated last",
                 "   VmRSS 108 kB, heap mapped 135168 bytes",
                 "   heap: free        135136 bytes in 1 chunks + top 32736, largest 102400",
                 "   VmRSS 108 -> 108 kB",
                 "   VmRSS 108 -> 12 kB (-96)",
                 "   heap mapped 135168 -> 135168 bytes",
                 "   ok: VmRSS fall (whole free pages) = 96",
                 "heap_scavenge: every figure as expected"):
        assert line in out, f"missing {line!r} in:\n{r.stdout}"
    heap_vmas = [ln.split()[0] for ln in out if ln.startswith("   0") and ln.endswith("[heap]")]
    assert heap_vmas == ["00540000-00561000"] * 2, "[heap] before and after the scavenge"
    assert any(ln.startswith("   ok: [heap] mapping = 00540000-00561000 ") for ln in out)
    assert "WRONG" not in r.stdout
    assert small.read("clock").splitlines()[:2] == ["tick 0", "state paused"]
    assert small.pids() == {5000001}, "the scenario's process is gone"
    assert small.meminfo()["MemFree"] == before

    r = run("heap_scavenge.sh", small.path / "5000001")
    assert r.returncode == 2 and "not a mounted memfs machine" in r.stderr


def test_swap_oom_scenario_on_the_small_machine(small):
    """swap_oom.sh: db writes 55300 kB rounded up to MiB plus 8 MiB = 63 MiB, more than
    RAM, so swap is used; leak then writes 128 MiB (as much as swap) and is killed, the
    only process the OOM killer may choose once db is at -1000."""
    bindir = Path(sys.executable).parent              # where the memfs command is installed
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    r = subprocess.run(["bash", str(SCENARIOS / "swap_oom.sh"), str(small.path)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout.splitlines()
    assert "WRONG" not in r.stdout and out[-1] == "swap_oom: every figure as expected"
    assert out[0] == "swap_oom: 55300 kB of RAM, 131068 kB of swap"
    step1 = out.index("1. spawn db (pid 5000002), mmap 63M at 0x7ffff40ff000 and write every "
                      "page: more than RAM")
    free_swap = next(ln for ln in out[step1:] if ln.startswith("   Swap:")).split()
    assert int(free_swap[1]) == 131068 and int(free_swap[2]) > 0, "free shows the swap used"
    used = next(ln for ln in out if ln.startswith("   ok: swap used = "))
    assert int(used.split()[-2]) == int(free_swap[2])
    some = next(ln for ln in out if ln.startswith("   some avg10="))
    assert int(some.rsplit("total=", 1)[1]) > 0
    assert out.count("   ok: pages that differ from what db wrote = 0") == 2
    assert "5. spawn leak (pid 5000003), mmap 128M at 0x7fffeffff000 and write every page: RAM " \
           "and swap run out" in out
    assert any(ln.endswith("Tasks state (memory values in pages):") for ln in out)
    killed = [ln for ln in out if "Out of memory: Killed process" in ln]
    assert len(killed) == 1 and "Out of memory: Killed process 5000003 (leak) " in killed[0]
    assert "   ok: oom_kill = 1" in out and "   ok: leak (5000003) is gone" in out
    assert small.pids() == {5000001}, "the scenario's processes are gone"
    assert small.read("clock").splitlines()[1] == "state paused"


def test_swap_oom_scenario_refuses_a_directory_that_is_not_a_machine(tmp_path):
    r = run("swap_oom.sh", tmp_path)
    assert r.returncode == 2
    assert "not a mounted memfs machine" in r.stderr


def test_hotplug_scenario_on_the_small_machine(small):
    """hotplug.sh, figures worked out by hand: the first block from 4 GiB is memory32
    (0x100000000 / 128 MiB), iomem 100000000-107ffffff. Its memmap, 32768 struct pages of
    64 bytes, costs 2048 kB at probe: MemFree 55300 -> 53252, MemTotal unchanged. Online:
    +131072 kB, MemTotal (and node0's) 186372. app: spawn 20 kB + 9 PTE tables 36 kB +
    4096 pages: MemFree 184324 -> 167884; its 4096 pages and its stack page are in the
    block, so offlining migrates 4097 pages and MemFree falls by the block: 36812. Once
    app is killed, everything is back but the memmap: 53252."""
    r = run("hotplug.sh", small.path)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout.splitlines()
    assert "WRONG" not in r.stdout and out[-1] == "hotplug: every figure as expected"
    assert out[0] == "hotplug: 55300 kB of RAM, memory blocks of 131072 kB (block_size_bytes 8000000)"
    for line in (f"1. echo 0x100000000 > {small.path}/devices/system/memory/probe: memory32 appears",
                 "   memory32/state: offline",
                 "   memory32/phys_index: 00000020",
                 "   memory32/valid_zones: Normal Movable",
                 "   ok: iomem has 100000000-107ffffff : System RAM",
                 "   MemTotal 55300 -> 55300 kB (+0)",
                 "   MemFree 55300 -> 53252 kB (-2048)",
                 "   MemTotal 55300 -> 186372 kB (+131072)",
                 "   node0 MemTotal 55300 -> 186372 kB (+131072)",
                 "   ok: memory32 valid_zones = Movable",
                 "3. spawn app (pid 5000002), mmap 16M at 0x7ffff6fff000 and write every page",
                 "   ok: app's 16M pages in memory32 = 4096",
                 "   app has 4097 pages in memory32 (the 4096 and its stack)",
                 "   ok: kmsg says Offlined Pages 32768",
                 "   MemTotal 186372 -> 55300 kB (-131072)",
                 "   MemFree 167884 -> 36812 kB (-131072)",
                 "   ok: pages migrated (pgmigrate_success) = 4097",
                 "   ok: app's pages left in memory32 = 0",
                 "   ok: error = Device or resource busy",
                 "   ok: MemTotal = 186372",
                 "   MemFree 55300 -> 53252 kB (-2048)"):
        assert line in out, f"missing {line!r} in:\n{r.stdout}"
    assert out.count("   ok: pages that differ from what app wrote = 0") == 2
    frame = next(ln for ln in out if ln.startswith("   palloc -> frame ")).split()[-1]
    assert 0x100000 <= int(frame, 16) < 0x108000, "the driver's frame is in the Normal block"
    assert small.pids() == {5000001}, "the scenario's process is gone"
    assert small.read("clock").splitlines()[:2] == ["tick 0", "state paused"]
    assert small.read("devices/system/memory/memory32/state") == "offline\n"
    mi = small.meminfo()
    assert (mi["MemTotal"], mi["MemFree"]) == (55300, 53252)
    assert small.read("vmstat").count("\npgmigrate_success 4097\n") == 1


def test_hotplug_scenario_refuses_a_directory_that_is_not_a_machine(tmp_path):
    r = run("hotplug.sh", tmp_path)
    assert r.returncode == 2
    assert "not a mounted memfs machine" in r.stderr
