"""The event trace: what `trace` streams, one line an event.

Line format: `TICK PID EVENT DETAILS`, PID 0 for events of no process.

The engine records events cheaply while it works (a tuple appended to a
bounded deque, no formatting); at the end of every tick and every command the
machine publishes them: the pending events are formatted into lines and
appended to a ring of lines with absolute byte offsets, and blocked readers
are woken. Memory stays bounded twice over:

- between two publishes at most `capacity` events wait; if more arrive (one
  `touch` of a gigabyte faults 262144 pages), the oldest are dropped before
  they are ever formatted, and the stream gets a `lost` line saying how many;
- the ring keeps the newest `capacity` lines. A reader whose position fell
  out of the ring gets a `lost` line with the count it missed, then goes on
  from the oldest line still kept.

Offsets are absolute positions in the stream since boot, so `tail -f` (which
seeks near the end and then polls the growing size) and `cat` (which reads
from 0 and blocks at the end) both work. Readers wait on the trace's own
condition variable, never on the engine lock.
"""
from __future__ import annotations

import bisect
import threading
from collections import deque

CAPACITY = 65536


class TraceLog:
    def __init__(self, capacity: int = CAPACITY):
        self.capacity = capacity
        self.cv = threading.Condition(threading.Lock())
        self._pending: deque = deque(maxlen=capacity)   # (pid, event, detail) or faults
        self._recorded = 0                              # events ever recorded
        self._published = 0                             # events ever published or dropped
        self._lines: list[bytes] = []                   # the ring, oldest first
        self._offsets: list[int] = []                   # absolute offset of each line
        self._first_seq = 0                             # event number of _lines[0]
        self.end = 0                                    # absolute offset of the stream's end
        self.events = 0                                 # events in the stream so far (numbered)
        self.closed = False

    # ------------------------------------------------------------------
    # producing (engine lock held)
    # ------------------------------------------------------------------

    def emit(self, pid: int, event: str, detail: str = "") -> None:
        self._pending.append((pid, event, detail))
        self._recorded += 1

    def fault(self, pid: int, va: int, how: str) -> None:
        """A page fault: the hottest event, kept as numbers until published."""
        self._pending.append((pid, va, how))
        self._recorded += 1

    def publish(self, tick: int) -> None:
        """Format what was recorded since the last publish, stamped with tick; wake readers."""
        pending = self._pending
        if not pending:
            return
        dropped = self._recorded - self._published - len(pending)
        self._published = self._recorded
        out = []
        if dropped:
            out.append(f"{tick} 0 lost {dropped} events (more than {self.capacity} "
                       f"in one tick or command)\n".encode())
        prefix = f"{tick} "
        for pid, what, detail in pending:
            if type(what) is int:
                out.append(f"{prefix}{pid} fault {what:#x} {detail}\n".encode())
            elif detail:
                out.append(f"{prefix}{pid} {what} {detail}\n".encode())
            else:
                out.append(f"{prefix}{pid} {what}\n".encode())
        pending.clear()
        with self.cv:
            lines, offsets = self._lines, self._offsets
            end = self.end
            for line in out:
                lines.append(line)
                offsets.append(end)
                end += len(line)
            self.end = end
            self.events += len(out)
            extra = len(lines) - self.capacity
            if extra >= self.capacity // 4:          # trim in batches: amortised O(1)
                del lines[:extra]
                del offsets[:extra]
                self._first_seq += extra
            self.cv.notify_all()

    def close(self) -> None:
        """The machine stops: blocked readers return what they have (EOF after it)."""
        with self.cv:
            self.closed = True
            self.cv.notify_all()

    # ------------------------------------------------------------------
    # consuming (any thread; never under the engine lock)
    # ------------------------------------------------------------------

    def _read_locked(self, reader: "TraceReader", size: int) -> bytes:
        """Bytes for reader from its position (b"" at the end). Caller holds cv."""
        offsets = self._offsets
        pos = reader.pos
        if not offsets or pos >= self.end:
            return b""
        if pos < offsets[0]:
            # The reader's place was dropped from the ring: say so, and go on from
            # the oldest line kept. A reader that read sequentially (or started at 0)
            # knows its event number, so the count is exact.
            if reader.seq is not None:
                what = f"{self._first_seq - reader.seq} events"
            else:
                what = f"the events before offset {offsets[0]}"
            reader.pos, reader.seq = offsets[0], self._first_seq
            tick = self._lines[0].split(b" ", 1)[0].decode()
            note = (f"{tick} 0 lost {what} (dropped from the {self.capacity}-line buffer "
                    f"before this reader reached them)\n").encode()
            return note[:size]
        i = bisect.bisect_right(offsets, pos) - 1
        chunks, got = [], 0
        skip = pos - offsets[i]
        lines = self._lines
        while i < len(lines) and got < size:
            piece = lines[i][skip:skip + size - got]
            chunks.append(piece)
            got += len(piece)
            skip = 0
            i += 1
        reader.pos = pos + got
        # The event number of the line the next byte belongs to (at the end: the next line).
        reader.seq = self._first_seq + (len(lines) if reader.pos >= self.end
                                         else bisect.bisect_right(offsets, reader.pos) - 1)
        return b"".join(chunks)

    def read(self, reader: "TraceReader", offset: int, size: int, *, block: bool,
             wait_s: float = 0.2, interrupted=None) -> bytes | None:
        """Up to size bytes for reader at file offset; blocks until there are some.

        Blocking waits poll interrupted() every wait_s (a Ctrl-C on the reader
        raises InterruptedError). Returns None when block is False and nothing
        is there (EAGAIN), b"" once the machine stopped.
        """
        reader.seek_to(offset)
        with self.cv:
            while True:
                data = self._read_locked(reader, size)
                if data:
                    reader.expect = offset + len(data)
                    return data
                if self.closed:
                    return b""
                if not block:
                    return None
                self.cv.wait(wait_s)
                if interrupted is not None and interrupted():
                    raise InterruptedError

    def reader(self) -> "TraceReader":
        return TraceReader()


class TraceReader:
    """One open `trace`: where it is in the stream.

    `pos` is the absolute stream position the next byte comes from; `expect` is
    the file offset the kernel will pass if the reader did not seek (the two
    differ once a `lost` line was inserted). A read at another offset is a
    seek: the reader moves to that absolute position.
    """
    __slots__ = ("pos", "expect", "seq")

    def __init__(self):
        self.pos = 0
        self.expect = 0
        self.seq: int | None = 0

    def seek_to(self, offset: int) -> None:
        if offset != self.expect:
            self.pos = self.expect = offset
            self.seq = 0 if offset == 0 else None   # unknown until a read places it
