"""The event trace (engine/trace.py): line format, absolute offsets, seeks, the bounded
ring and its `lost` lines, blocking and non-blocking reads, close; and what the machine
publishes into it.

A TraceLog(capacity=N) formats pending events into lines `TICK PID EVENT DETAILS`
only when published; at most N events wait between two publishes (older ones are
dropped and counted in a `TICK 0 lost K events ...` line), and the ring keeps the
newest N lines, trimming once N/4 extra lines have piled up. Line lengths below
are counted by hand from that format.

Blocking reads are tested with a reader thread: the test only checks what the read
returned and that it had not returned before data existed (a blocked read cannot
return while there is nothing to read), never how long anything took.
"""
import threading

import pytest

from engine.trace import TraceLog
from vmm_common import FIRST_PID, PAGE, RW, STACK_TOP

WAIT = 10.0                        # generous join timeout: only a hang would reach it


def read_all(log, reader=None, offset=0, size=1 << 20):
    reader = reader or log.reader()
    return log.read(reader, offset, size, block=False)


def numbered(log, first, last):
    """Publish events first..last one at a time: line k is `k k ev n=k` (tick k, pid k)."""
    for k in range(first, last + 1):
        log.emit(k, "ev", f"n={k}")
        log.publish(k)


def line(k) -> bytes:
    return f"{k} {k} ev n={k}\n".encode()


# ---------------------------------------------------------------------------
# format and offsets
# ---------------------------------------------------------------------------

def test_events_become_lines_only_when_published():
    log = TraceLog()
    log.emit(7, "malloc", "0x540010 size=1 pool=0")
    log.emit(0, "tick")
    log.fault(7, 0x7FFFFFFFE000, "write anon")
    assert log.end == 0 and read_all(log) is None
    log.publish(3)
    data = read_all(log)
    assert data == (b"3 7 malloc 0x540010 size=1 pool=0\n"
                    b"3 0 tick\n"
                    b"3 7 fault 0x7fffffffe000 write anon\n")
    assert log.end == len(data) == 34 + 9 + 36
    assert log.events == 3
    log.publish(4)                                     # nothing pending: nothing changes
    assert log.end == len(data) and log.events == 3


def test_offsets_are_absolute_and_a_read_at_another_offset_seeks():
    """Lines 1-3 are 11 bytes each (`k k ev n=k\\n`): line 2 starts at offset 11, line 3
    at 22, the stream ends at 33."""
    log = TraceLog()
    numbered(log, 1, 3)
    assert log.end == 33
    r = log.reader()
    assert log.read(r, 0, 4, block=False) == b"1 1 "
    assert log.read(r, 4, 100, block=False) == b"ev n=1\n2 2 ev n=2\n3 3 ev n=3\n"
    assert log.read(r, 33, 100, block=False) is None   # at the end, nothing new
    assert log.read(r, 11, 11, block=False) == line(2)  # a seek back re-reads
    assert log.read(r, 22, 11, block=False) == line(3)
    assert log.read(r, 0, 100, block=False) == line(1) + line(2) + line(3)
    numbered(log, 4, 4)
    assert log.read(r, 33, 100, block=False) == line(4)
    assert log.read(r, 30, 3, block=False) == b"=3\n"  # tail: a seek near the end


# ---------------------------------------------------------------------------
# the bounds: lost lines
# ---------------------------------------------------------------------------

def test_more_events_than_capacity_between_publishes_are_dropped_and_counted():
    """Capacity 8, 11 events in one go: the first 3 are never formatted; the stream
    gets a `lost 3 events` line, then events 3..10."""
    log = TraceLog(capacity=8)
    for k in range(11):
        log.emit(1, "ev", f"n={k}")
    log.publish(5)
    lines = read_all(log).decode().splitlines()
    assert lines[0] == "5 0 lost 3 events (more than 8 in one tick or command)"
    assert lines[1:] == [f"5 1 ev n={k}" for k in range(3, 11)]
    for k in range(4):                                 # the next publish is whole again
        log.emit(1, "ev", f"m={k}")
    log.publish(6)
    assert log.read(log.reader(), 0, 1 << 20, block=False).decode().count("lost") == 1


def test_the_ring_keeps_the_newest_lines_trimming_in_batches():
    """Capacity 8 trims when 2 (= 8/4) extra lines are there: after 9 lines all 9 are
    kept; the 10th trims to 8 (the oldest two go)."""
    log = TraceLog(capacity=8)
    numbered(log, 1, 9)
    assert len(log._lines) == 9 and log._first_seq == 0
    numbered(log, 10, 10)
    assert len(log._lines) == 8 and log._first_seq == 2
    assert log._lines[0] == line(3)
    assert log._offsets[0] == 22                       # two 11-byte lines went


def test_a_slow_reader_gets_a_lost_line_with_the_exact_count():
    """Capacity 8; lines 0 and 1 are there, the reader reads line 0 only, then lines 2-20
    are published one by one. Trims happen at 10, 12, ..., 20 lines: the ring now starts
    at line 12 (first_seq 12, tick 12). The reader, whose next line was line 1, missed
    lines 1-11: 11 events. Then it goes on from line 12, in order, to the end."""
    log = TraceLog(capacity=8)
    numbered(log, 0, 1)
    r = log.reader()
    first = log.read(r, 0, len(line(0)), block=False)
    assert first == line(0)
    numbered(log, 2, 20)
    assert log._first_seq == 12 and len(log._lines) == 9
    note = log.read(r, len(first), 1 << 20, block=False)
    assert note == b"12 0 lost 11 events (dropped from the 8-line buffer before this reader reached them)\n"
    rest = log.read(r, len(first) + len(note), 1 << 20, block=False)
    assert rest == b"".join(line(k) for k in range(12, 21))
    assert log.read(r, len(first) + len(note) + len(rest), 100, block=False) is None


def test_a_reader_that_caught_up_and_then_fell_behind_gets_the_exact_count():
    """As above, but the reader read everything there was (line 0) before lines 1-20
    came: it is at the end of the stream, its next event is line 1. It missed lines
    1-11: 11 events (today the line says 12)."""
    log = TraceLog(capacity=8)
    numbered(log, 0, 0)
    r = log.reader()
    first = log.read(r, 0, 1 << 20, block=False)
    assert first == line(0)
    numbered(log, 1, 20)
    note = log.read(r, len(first), 1 << 20, block=False)
    assert note == b"12 0 lost 11 events (dropped from the 8-line buffer before this reader reached them)\n"


def test_a_reader_that_seeked_into_dropped_lines_is_told_where_the_stream_resumes():
    """A fresh reader seeking to offset 5 (dropped: the ring starts at line 12) does not
    know how many events it missed: it is told the offset the kept lines start at."""
    log = TraceLog(capacity=8)
    numbered(log, 0, 20)
    start = log._offsets[0]
    assert start == 10 * 11 + 2 * 14                   # lines 0-9: 11 bytes, 10-11: 14
    r = log.reader()
    note = log.read(r, 5, 1 << 20, block=False)
    assert note == (f"12 0 lost the events before offset {start} (dropped from the 8-line "
                    f"buffer before this reader reached them)\n").encode()
    assert log.read(r, 5 + len(note), 1 << 20, block=False).startswith(line(12))


def test_a_short_read_of_a_lost_line_is_cut_to_size():
    log = TraceLog(capacity=8)
    numbered(log, 0, 20)
    r = log.reader()
    assert log.read(r, 5, 6, block=False) == b"12 0 l"


# ---------------------------------------------------------------------------
# blocking
# ---------------------------------------------------------------------------

def blocked_read(log, offset, **kwargs):
    """Start a thread doing a blocking read; returns (thread, result dict)."""
    out = {}

    def run():
        try:
            out["data"] = log.read(log.reader(), offset, 1 << 20, block=True, **kwargs)
        except BaseException as e:                     # noqa: BLE001 - handed to the test
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def test_a_blocking_read_waits_until_a_publish_wakes_it():
    log = TraceLog()
    numbered(log, 1, 1)
    t, out = blocked_read(log, 11)
    t.join(0.05)
    assert t.is_alive() and out == {}                  # nothing to read: still blocked
    log.emit(2, "ev", "n=2")
    assert t.is_alive()                                # recorded is not published
    log.publish(2)
    t.join(WAIT)
    assert not t.is_alive()
    assert out == {"data": line(2)}


def test_a_blocking_read_returns_at_once_when_data_is_there():
    log = TraceLog()
    numbered(log, 1, 2)
    t, out = blocked_read(log, 0)
    t.join(WAIT)
    assert out == {"data": line(1) + line(2)}


def test_a_non_blocking_read_with_nothing_new_returns_none():
    log = TraceLog()
    assert log.read(log.reader(), 0, 100, block=False) is None
    numbered(log, 1, 1)
    assert log.read(log.reader(), 11, 100, block=False) is None


def test_close_ends_blocked_readers_with_eof():
    log = TraceLog()
    numbered(log, 1, 1)
    t1, out1 = blocked_read(log, 11)
    t2, out2 = blocked_read(log, 11)
    t1.join(0.05)
    assert t1.is_alive() and t2.is_alive()
    log.close()
    t1.join(WAIT)
    t2.join(WAIT)
    assert out1 == out2 == {"data": b""}
    assert log.read(log.reader(), 11, 100, block=False) == b""   # EOF, not EAGAIN
    assert log.read(log.reader(), 0, 100, block=False) == line(1)  # what is kept stays


def test_an_interrupted_blocking_read_raises():
    log = TraceLog()
    t, out = blocked_read(log, 0, wait_s=0.01, interrupted=lambda: True)
    t.join(WAIT)
    assert isinstance(out.get("error"), InterruptedError)


# ---------------------------------------------------------------------------
# what the machine publishes
# ---------------------------------------------------------------------------

def test_each_command_publishes_its_events_stamped_with_the_tick(small):
    """spawn writes the top stack page (a write fault), then logs the spawn. malloc(1)
    grows the break to BASE + 33 pages, writes the new top's size word at
    BASE + 32 + 8 = 0x540028 (the page's one fault: the chunk's own size word at
    0x540008 is on the same page) and reports the block. Each command publishes at its
    end, so the lines are readable at once, stamped with tick 0."""
    m = small
    pid = m.tasks.spawn("a")
    lines = read_all(m.trace).decode().splitlines()
    assert lines == [f"0 {pid} fault {STACK_TOP - PAGE:#x} write anon", f"0 {pid} spawn a"]
    m.tasks.malloc(pid, 1)
    lines = read_all(m.trace).decode().splitlines()[2:]
    assert lines == [f"0 {pid} brk 0x561000",
                     f"0 {pid} fault 0x540028 write anon",
                     f"0 {pid} malloc 0x540010 size=1 pool=0"]
    m.step(2)
    m.tasks.free(pid, 0x540010)
    assert read_all(m.trace).decode().splitlines()[-1] == f"2 {pid} free 0x540010 size=1"


def test_a_command_with_more_events_than_the_capacity_loses_the_oldest(small):
    """With a 16-event trace, touching 40 fresh pages records 40 faults in one command:
    24 are dropped and counted; the 16 newest (pages 24-39) are published."""
    m = small
    m.trace = m.vmm.trace = TraceLog(capacity=16)
    pid = m.tasks.spawn("a")
    a = m.tasks.mmap(pid, 40 * PAGE, prot=RW)
    start = m.trace.end
    m.tasks.touch(pid, a, 40 * PAGE, write=True)
    lines = read_all(m.trace, offset=start).decode().splitlines()
    assert lines[0] == "0 0 lost 24 events (more than 16 in one tick or command)"
    assert lines[1:] == [f"0 {pid} fault {a + k * PAGE:#x} write anon" for k in range(24, 40)]
    assert pid == FIRST_PID


def test_shutdown_closes_the_trace(small):
    small.shutdown()
    assert small.trace.closed
    assert small.trace.read(small.trace.reader(), 0, 100, block=False) == b""


@pytest.mark.parametrize("capacity", [4, 5, 7])
def test_the_ring_never_holds_more_than_capacity_plus_a_quarter(capacity):
    log = TraceLog(capacity=capacity)
    for k in range(50):
        log.emit(1, "e")
        log.publish(k)
        assert len(log._lines) < capacity + max(1, capacity // 4)
        assert len(log._lines) == len(log._offsets)
    assert log._first_seq + len(log._lines) == log.events == 50
