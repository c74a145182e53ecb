"""What replaying a Valgrind Lackey trace must cost, computed from the trace alone.

    python tests/data/lackey_expect.py tests/data/lackey.trace.gz

A Lackey trace (valgrind --tool=lackey --trace-mem=yes) has one access a line:
`I  ADDR,SIZE` (instruction fetch), ` L ADDR,SIZE` (load), ` S ADDR,SIZE` (store),
` M ADDR,SIZE` (modify: a load and a store by one instruction); lines starting
with `==` are Valgrind's own. With 4 KiB pages and demand paging of anonymous
memory, each page costs:

  - 1 fault on its first touch (a read maps the shared zero page; a write takes a
    frame);
  - 1 more if that first touch was a read (I or L) and the page is written later
    (S or M): the write must replace the zero page with a frame of its own.

An M counts as a write (the CPU reports a read-modify-write's fault as a write).
An access that straddles a page boundary touches both pages. Resident pages (RSS)
are the pages ever written: a page only read maps the zero page, which no RSS counts.

Nothing here comes from memfs: it reads the text and counts.
"""
from __future__ import annotations

import gzip
import json
import sys

PAGE = 4096


def lines(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        yield from f


def expect(path, first: int | None = None) -> dict:
    """accesses (lines), touches (page touches: a straddling access is two),
    faults, pages touched, pages written (RSS) and RSS in kB, and the runs of adjacent
    pages touched (start, end addresses); of the whole trace, or of its first `first`
    page touches only (where a replay stands part-way)."""
    first_touch_read: dict[int, bool] = {}       # page -> was its first touch a read?
    written: set[int] = set()
    faults = accesses = touches = 0
    for line in lines(path):
        if line.startswith("==") or not line.strip():
            continue
        kind, where = line.split()
        addr_text, size_text = where.split(",")
        if kind not in ("I", "L", "S", "M"):
            raise ValueError(f"not a Lackey access: {line!r}")
        addr, size = int(addr_text, 16), int(size_text)
        write = kind in ("S", "M")
        accesses += 1
        for page in range(addr // PAGE, (addr + size - 1) // PAGE + 1):
            if first is not None and touches == first:
                break
            touches += 1
            if page not in first_touch_read:
                faults += 1
                first_touch_read[page] = not write
            elif write and first_touch_read[page] and page not in written:
                faults += 1                      # the zero page gives way to a frame
            if write:
                written.add(page)
        if first is not None and touches == first:
            break
    runs: list[list[int]] = []
    for page in sorted(first_touch_read):
        if runs and runs[-1][1] == page * PAGE:
            runs[-1][1] += PAGE
        else:
            runs.append([page * PAGE, (page + 1) * PAGE])
    return {"accesses": accesses, "touches": touches, "faults": faults,
            "pages": len(first_touch_read), "rss_pages": len(written),
            "rss_kb": len(written) * PAGE // 1024, "runs": [tuple(r) for r in runs]}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: lackey_expect.py TRACE[.gz]")
    result = expect(sys.argv[1])
    result["runs"] = [f"{lo:x}-{hi:x}" for lo, hi in result["runs"]]
    print(json.dumps(result, indent=1))
