"""The trace stream through the mount: `TICK PID EVENT DETAILS` lines, a read at the end
blocks until new events (or fails with EAGAIN under O_NONBLOCK), st_size is the
stream's length so far (what tail -f polls).

The clock stays paused: ticks happen only by `step N`, so which tick each event
carries is known. A `leaky` process (4K a tick, never freed) makes at least one
`malloc` event every tick it runs.

Memory stays bounded: at most 65536 events wait between two publishes (the oldest
of a bigger burst are dropped, and a `lost` line says how many) and the stream keeps
its newest 65536 lines; a reader whose place was dropped gets a `lost` line and goes
on from the oldest line kept. A read-only 400 MiB mapping read in one `touch` makes
such a burst: 102400 zero-page faults, no frame, no commit charge.
"""
import errno
import fcntl
import os
import re
import select
import subprocess
import threading
import time

import pytest

LINE = re.compile(r"(\d+) (\d+) (\S+)(?: (.*))?")


def tick(m):
    return int(m.read("clock").splitlines()[0].split()[1])


def size(m):
    return os.stat(m / "trace").st_size


def drain(fd):
    """Read a non-blocking fd until EAGAIN; returns the bytes."""
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError as e:
            assert e.errno == errno.EAGAIN
            return data
        assert chunk, "EOF on a live trace"
        data += chunk


def read_from(m, offset):
    fd = os.open(m / "trace", os.O_RDONLY | os.O_NONBLOCK)
    try:
        os.lseek(fd, offset, os.SEEK_SET)
        return drain(fd)
    finally:
        os.close(fd)


def parse(data: bytes):
    out = []
    for line in data.decode().splitlines():
        match = LINE.fullmatch(line)
        assert match, f"not a trace line: {line!r}"
        out.append((int(match.group(1)), int(match.group(2)), match.group(3), match.group(4) or ""))
    return out


@pytest.fixture
def leaky(machine):
    return machine.spawn("drip", "workload=leaky", "size=4K", "limit=4M")


def test_a_nonblocking_read_at_the_end_fails_with_eagain(machine, leaky):
    m = machine
    m.step(2)
    fd = os.open(m / "trace", os.O_RDONLY | os.O_NONBLOCK)
    try:
        data = drain(fd)
        assert len(data) == size(m), "st_size is the stream's length"
        with pytest.raises(BlockingIOError) as e:
            os.read(fd, 4096)
        assert e.value.errno == errno.EAGAIN
        m.step(1)
        more = drain(fd)
        assert more and {t for t, *_ in parse(more)} == {tick(m)}
    finally:
        os.close(fd)


def test_every_line_is_tick_pid_event_details_in_tick_order(machine, leaky):
    m = machine
    t0 = tick(m)
    mark = size(m)
    pid = m.spawn("plain")
    a = int(m.pctl(pid, "malloc 100"), 16)
    m.pctl(pid, f"free {a:#x}")
    m.step(3)
    events = parse(read_from(m, 0))
    ticks = [t for t, *_ in events]
    assert ticks == sorted(ticks), "ticks never go back"
    assert ticks[-1] == t0 + 3
    assert (t0, leaky, "spawn", "drip workload=leaky") in events
    mine = [(t, e, d) for t, p, e, d in parse(read_from(m, mark)) if p == pid]
    assert (t0, "spawn", "plain") in mine
    assert (t0, "malloc", f"{a:#x} size=100 pool=0") in mine
    assert (t0, "free", f"{a:#x} size=100") in mine
    for t in range(t0 + 1, t0 + 4):
        drip = [e for tt, p, e, d in events if tt == t and p == leaky]
        assert "malloc" in drip and "fault" in drip, (t, drip)


@pytest.mark.parametrize("catch_up", ["until EAGAIN", "st_size bytes"])
def test_a_blocked_reader_gets_the_new_ticks(machine, leaky, catch_up):
    m = machine
    m.step(1)
    t0 = tick(m)
    if catch_up == "until EAGAIN":
        fd = os.open(m / "trace", os.O_RDONLY | os.O_NONBLOCK)
        drain(fd)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    else:
        fd = os.open(m / "trace", os.O_RDONLY)
        want, got = size(m), 0
        while got < want:
            got += len(os.read(fd, want - got))
    got_lines = []

    def reader():
        buf = b""
        while True:
            chunk = os.read(fd, 4096)            # blocks until the next tick is published
            if not chunk:
                return
            buf += chunk
            complete, _, buf = buf.rpartition(b"\n")
            if complete:
                got_lines.extend(parse(complete + b"\n"))
            if any(t == t0 + 5 for t, *_ in got_lines):
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        thread.join(0.3)
        assert thread.is_alive(), "the read at the end of the stream returned without new events"
        assert got_lines == []
        m.step(5)
        thread.join(10)
        assert not thread.is_alive(), "the blocked reader was not woken by new ticks"
    finally:
        if thread.is_alive():
            m.step(5)                            # wake it whatever happened, then let it go
            thread.join(10)
        os.close(fd)
    ticks = sorted({t for t, *_ in got_lines})
    assert ticks == list(range(t0 + 1, t0 + 6)), ticks
    for t in ticks:
        assert (leaky, "malloc") in {(p, e) for tt, p, e, _ in got_lines if tt == t}


def test_st_size_grows_with_steps_like_tail_f_sees_it(machine, leaky):
    m = machine
    m.step(1)
    first = size(m)
    before = read_from(m, 0)
    assert len(before) == first
    t0 = tick(m)
    m.step(4)
    second = size(m)
    assert second > first
    new = read_from(m, first)
    assert len(new) == second - first
    assert {t for t, *_ in parse(new)} == {t0 + 1, t0 + 2, t0 + 3, t0 + 4}
    assert read_from(m, 0) == before + new, "what was there stays: the stream only grows"
    assert size(m) == second, "reading does not move the end"
    m.step(1)
    assert size(m) > second


def read_until(pipe, data, want_len, deadline_s=20):
    """Read a pipe until it has want_len bytes (or the deadline passes, or EOF)."""
    deadline = time.monotonic() + deadline_s
    while len(data) < want_len and time.monotonic() < deadline:
        ready, _, _ = select.select([pipe], [], [], 0.5)
        if ready:
            chunk = os.read(pipe.fileno(), 65536)
            if not chunk:
                break
            data += chunk
    return data


def test_tail_f_follows_the_stream(machine, leaky):
    """GNU tail -f prints the last line (read backwards from st_size), then polls the size
    (-s: how often; a FUSE file gets no inotify events) and prints what was added."""
    m = machine
    m.step(1)
    t0 = tick(m)
    mark = size(m)
    last = read_from(m, 0).splitlines(keepends=True)[-1]
    tail = subprocess.Popen(["tail", "-n", "1", "-s", "0.05", "-f", str(m / "trace")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        got = read_until(tail.stdout, b"", len(last))
        assert got == last, "tail printed the stream's last line: it is following from there"
        m.step(3)
        new = read_from(m, mark)
        assert {t for t, *_ in parse(new)} == {t0 + 1, t0 + 2, t0 + 3}
        got = read_until(tail.stdout, got, len(last) + len(new))
        assert got == last + new
    finally:
        tail.kill()
        tail.wait()


def test_notify_low_makes_every_process_scavenge_on_its_next_tick(machine):
    """A process with 100 freed 1016-byte objects (one free chunk 0x540000-0x559000 kept
    from the top by a pinned block) has 24 whole free pages; on the tick after `notify
    low` its heap scavenges itself."""
    m = machine
    pid = m.spawn("cache")
    ptrs = [int(m.pctl(pid, "malloc 1016"), 16) for _ in range(100)]
    m.pctl(pid, "malloc 16")
    for p in ptrs:
        m.pctl(pid, f"free {p:#x}")
    other = m.spawn("idle")
    users = sorted(p for p in m.pids() if m.status(p).get("VmSize"))
    rss0 = m.status(pid)["VmRSS"]
    t0 = tick(m)
    mark = size(m)

    m.ctl("notify low")
    assert m.kmsg_tail()[0].endswith(f"notify: low memory: {len(users)} processes notified")
    assert m.status(pid)["VmRSS"] == rss0, "nothing happens before the process runs"
    m.step(1)

    events = parse(read_from(m, mark))
    assert (t0, 0, "notify", f"level=low processes={len(users)}") in events
    scavenged = {p: d for t, p, e, d in events
                 if e == "scavenge" and "reason=notify-low" in d and t == t0 + 1}
    assert sorted(scavenged) == users
    assert scavenged[pid] == "reason=notify-low areas=2 heap_pages=24 stack_pages=0"
    assert scavenged[other] == "reason=notify-low areas=0 heap_pages=0 stack_pages=0"
    assert m.status(pid)["VmRSS"] == rss0 - 24 * 4

    mark = size(m)
    m.step(1)
    assert not [d for t, p, e, d in parse(read_from(m, mark)) if "notify" in d], \
        "one notification, one scavenge"


def test_notify_takes_low_or_critical(machine):
    m = machine
    mark = size(m)
    code, reason = m.rejected("notify medium")
    assert code == errno.EINVAL and "low or critical" in reason
    assert "low or critical" in m.kmsg_tail()[0]
    pid = m.spawn("victim")
    m.ctl("notify critical")
    m.step(1)
    assert (pid, "scavenge", "reason=notify-critical areas=0 heap_pages=0 stack_pages=0") in \
        [(p, e, d) for _, p, e, d in parse(read_from(m, mark))]


def test_notify_low_makes_web_drop_the_oldest_quarter_of_its_cache(machine):
    """web caches responses in pool 0 (hint long) and its requests' objects in pool 1:
    the trace's pool-0 mallocs less their frees are the cache, oldest first. On the tick
    after `notify low` it scavenges, then evicts len(cache) // 4 entries, oldest first."""
    m = machine
    mark = size(m)
    pid = m.spawn("web", "workload=web")
    m.step(60)
    cache = {}                                        # ptr -> order cached
    for t, p, e, d in parse(read_from(m, mark)):
        if p != pid:
            continue
        if e == "malloc" and d.endswith(" pool=0"):
            cache[int(d.split()[0], 16)] = len(cache)
        elif e == "free":
            cache.pop(int(d.split()[0], 16), None)
    assert len(cache) >= 8, "60 ticks of traffic cached something"
    oldest = sorted(cache, key=cache.get)[:len(cache) // 4]

    mark = size(m)
    m.ctl("notify low")
    m.step(1)
    mine = [(e, d) for t, p, e, d in parse(read_from(m, mark)) if p == pid]
    start = next(i for i, (e, d) in enumerate(mine) if e == "scavenge")
    assert mine[start][1].startswith("reason=notify-low ")
    end = next(i for i, (e, d) in enumerate(mine) if e == "cache-drop")
    assert mine[end][1] == f"entries={len(cache) // 4} level=low"
    evicted = [int(d.split()[0], 16) for e, d in mine[start + 1:end] if e == "free"]
    assert evicted == oldest


# ---------------------------------------------------------------------------
# bursts: bounded memory, and readers told what they missed
# ---------------------------------------------------------------------------

CAPACITY = 65536                # the trace keeps at most this many lines (and events per publish)
BURST = 102400                  # pages in 400 MiB: one read fault each


def burst(m, pid):
    """One command that faults BURST pages (reads of a read-only mapping: zero page only,
    no frames, no commit charge). Returns the mapping's address."""
    a = m.mmap(pid, "400M prot=r")
    m.pctl(pid, f"touch {a:#x} 400M")
    return a


def test_a_burst_larger_than_the_buffer_keeps_its_newest_events_and_says_how_many_went(small):
    m = small
    pid = m.spawn("burst")
    mark = size(m)
    a = burst(m, pid)
    lines = read_from(m, mark).decode().splitlines()
    lost = [ln for ln in lines if " lost " in ln]
    assert lost == [f"0 0 lost {BURST - CAPACITY} events (more than {CAPACITY} in one tick or "
                    f"command)"]
    faults = [ln for ln in lines if f" {pid} fault " in ln]
    assert len(faults) == CAPACITY
    assert faults[0] == f"0 {pid} fault {a + (BURST - CAPACITY) * 4096:#x} read zero"
    assert faults[-1] == f"0 {pid} fault {a + (BURST - 1) * 4096:#x} read zero"
    assert lines.index(lost[0]) < lines.index(faults[0])


def overrun(m):
    """Reader A reads everything at boot; two bursts later, reader B (which read all of
    the first burst) and A both fell out of the ring. Returns (lines A read, lines B read,
    what A reads now, what B reads now)."""
    fa = os.open(m / "trace", os.O_RDONLY | os.O_NONBLOCK)
    fb = os.open(m / "trace", os.O_RDONLY | os.O_NONBLOCK)
    try:
        pid = m.spawn("burst")
        seen_a = drain(fa).decode().splitlines()
        burst(m, pid)
        seen_b = drain(fb).decode().splitlines()
        burst(m, pid)
        return seen_a, seen_b, drain(fa).decode().splitlines(), drain(fb).decode().splitlines()
    finally:
        os.close(fa)
        os.close(fb)


def test_a_reader_overrun_by_bursts_goes_on_from_the_oldest_line_kept(small):
    seen_a, seen_b, now_a, now_b = overrun(small)
    # The second burst published a lost line and CAPACITY faults: the ring now holds the
    # newest CAPACITY lines, the faults; both readers go on from the first of them.
    for now in (now_a, now_b):
        assert len(now) == 1 + CAPACITY
        assert re.fullmatch(r"0 0 lost \d+ events \(dropped from the 65536-line buffer "
                            r"before this reader reached them\)", now[0]), now[0]
        assert all(" fault " in ln for ln in now[1:])
    assert now_a[1:] == now_b[1:]


def test_a_reader_overrun_by_bursts_is_told_exactly_how_many_lines_it_missed(small):
    seen_a, seen_b, now_a, now_b = overrun(small)
    # The stream so far: what B read (all of it up to the second burst), then the second
    # burst's lost line and its CAPACITY faults. Each reader missed what it neither read
    # before nor reads now.
    total = len(seen_b) + 1 + CAPACITY
    for seen, now in ((seen_a, now_a), (seen_b, now_b)):
        missed = total - len(seen) - (len(now) - 1)
        assert now[0].startswith(f"0 0 lost {missed} events "), (missed, now[0])
