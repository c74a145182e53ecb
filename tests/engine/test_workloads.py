"""Workloads, ticks and background tasks: determinism, each workload's schedule, the
Lackey replay, low-memory notifications, vmpressure and the idle scavenger.

A tick (Machine.step) runs every process in pid order (a pending notification
first: the process scavenges, then its workload reacts), then the background
tasks by priority: vmpressure every tick, the idle scavenger every
scavenge_period (50) ticks but only on a tick that left a CPU idle. The small
machine has one CPU: a tick is idle when no process had work.

Heap figures are worked out as in test_heap.py: the break starts at
BASE = 0x540000, a request of n bytes takes max(32, align16(n + 8)), the first
grow asks page_up(chunk + 32 + 128K).
"""
import pytest

from engine import Machine, load
from engine.errors import InvalidArgument
from engine.invariants import check_invariants
from engine.workloads import make
from memfs.machines import builtin
from vmm_common import PAGE, STACK_TOP

BASE = 0x540000


def lines(m, start: int = 0) -> list[str]:
    """The trace from byte offset start (everything these short runs published)."""
    data = m.trace.read(m.trace.reader(), start, 1 << 30, block=False)
    return (data or b"").decode().splitlines()


def proc(m, pid):
    return m.tasks.procs[pid]


def snapshot(m):
    """What two runs are compared on: meminfo, vmstat, every process's status and heap."""
    return (m.meminfo(), m.vmstat(), [m.proc_view(pid) for pid in m.pids()],
            [m.heap_view(pid) for pid in m.pids()], m.trace.end, m.clock.tick)


def pinned_heap(m) -> int:
    """A program whose heap holds a free chunk with 72 resident whole pages inside
    (test_heap.py: test_a_pinned_block_stops_trim...): RSS 75, scavenge frees 72."""
    pid = m.tasks.spawn("a")
    ptrs = [m.tasks.malloc(pid, 100000) for _ in range(3)]
    for x in ptrs:
        m.tasks.memset(pid, x, 100000)
    m.tasks.malloc(pid, 1)
    for x in ptrs:
        m.tasks.free(pid, x)
    assert proc(m, pid).mm.rss == 75
    return pid


# ---------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs():
    """Three default machines with their boot processes (web, db, recurse, leak),
    stepped 300 ticks: two with the config's seed, one with seed 2."""
    cfg = load(builtin("default"))
    out = []
    for c in (cfg, cfg, cfg.with_seed(2)):
        m = Machine(c, paused=True)
        m.step(300)
        out.append(m)
    return out


def test_the_same_seed_gives_the_same_machine(runs):
    a, b, _ = runs
    assert [a.proc_view(p).comm for p in a.pids()] == ["kthreadd", "web", "db", "recurse", "leak"]
    assert snapshot(a) == snapshot(b)
    assert lines(a) == lines(b)


def test_another_seed_gives_another_machine(runs):
    a, _, c = runs
    assert a.config.seed == 1 and c.config.seed == 2
    assert a.meminfo() != c.meminfo()
    assert snapshot(a) != snapshot(c)
    # Same programs, same number of ticks: only the random draws differ.
    assert [a.proc_view(p).comm for p in a.pids()] == [c.proc_view(p).comm for p in c.pids()]


def test_the_boot_processes_keep_the_invariants(runs):
    a, _, c = runs
    check_invariants(a)
    check_invariants(c)


def test_the_boot_leak_is_one_4k_block_a_tick(runs):
    """leak (size 4K, limit 8M) ran all 300 ticks: 300 live 4096-byte blocks."""
    a = runs[0]
    leak = a.tasks.by_name("leak")
    assert len(leak.heap.live) == 300
    assert {rec[0] for rec in leak.heap.live.values()} == {4096}
    assert leak.utime == 300 and leak.state == "R"


# ---------------------------------------------------------------------------
# leaky
# ---------------------------------------------------------------------------

def test_leaky_stops_at_its_limit_and_sleeps(small, invariants):
    """size=4096 limit=64K: one 4112-byte chunk a tick, written in full. The first grow
    asks page_up(4112 + 32 + 128K) = 34 pages; 16 chunks (65792 bytes) fit. After tick
    16 it holds 65536 bytes and heap pages 0-16 are resident (the top's size word at
    BASE + 65800 is on page 16), with the stack page: RSS 18. Tick 17 would pass the
    limit: it sleeps (one voluntary switch) and stays asleep."""
    m = small
    pid = m.tasks.spawn("leak", workload=make("leaky", {"size": 4096, "limit": 65536}))
    p = proc(m, pid)
    for tick in range(1, 17):
        m.step(1)
        assert p.state == "R"
        assert sum(rec[0] for rec in p.heap.live.values()) == 4096 * tick
    assert p.mm.rss == 18
    assert p.mm.brk == BASE + 34 * PAGE
    m.step(1)
    assert p.state == "S"
    assert sum(rec[0] for rec in p.heap.live.values()) == 65536
    m.step(5)
    assert (p.state, p.utime, p.nvcsw, p.mm.rss) == ("S", 16, 1, 18)
    assert len(p.heap.live) == 16
    invariants(m)


def test_a_process_without_work_is_asleep_and_uses_no_cpu(small):
    m = small
    pid = m.tasks.spawn("idle")
    m.step(3)
    assert (proc(m, pid).state, proc(m, pid).utime) == ("S", 0)
    assert m.tasks.cpu_busy == [0]


# ---------------------------------------------------------------------------
# batch
# ---------------------------------------------------------------------------

def test_batch_keeps_its_workers_and_each_one_exits(small, invariants):
    """workers=2 rate=1: each worker runs max(1, 1 + randint(0, 0)) = 1 tick. Tick 1:
    the parent forks two (they first run next tick); tick 2: each allocates and writes
    its 64K buffer; tick 3: each frees it and exits (status 0). Tick 4: the parent sees
    both gone and forks two more. The parent runs (R) only on the ticks it forks."""
    m = small
    pid = m.tasks.spawn("batch", workload=make("batch", {"workers": 2, "size": 65536, "rate": 1}))
    parent = proc(m, pid)

    def kids():
        return sorted(q.pid for q in m.tasks.procs.values() if q.ppid == pid)

    m.step(1)
    assert kids() == [pid + 1, pid + 2] and parent.state == "R"
    m.step(1)
    assert kids() == [pid + 1, pid + 2] and parent.state == "S"
    for k in kids():
        (n, *_), = proc(m, k).heap.live.values()
        assert n == 65536
        assert proc(m, k).state == "R"
    invariants(m)
    m.step(1)
    assert kids() == []
    m.step(1)
    assert kids() == [pid + 3, pid + 4] and parent.state == "R"
    assert parent.workload.jobs == 4
    m.step(2)
    assert kids() == []
    exits = [x for x in lines(m) if " exit " in x]
    assert exits == [f"3 {pid + 1} exit status=0", f"3 {pid + 2} exit status=0",
                     f"6 {pid + 3} exit status=0", f"6 {pid + 4} exit status=0"]
    invariants(m)


def test_batch_never_runs_more_than_its_workers(small, invariants):
    """workers=3 rate=8: a worker forked at tick k allocates at k + 1, works T = 8 +- 2
    ticks and exits at k + 1 + T; the parent refills the slot at k + 2 + T. So a slot
    forks every 8 to 12 ticks from tick 1: in 60 ticks, 5 to 8 times (ticks 1, <= 13,
    <= 25, <= 37, <= 49; at most 1, 9, ..., 57). Three slots: 15 to 24 jobs."""
    m = small
    pid = m.tasks.spawn("batch", workload=make("batch", {"workers": 3, "size": 8192, "rate": 8}))
    for _ in range(60):
        m.step(1)
        kids = [q for q in m.tasks.procs.values() if q.ppid == pid]
        assert len(kids) <= 3
    assert 15 <= proc(m, pid).workload.jobs <= 24
    invariants(m)


# ---------------------------------------------------------------------------
# replay
# ---------------------------------------------------------------------------

TRACE = """==1234== Lackey, an example Valgrind tool
I  10000000,4
 L 10000010,8

 S 10000020,8
 M 10002000,4
 L 10003ffc,8
==1234== a Valgrind message mid-trace
 S 10004ff8,16
"""


def test_replay_faults_exactly_as_worked_out(small, tmp_path, invariants):
    """Eight page accesses (the two straddling accesses count twice), rate 3 a tick:
    tick 1: I 0x10000000 (read, fresh: zero page, 1 fault), L same page (no fault),
      S same page (write: copy of the zero page, 1 fault, RSS 1);
    tick 2: M 0x10002000 (a write fault straight away, RSS 2), L 0x10003ffc,8 touches
      0x10003000 and 0x10004000 (two reads of fresh pages: zero page, 2 faults);
    tick 3: S 0x10004ff8,16 touches 0x10004000 (write: copy of the zero page) and
      0x10005000 (fresh write): 2 faults, RSS 4.
    Total 7 faults, all minor; 4 pages resident (0x10003000 maps the zero page, which
    RSS never counts). Tick 4: nothing left, the process sleeps."""
    m = small
    path = tmp_path / "t.lackey"
    path.write_text(TRACE)
    faults0 = dict(m.vmstat())["pgfault"]
    pid = m.tasks.spawn("rp", workload=make("replay", {"trace": str(path), "rate": 3}))
    p = proc(m, pid)
    assert p.mm.vmas == [] and p.mm.rss == 0          # no program, no stack
    expect = [(2, 1), (5, 2), (7, 4)]
    for tick, (faults, rss) in enumerate(expect, 1):
        m.step(1)
        assert (p.minflt, p.majflt, p.mm.rss, p.state) == (faults, 0, rss, "R"), tick
    m.step(1)
    assert p.state == "S"
    m.step(3)
    assert (p.minflt, p.mm.rss, p.state) == (7, 4, "S")
    assert dict(m.vmstat())["pgfault"] == faults0 + 7
    assert [(v.start, v.end) for v in p.mm.vmas] == [(0x10000000, 0x10001000),
                                                     (0x10002000, 0x10006000)]
    faults = [x.split(" ", 3)[3] for x in lines(m) if f" {pid} fault " in x]
    assert faults == ["0x10000000 read zero", "0x10000000 write cow", "0x10002000 write anon",
                      "0x10003000 read zero", "0x10004000 read zero", "0x10004000 write cow",
                      "0x10005000 write anon"]
    assert f"3 {pid} replay-done accesses=8 faults=7 rss_pages=4" in lines(m)
    assert m.kmsg_lines()[-1].endswith(f"replay: {pid} (rp) played 8 accesses: 7 faults, "
                                       f"4 pages resident")
    invariants(m)


@pytest.mark.parametrize("text,lineno,why", [
    ("I  10000000,4\n L 10000010\n", 2, "is not a Lackey access"),
    ("I  10000000,4\n\n X 10000010,8\n", 3, "is not a Lackey access"),
    (" L zz,8\n", 1, "is not a Lackey access"),
    (" L 10000000,x\n", 1, "is not a Lackey access"),
    ("==1== hi\n S 100,8\n", 2, "outside user space"),
    (" S 10000000,0\n", 1, "outside user space"),
    (" S 7ffffffff000,8\n", 1, "outside user space"),
])
def test_bad_trace_lines_are_refused_with_their_line_number(small, tmp_path, text, lineno, why):
    path = tmp_path / "bad.lackey"
    path.write_text(text)
    with pytest.raises(InvalidArgument) as info:
        make("replay", {"trace": str(path)})
    assert f"{path} line {lineno}: " in info.value.reason
    assert why in info.value.reason
    assert small.pids() == [5_000_001]                 # nothing was spawned


def test_an_empty_or_missing_trace_is_refused(tmp_path):
    empty = tmp_path / "empty.lackey"
    empty.write_text("==1== only messages\n\n")
    with pytest.raises(InvalidArgument, match="holds no Lackey accesses"):
        make("replay", {"trace": str(empty)})
    with pytest.raises(InvalidArgument, match="cannot read trace="):
        make("replay", {"trace": str(tmp_path / "nope")})
    with pytest.raises(InvalidArgument, match="needs trace=PATH"):
        make("replay", {})


def test_workload_options_are_checked(small):
    with pytest.raises(InvalidArgument, match="unknown workload"):
        make("nope", {})
    with pytest.raises(InvalidArgument, match="takes size=, limit=; not rate="):
        make("leaky", {"rate": 3})
    with pytest.raises(InvalidArgument, match="workers=65 must be between 1 and 64"):
        make("batch", {"workers": 65})
    assert make("leaky", {"size": "8K"}).opts == {"size": 8192, "limit": 0}


# ---------------------------------------------------------------------------
# notifications, vmpressure, the idle scavenger
# ---------------------------------------------------------------------------

def test_notify_low_makes_each_process_scavenge_on_its_next_tick(small, invariants):
    """notify only marks the process; its next tick starts with a scavenge (72 pages of
    the pinned heap come back: RSS 75 -> 3). Tick 1 is also idle (no workload), so the
    idle scavenger visits it afterwards and finds nothing more."""
    m = small
    pid = pinned_heap(m)
    start = m.trace.end
    assert m.notify("low") == 1                        # kthreadd has no memory to give
    assert proc(m, pid).mm.rss == 75 and proc(m, pid).notified == "low"
    m.step(1)
    assert proc(m, pid).mm.rss == 3 and proc(m, pid).notified is None
    got = [x for x in lines(m, start) if "notify" in x or "scavenge" in x]
    assert got == ["0 0 notify level=low processes=1",
                   f"1 {pid} scavenge reason=notify-low areas=2 heap_pages=72 stack_pages=0",
                   f"1 {pid} scavenge reason=idle areas=2 heap_pages=0 stack_pages=0"]
    assert "notify: low memory: 1 processes notified" in m.kmsg_lines()[-1]
    m.step(1)
    assert not any(" scavenge reason=notify" in x for x in lines(m, start) if x.startswith("2 "))
    with pytest.raises(InvalidArgument):
        m.notify("medium")
    invariants(m)


def test_notify_critical_makes_the_web_cache_drop_half(small, invariants):
    """A web server caches responses; `low` drops a quarter of its entries (rounded
    down), `critical` half, before it serves this tick's requests."""
    m = small
    pid = m.tasks.spawn("web", workload=make("web", {"rate": 8, "size": 1 << 20}))
    m.step(40)
    w = proc(m, pid).workload
    n = len(w.cache)
    assert n >= 4
    start = m.trace.end
    m.notify("critical")
    m.step(1)
    assert f"41 {pid} cache-drop entries={n // 2} level=critical" in lines(m, start)
    n = len(w.cache)
    start = m.trace.end
    m.notify("low")
    m.step(1)
    if n // 4:
        assert f"42 {pid} cache-drop entries={n // 4} level=low" in lines(m, start)
    assert sum(w.cache.values()) == w.cached
    invariants(m)


def test_a_stronger_pending_notification_wins(small):
    m = small
    pid = m.tasks.spawn("a")
    m.notify("critical")
    m.notify("low")
    assert proc(m, pid).notified == "critical"
    start = m.trace.end
    m.step(1)
    assert any(f"1 {pid} scavenge reason=notify-critical" in x for x in lines(m, start))


def test_vmpressure_notifies_below_the_watermarks_once_per_interval(small):
    """min_free_kbytes=60000 puts every zone's min watermark above its free pages:
    critical. vmpressure (every tick, after the processes) notifies at tick 1; the
    process scavenges at tick 2; the next notice waits for pressure_interval (100)
    ticks: tick 101, scavenged at 102."""
    m = small
    pid = m.tasks.spawn("a")
    m.sysctl_write("min_free_kbytes", "60000")
    assert m.background.pressure_level() == "critical"
    m.step(102)
    got = [x for x in lines(m) if " notify level=" in x]
    assert got == ["1 0 notify level=critical processes=1",
                   "101 0 notify level=critical processes=1"]
    scav = [x.split()[0] for x in lines(m) if f"{pid} scavenge reason=notify-critical" in x]
    assert scav == ["2", "102"]


def test_vmpressure_says_low_between_the_low_and_min_watermarks(small):
    m = small
    m.tasks.spawn("a")
    m.sysctl_write("min_free_kbytes", "50000")
    zones = [z for z in m.zones if z.managed_pages]
    assert all(z.free_pages >= z.wmark_min for z in zones)
    assert any(z.free_pages < z.wmark_low for z in zones)
    assert m.background.pressure_level() == "low"
    m.step(1)
    assert "1 0 notify level=low processes=1" in lines(m)


def test_the_idle_scavenger_runs_on_idle_ticks_only_round_robin(small, invariants):
    """"a" (pinned heap, no workload) and "busy" (leaky 4K a tick up to 40K: busy on
    ticks 1-10, asleep from 11). The one CPU is busy on ticks 1-10: no idle scavenge.
    Tick 11 is the first idle tick: the scavenger visits the lowest pid, "a" (72 pages
    back), and waits 50 ticks; tick 61 visits "busy" (its heap: 10 chunks of 4112 bytes,
    the top at BASE + 41120; its whole pages from page_up(BASE + 41168), page 11, to the
    break were never written: 1 area, 0 pages); tick 111 wraps round to
    "a" again (nothing left)."""
    m = small
    a = pinned_heap(m)
    busy = m.tasks.spawn("busy", workload=make("leaky", {"size": 4096, "limit": 40960}))
    m.step(10)
    assert m.background.idle_ticks == 0
    assert proc(m, a).mm.rss == 75
    assert not any("reason=idle" in x for x in lines(m))
    m.step(1)
    assert m.background.idle_ticks == 1
    assert proc(m, a).mm.rss == 3
    m.step(100)
    got = [x for x in lines(m) if "reason=idle" in x]
    assert got == [f"11 {a} scavenge reason=idle areas=2 heap_pages=72 stack_pages=0",
                   f"61 {busy} scavenge reason=idle areas=1 heap_pages=0 stack_pages=0",
                   f"111 {a} scavenge reason=idle areas=2 heap_pages=0 stack_pages=0"]
    assert m.background.idle_ticks == 101
    invariants(m)


def test_the_idle_scavenger_never_runs_while_every_cpu_is_busy(small):
    """A leaky process without a limit (small blocks) keeps the one CPU busy every tick:
    120 ticks, no idle tick, no idle scavenge."""
    m = small
    m.tasks.spawn("busy", workload=make("leaky", {"size": 64}))
    m.step(120)
    assert m.background.idle_ticks == 0
    assert not any("reason=idle" in x for x in lines(m))
    assert m.tasks.cpu_busy == [120]


# ---------------------------------------------------------------------------
# stack and database
# ---------------------------------------------------------------------------

def test_the_stack_workload_moves_sp_within_its_depth(small, invariants):
    m = small
    pid = m.tasks.spawn("rec", workload=make("stack", {"depth": 256 << 10}))
    p = proc(m, pid)
    deepest = 0
    for _ in range(80):
        m.step(1)
        depth = STACK_TOP - p.sp
        assert depth == p.workload.depth
        assert PAGE <= depth <= 256 << 10
        deepest = max(deepest, depth)
        stack = m.tasks._stack_vma(p)
        assert stack.start <= p.sp
    # Every page from the deepest sp to the top was written once: none were given back.
    assert p.mm.rss == -(-deepest // PAGE)
    invariants(m)


def test_the_database_scans_rate_pages_on_each_query_tick(small, invariants):
    """Each tick with a query (the process ran: utime) scans rate= pages from the cursor,
    wrapping round the file; ticks without one leave it."""
    m = small
    pid = m.tasks.spawn("db", workload=make("database", {"size": 1 << 20, "rate": 48}))
    p = proc(m, pid)
    assert ("/var/lib/db-%d.db" % pid, 1 << 20) in [(f[0], f[1]) for f in m.files()]
    m.step(30)
    assert 0 < p.utime < 30
    assert p.workload.cursor == 48 * p.utime % 256
    assert p.majflt > 0
    invariants(m)
