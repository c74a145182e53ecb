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
import subprocess
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
