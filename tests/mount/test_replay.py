"""Workloads spawned from ctl: replaying a real Valgrind Lackey trace, and spawns refused.

tests/data/lackey.trace.gz is Lackey's trace of tests/data/lackey_prog.c (built
static; how it was made is at the top of the C file). tests/data/lackey_expect.py
computes from the trace text alone what the replay must cost: one fault per page
on its first touch, one more for a page first read and later written, and the
written pages resident. The replay must agree, part-way and at the end.
"""
import errno
import gzip
import importlib.util
import shutil
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data"
PAGE = 4096
RATE = 20000

# Where lackey_prog's own arrays are (nm lackey_prog).
COUNTS, OUTPUT, TABLE, TEXT = 0x4AB000, 0x4AE000, 0x4B2000, 0x47A000
PM_PRESENT = 1 << 63
PM_PFN = (1 << 55) - 1


def load_expect():
    spec = importlib.util.spec_from_file_location("lackey_expect", DATA / "lackey_expect.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.expect


expect = load_expect()


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    """The trace, decompressed where the daemon can read it (an absolute host path)."""
    path = tmp_path_factory.mktemp("lackey") / "lackey.trace"
    with gzip.open(DATA / "lackey.trace.gz", "rb") as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return path


def stat_fields(m, pid):
    """<pid>/stat split as proc(5) numbers it: field 1 is the pid, 3 the state."""
    text = m.read(f"{pid}/stat")
    head, _, rest = text.rpartition(")")
    pid_text, _, comm = head.partition(" (")
    return [None, pid_text, comm, *rest.split()]


def faults(m, pid):
    f = stat_fields(m, pid)
    return int(f[10]) + int(f[12])


def state(m, pid):
    return stat_fields(m, pid)[3], m.read(f"{pid}/status").splitlines()[2]


def tick(m):
    return int(m.read("clock").splitlines()[0].split()[1])


def test_the_expectation_covers_every_kind_of_first_touch(trace):
    whole = expect(trace)
    assert whole["accesses"] == 50686 and whole["touches"] == 50690, "4 accesses straddle"
    assert whole["rss_pages"] < whole["pages"] < whole["faults"]


def test_replaying_a_lackey_trace_costs_what_the_trace_says(machine, trace):
    m = machine
    whole = expect(trace)
    ticks = -(-whole["touches"] // RATE)
    assert ticks == 3

    pid = m.spawn("replay", "workload=replay", f"trace={trace}", f"rate={RATE}")
    assert f"workload replay trace={trace} rate={RATE} ({whole['touches']} accesses)" in \
        m.kmsg_tail()[0]
    assert m.read(f"{pid}/maps") == "", "no program text, no stack: only what the trace touches"
    assert state(m, pid) == ("R", "State:\tR (running)")
    assert faults(m, pid) == 0 and m.status(pid)["VmRSS"] == 0

    for k in range(1, ticks):                         # part-way: exactly the first k*RATE
        m.step(1)
        part = expect(trace, k * RATE)
        assert state(m, pid) == ("R", "State:\tR (running)"), f"playing at tick {k}"
        assert faults(m, pid) == part["faults"]
        assert m.status(pid)["VmRSS"] == part["rss_kb"]

    m.step(1)                                         # the last accesses: done, still R
    assert state(m, pid)[0] == "R"
    done = f"replay: {pid} (replay) played {whole['touches']} accesses: {whole['faults']} " \
           f"faults, {whole['rss_pages']} pages resident"
    assert m.kmsg_tail()[0].endswith(done)

    m.step(1)                                         # nothing left to play: it sleeps
    assert state(m, pid) == ("S", "State:\tS (sleeping)")
    assert faults(m, pid) == whole["faults"] == 82
    assert stat_fields(m, pid)[12] == "0", "anonymous memory: no major faults"
    assert m.status(pid)["VmRSS"] == whole["rss_kb"] == 100
    assert int(stat_fields(m, pid)[24]) == whole["rss_pages"], "stat's rss, in pages"

    m.step(5)
    assert state(m, pid)[0] == "S" and faults(m, pid) == 82, "a finished replay stays put"


def test_replayed_pages_are_mapped_as_the_program_touched_them(machine, trace):
    """table (read, then written), output (written), counts (read-modify-write) each have
    a frame of their own per page; text (only read) maps the zero page, shared."""
    m = machine
    pid = m.spawn("replay", "workload=replay", f"trace={trace}", "rate=100000")
    m.step(1)
    own = m.pagemap(pid, TABLE, 6) + m.pagemap(pid, OUTPUT, 4) + m.pagemap(pid, COUNTS, 3)
    assert all(e & PM_PRESENT for e in own)
    assert len({e & PM_PFN for e in own}) == 13, "13 written pages, 13 frames"
    zero = m.pagemap(pid, TEXT, 2)
    assert all(e & PM_PRESENT for e in zero)
    assert zero[0] & PM_PFN == zero[1] & PM_PFN, "both read-only pages map the zero page"
    assert zero[0] & PM_PFN not in {e & PM_PFN for e in own}
    # Each page the trace touches is mapped on its own (anonymous, rw) and neighbours
    # merge: the mappings are the runs of adjacent pages touched.
    runs = [tuple(int(x, 16) for x in line.split()[0].split("-"))
            for line in m.read(f"{pid}/maps").splitlines()]
    assert runs == expect(trace)["runs"]
    assert any(lo <= COUNTS and TABLE + 6 * PAGE <= hi for lo, hi in runs), \
        "counts, output and table lie side by side, in one mapping"
    assert all(line.split()[1] == "rw-p" for line in m.read(f"{pid}/maps").splitlines())


# ---------------------------------------------------------------------------
# refused spawns: EINVAL, the reason in kmsg, no process
# ---------------------------------------------------------------------------

def refused(m, command):
    before = m.pids()
    code, reason = m.rejected(command)
    assert code == errno.EINVAL, (command, reason)
    assert m.pids() == before, f"{command}: a process was made"
    return reason, m.kmsg_tail()[0]


def bad_trace(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name,text,words", [
    ("garbage.trace", "I  00401000,4\nhello world\n",
     "line 2: 'hello world' is not a Lackey access (I|L|S|M ADDR,SIZE)"),
    ("low.trace", "==1== header\n L 00000100,8\n",
     "line 2: access 0x100,8 is outside user space"),
    ("nosize.trace", " S 00401000\n", "line 1"),
    ("empty.trace", "==1== Lackey, an example Valgrind tool\n\n", "holds no Lackey accesses"),
])
def test_a_bad_trace_is_refused_with_the_line_at_fault(machine, tmp_path, name, text, words):
    path = bad_trace(tmp_path, name, text)
    reason, kmsg = refused(machine, f"spawn replay workload=replay trace={path}")
    assert words in reason and words in kmsg, (reason, kmsg)
    assert str(path) in kmsg


def test_a_missing_trace_is_refused(machine, tmp_path):
    missing = tmp_path / "nowhere.trace"
    reason, kmsg = refused(machine, f"spawn replay workload=replay trace={missing}")
    assert f"cannot read trace={missing}: No such file or directory" in kmsg


def test_a_relative_trace_path_is_refused(machine, trace):
    reason, kmsg = refused(machine, "spawn replay workload=replay trace=data/lackey.trace")
    assert "trace=data/lackey.trace must be an absolute path" in kmsg


@pytest.mark.parametrize("command,words", [
    ("spawn x workload=fortran", "unknown workload 'fortran' (known: web, database, leaky, "
                                 "batch, stack, replay)"),
    ("spawn x workload=web depth=1M", "workload web takes rate=, size=; not depth="),
    ("spawn x workload=leaky size=0", "workload leaky: size=0 must be between"),
    ("spawn x workload=batch workers=0", "workload batch: workers=0 must be between 1 and 64"),
    ("spawn x workload=stack depth=9M", "workload stack: depth=9437184 must be between"),
    ("spawn x workload=replay", "workload replay needs trace=PATH"),
    ("spawn x workload=web rate=fast", "rate=fast: expected a decimal integer"),
    ("spawn x rate=5", "rate= is a workload option: give workload=KIND too"),
    ("spawn x workload=web colour=red", "unknown option colour="),
])
def test_a_bad_workload_spawn_is_refused(machine, command, words):
    reason, kmsg = refused(machine, command)
    assert words in reason and words in kmsg, (reason, kmsg)


def test_replay_rate_is_checked(machine, trace):
    reason, kmsg = refused(machine, f"spawn replay workload=replay trace={trace} rate=0")
    assert "workload replay: rate=0 must be between 1 and" in kmsg


# ---------------------------------------------------------------------------
# a replay process has no program: its heap must not start at address 0
# ---------------------------------------------------------------------------

MMAP_MIN_ADDR = 0x10000


def low_mappings(m, pid):
    """Mappings that start below vm.mmap_min_addr (what mmap refuses and the engine's
    invariant checker calls outside user space)."""
    return [ln for ln in m.read(f"{pid}/maps").splitlines()
            if int(ln.split("-")[0], 16) < MMAP_MIN_ADDR]


def test_malloc_in_a_replay_process_never_maps_the_null_page(machine, trace):
    m = machine
    pid = m.spawn("replay", "workload=replay", f"trace={trace}", f"rate={RATE}")
    m.step(1)
    try:
        ptr = int(m.pctl(pid, "malloc 100"), 16)
    except OSError as e:                              # refusing is fine too
        assert e.errno in (errno.EINVAL, errno.ENOMEM)
    else:
        assert ptr >= MMAP_MIN_ADDR
    assert low_mappings(m, pid) == []


def test_brk_in_a_replay_process_never_maps_the_null_page(machine, trace):
    m = machine
    pid = m.spawn("replay", "workload=replay", f"trace={trace}", f"rate={RATE}")
    code, _ = m.rejected("mmap 4096 addr=0", f"{pid}/ctl")
    assert code == errno.EINVAL, "mmap refuses the null page"
    try:
        m.pctl(pid, "brk +4K")
    except OSError:
        pass
    assert low_mappings(m, pid) == []
