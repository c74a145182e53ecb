"""Same seed, same commands, same machine: two mounts of the default config (its four
workloads: web, db, recurse, leak) with the same --seed, paused, given the same
commands and the same number of ticks, show byte-identical files; whether the ticks
come as one `step 500` or in chunks does not matter. Another seed gives another run.
"""
import os

import pytest

from .conftest import _mount, _unmount

SEED = 7
MACHINE_FILES = ("meminfo", "vmstat", "buddyinfo", "zoneinfo", "pagetypeinfo", "swaps", "files")
PID_FILES = ("status", "stat", "statm", "maps", "smaps_rollup", "heap")


@pytest.fixture
def machines(tmp_path):
    """Three paused default machines: two with SEED, one with SEED + 1."""
    mounted = []
    try:
        for name, seed in (("a", SEED), ("b", SEED), ("other", SEED + 1)):
            (tmp_path / name).mkdir()
            mounted.append(_mount(tmp_path / name, "--paused", "--seed", str(seed)))
        yield mounted
    finally:
        for m in mounted:
            _unmount(m)


def commands(m):
    """What every machine is told before its clock moves: two more workloads, and a few
    heap commands given to the config's web process by hand."""
    assert [m.read(f"{pid}/comm").strip() for pid in sorted(m.pids())] == \
        ["kthreadd", "web", "db", "recurse", "leak"], "the default config's processes"
    web = m.spawn("web", "workload=web")
    jobs = m.spawn("jobs", "workload=batch")
    first = min(m.pids() - {5000001})
    a = int(m.pctl(first, "malloc 3000"), 16)
    m.pctl(first, f"memset {a:#x} 3000")
    return web, jobs


def state(m):
    out = {name: m.read(name) for name in MACHINE_FILES}
    out["pids"] = sorted(m.pids())
    for pid in out["pids"]:
        for name in PID_FILES:
            out[f"{pid}/{name}"] = m.read(f"{pid}/{name}")
    out["clock"] = m.read("clock")
    return out


def whole_trace(m):
    """The trace stream from its start to its end (read without blocking)."""
    fd = os.open(m / "trace", os.O_RDONLY | os.O_NONBLOCK)
    data = b""
    try:
        while True:
            try:
                chunk = os.read(fd, 1 << 20)
            except BlockingIOError:
                return data
            data += chunk
    finally:
        os.close(fd)


def differences(x, y):
    return [k for k in x if x[k] != y.get(k)]


def test_same_seed_and_commands_give_byte_identical_machines(machines):
    a, b, other = machines
    for m in machines:
        assert commands(m) == (5000006, 5000007)
    a.write("clock", "step 500\n")
    for n in (1, 99, 150, 250):                      # the same 500 ticks, in chunks
        b.write("clock", f"step {n}\n")
    other.write("clock", "step 500\n")

    sa, sb = state(a), state(b)
    assert sa["clock"].splitlines()[:2] == ["tick 500", "state paused"]
    assert differences(sa, sb) == []
    for pid in sa["pids"]:
        assert sa[f"{pid}/status"] == sb[f"{pid}/status"]
    assert sa["meminfo"] == sb["meminfo"] and sa["vmstat"] == sb["vmstat"]

    # Something happened: the batch parent forked workers, every workload faulted pages.
    assert len(sa["pids"]) > 7, sa["pids"]
    assert "jobs" in {a.read(f"{pid}/comm").strip() for pid in set(sa["pids"]) - {5000007}}
    vm = dict(line.split() for line in sa["vmstat"].splitlines())
    assert int(vm["pgfault"]) > 10000

    assert other.read("meminfo") != sa["meminfo"], "another seed, another run"

    # Later commands keep them in step: a low-memory notification, a kill, more ticks.
    for m in (a, b):
        m.ctl("notify low")
        m.ctl("kill 5000003")
        m.write("clock", "step 37\n")
        m.write("clock", "step 63\n")
    sa, sb = state(a), state(b)
    assert sa["clock"].splitlines()[0] == "tick 600"
    assert differences(sa, sb) == []
    ta, tb = whole_trace(a), whole_trace(b)
    assert ta == tb, "the same events, in the same order, at the same ticks"
    assert len(ta.splitlines()) > 10000
