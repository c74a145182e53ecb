"""A process's heap and stack through the mount: malloc, free, realloc, memset, scavenge,
stack, guard, and what <pid>/heap shows.

Expected values are worked out by hand from the layout of a fresh process
(text 0x400000-0x500000, data 0x500000-0x540000, so the break starts at 0x540000;
[stack] 0x7ffffffde000-0x7ffffffff000 with exec's page 0x7fffffffe000 written:
VmRSS 4 kB) and the allocator's documented model (glibc's ptmalloc):

  chunk(n) = max(32, (n + 8 + 15) & ~15): a 16-byte header (prev_size, size) before
             the user pointer, the next chunk's prev_size word usable; with guard
             checks on, 16 more bytes of red zone.
  pool 0 grows by brk, asking for page_up(chunk + 32 + top_pad) (top_pad 128 KiB):
             the first malloc of a small block makes [heap] 0x540000-0x561000.
  malloc writes the chunk's header and the new top's header; free writes list links
             into memory already resident; nothing gives frames back below the trim
             threshold (128 KiB of top).
  scavenge gives back the whole pages inside each free area, past the 48 bytes of a
             free chunk's header, and the stack pages below the page holding sp - 128
             (the x86-64 red zone).
  mmap'd pools and blocks of 128K or more come top-down from 0x7ffff7fff000.
"""
import errno
import os
import random
import re

import pytest

PAGE = 4096
HEAP_START = 0x540000
STACK_TOP = 0x7FFFFFFFF000
MMAP_BASE = 0x7FFFF7FFF000
TOP_PAD = 128 << 10
FREE_HDR = 48


def chunk(n, guard=False):
    return max(32, (n + 8 + (16 if guard else 0) + 15) & ~15)


def page_up(x):
    return (x + PAGE - 1) // PAGE * PAGE


def page_down(x):
    return x // PAGE * PAGE


def rss(m, pid):
    return m.status(pid)["VmRSS"]


def heap_vma(m, pid):
    lines = [ln for ln in m.read(f"{pid}/maps").splitlines() if ln.endswith("[heap]")]
    assert len(lines) == 1, lines
    lo, hi = lines[0].split()[0].split("-")
    return int(lo, 16), int(hi, 16)


def pool_line(heap_text, pool, what):
    """The `  what ...` line of pool N in <pid>/heap."""
    block = heap_text.split(f"\npool {pool} ")[1].split("\n\n")[0]
    return next(ln.strip() for ln in block.splitlines() if ln.strip().startswith(what))


def live_table(heap_text):
    """address -> (size, chunk, pool, hint) from the live allocations table."""
    out = {}
    for ln in heap_text.split("live allocations:")[1].splitlines()[2:]:
        addr, size, csz, pool, hint, _tick = ln.split()
        out[int(addr, 16)] = (int(size), int(csz), pool, hint)
    return out


# ---------------------------------------------------------------------------
# scavenge: RSS falls, the heap's mapped size stays
# ---------------------------------------------------------------------------

def test_scavenge_after_freeing_many_small_objects_gives_back_whole_free_pages(machine):
    """100 objects of 1016 bytes (1024-byte chunks) fill [0x540000, 0x559000) exactly;
    a 16-byte pinned block (32-byte chunk) at 0x559000 keeps the freed ones away from the
    top, so free cannot shrink the break. The freed objects merge into one free chunk
    [0x540000, 0x559000): its whole pages past the 48-byte header are 0x541000-0x559000,
    24 pages = 96 kB. The top [0x559020, 0x561000) was never written: nothing to give."""
    m = machine
    pid = m.spawn("churn")
    assert m.pctl(pid, "brk") == hex(HEAP_START)
    assert rss(m, pid) == 4

    n, count = 1016, 100
    assert chunk(n) == 1024
    ptrs = [int(m.pctl(pid, f"malloc {n}"), 16) for _ in range(count)]
    assert ptrs == [HEAP_START + 16 + 1024 * i for i in range(count)], "consecutive chunks"
    for p in ptrs:                                   # the program writes its objects
        m.pctl(pid, f"memset {p:#x} {n}")
    pinned = int(m.pctl(pid, "malloc 16"), 16)
    pinned_chunk = HEAP_START + count * 1024
    assert pinned == pinned_chunk + 16

    heap_lo, heap_hi = HEAP_START, HEAP_START + page_up(1024 + 32 + TOP_PAD)
    assert (heap_lo, heap_hi) == (0x540000, 0x561000)
    assert heap_vma(m, pid) == (heap_lo, heap_hi)
    # Written: every page from 0x540000 through the one holding the pinned chunk and the
    # top's header (0x559000): 26 pages, plus exec's stack page.
    written = (pinned_chunk + 32 + 8) // PAGE - HEAP_START // PAGE + 1
    assert written == 26
    assert rss(m, pid) == 4 + 4 * written

    for p in random.Random(3).sample(ptrs, count):   # in any order: they all merge
        m.pctl(pid, f"free {p:#x}")
    assert rss(m, pid) == 4 + 4 * written, "free gives nothing back below the trim threshold"
    heap = m.read(f"{pid}/heap")
    top = heap_hi - (pinned_chunk + 32)
    assert pool_line(heap, 0, "free") == (f"free        {count * 1024 + top} bytes in 1 chunks "
                                          f"+ top {top}, largest {count * 1024}")
    assert pool_line(heap, 0, "in use") == "in use      32 bytes in 1 chunks"
    assert f"mapped {heap_hi - heap_lo} bytes" in heap
    maps_before = m.read(f"{pid}/maps")
    free_before = m.meminfo()["MemFree"]
    mark = m.trace_end()

    m.pctl(pid, "scavenge")

    released = (page_down(pinned_chunk) - page_up(HEAP_START + FREE_HDR)) // PAGE
    assert released == 24
    assert rss(m, pid) == 4 + 4 * (written - released) == 12
    assert m.meminfo()["MemFree"] == free_before + 4 * released
    assert m.read(f"{pid}/maps") == maps_before, "[heap] keeps its size"
    assert heap_vma(m, pid) == (heap_lo, heap_hi)
    after = m.read(f"{pid}/heap")
    assert f"pool 0 (main, brk): 1 segment, mapped {heap_hi - heap_lo} bytes" in after
    assert f"  segment {heap_lo:#x}-{heap_hi:#x}" in after
    assert f"scavenged {released} pages" in after
    assert m.kmsg_tail()[0].endswith(f"scavenge: {pid} (churn): {released} pages given back")
    lines = m.trace_since(mark)
    assert any(re.fullmatch(rf"\d+ {pid} scavenge reason=command areas=2 "
                            rf"heap_pages={released} stack_pages=0", ln) for ln in lines), lines

    # The scavenged pages are address space still: reusing them faults them in again.
    again = int(m.pctl(pid, "malloc 8000"), 16)
    assert again == HEAP_START + 16, "the free chunk is reused from its start"
    m.pctl(pid, f"memset {again:#x} 8000")
    # [0x540010, 0x541f50): 0x540000 kept its header page; 0x541000 is written again.
    assert rss(m, pid) == 12 + 4


# ---------------------------------------------------------------------------
# programmer errors: refused, reported, heap unchanged
# ---------------------------------------------------------------------------

def heap_without_error_count(text):
    return re.sub(r" errors \d+ ", " errors _ ", text)


def test_double_free_is_refused_reported_and_leaves_the_heap_consistent(machine):
    m = machine
    pid = m.spawn("dbl")
    a = int(m.pctl(pid, "malloc 100"), 16)
    b = int(m.pctl(pid, "malloc 200"), 16)
    assert (a, b) == (HEAP_START + 16, HEAP_START + 16 + chunk(100))
    m.pctl(pid, f"free {a:#x}")
    heap_before = m.read(f"{pid}/heap")
    status_before = m.read(f"{pid}/status")
    mark = m.trace_end()

    code, reason = m.rejected(f"free {a:#x}", f"{pid}/ctl")

    assert code == errno.EINVAL
    assert "double free" in reason
    assert any(f"heap: {pid} (dbl): free({a:#x}): double free" in ln for ln in m.kmsg_tail(2))
    errors = [ln for ln in m.trace_since(mark) if ln.split()[1:3] == [str(pid), "heap-error"]]
    assert len(errors) == 1 and f"free({a:#x}): double free" in errors[0], errors
    heap_after = m.read(f"{pid}/heap")
    assert heap_without_error_count(heap_after) == heap_without_error_count(heap_before)
    assert "errors 0 " in heap_before and "errors 1 " in heap_after
    assert m.read(f"{pid}/status") == status_before

    # The heap still works: the freed chunk is reused (its exact size class), and freed.
    assert int(m.pctl(pid, "malloc 100"), 16) == a
    m.pctl(pid, f"free {a:#x}")
    m.pctl(pid, f"free {b:#x}")
    assert "live allocations: 0 " in m.read(f"{pid}/heap")


def test_free_of_a_pointer_malloc_never_returned_is_refused(machine):
    m = machine
    pid = m.spawn("wild")
    a = int(m.pctl(pid, "malloc 100"), 16)
    before = heap_without_error_count(m.read(f"{pid}/heap"))
    for bogus in (a + 8, 0x12345670):
        code, reason = m.rejected(f"free {bogus:#x}", f"{pid}/ctl")
        assert code == errno.EINVAL
        assert "invalid pointer" in reason and "double free" not in reason
    assert heap_without_error_count(m.read(f"{pid}/heap")) == before
    m.pctl(pid, f"free {a:#x}")


def test_guard_on_refuses_a_memset_past_the_end_and_into_freed_memory(machine):
    m = machine
    pid = m.spawn("guarded", "guard")
    a = int(m.pctl(pid, "malloc 100"), 16)
    b = int(m.pctl(pid, "malloc 100"), 16)
    assert b - a == chunk(100, guard=True) == 128, "each chunk carries a 16-byte red zone"
    m.pctl(pid, f"memset {a:#x} 100")                 # the whole block: fine
    rss_before = rss(m, pid)

    code, reason = m.rejected(f"memset {a:#x} 101", f"{pid}/ctl")
    assert code == errno.EINVAL
    assert "heap-buffer-overflow" in reason and "1 bytes past the end of the 100-byte block" in reason
    assert any("heap-buffer-overflow" in ln for ln in m.kmsg_tail(2))
    code, reason = m.rejected(f"memset {a - 8:#x} 8", f"{pid}/ctl")
    assert code == errno.EINVAL and "heap-buffer-underflow" in reason

    m.pctl(pid, f"free {a:#x}")
    code, reason = m.rejected(f"memset {a:#x} 10", f"{pid}/ctl")
    assert code == errno.EINVAL and "heap-use-after-free" in reason
    assert rss(m, pid) == rss_before, "nothing was written"
    assert "guard checks on" in m.read(f"{pid}/heap").splitlines()[0]
    assert "errors 3 " in m.read(f"{pid}/heap")


def test_guard_off_lets_a_memset_run_past_the_end(machine):
    m = machine
    pid = m.spawn("loose")
    m.pctl(pid, "guard off")
    a = int(m.pctl(pid, "malloc 100"), 16)
    m.pctl(pid, f"memset {a:#x} 5000")                # overruns into the next page
    assert rss(m, pid) == 4 + 8, "the overrun wrote 0x540000 and 0x541000"
    assert "guard checks off" in m.read(f"{pid}/heap").splitlines()[0]


def test_guard_is_chosen_before_the_first_malloc(machine):
    m = machine
    pid = m.spawn("late")
    m.pctl(pid, "guard on")
    m.pctl(pid, "guard off")                          # no heap yet: either way
    m.pctl(pid, "malloc 10")
    code, reason = m.rejected("guard on", f"{pid}/ctl")
    assert code == errno.EINVAL and "before the first malloc" in reason
    code, _ = m.rejected("guard maybe", f"{pid}/ctl")
    assert code == errno.EINVAL
    assert "guard checks off" in m.read(f"{pid}/heap")


# ---------------------------------------------------------------------------
# realloc and what <pid>/heap lists
# ---------------------------------------------------------------------------

def test_realloc_shrinks_and_grows_in_place_or_moves(machine):
    m = machine
    pid = m.spawn("resize")
    a = int(m.pctl(pid, "malloc 100"), 16)           # chunk 112 at 0x540000
    b = int(m.pctl(pid, "malloc 100"), 16)           # chunk 112 at 0x540070
    assert b == a + 112

    assert m.pctl(pid, f"realloc {b:#x} 3000") == hex(b), "the last block grows into the top"
    assert m.pctl(pid, f"realloc {a:#x} 40") == hex(a), "shrinking stays in place"
    # a now has a 48-byte chunk; the 64 bytes behind it are free, then b: 2000 bytes do not
    # fit there, so the block moves to the top, after b's 3008-byte chunk.
    moved = int(m.pctl(pid, f"realloc {a:#x} 2000"), 16)
    assert moved == b - 16 + chunk(3000) + 16
    live = live_table(m.read(f"{pid}/heap"))
    assert live == {b: (3000, chunk(3000), "0", "long"),
                    moved: (2000, chunk(2000), "0", "long")}
    # The old block went back: malloc of its whole 112 bytes reuses it.
    assert int(m.pctl(pid, "malloc 100"), 16) == a
    assert m.kmsg_tail()[0].endswith(f"malloc: {pid} (resize): 100 bytes at {a:#x}")


def test_heap_file_lists_pools_and_live_allocations(machine):
    m = machine
    pid = m.spawn("lister")
    assert "no heap yet" in m.read(f"{pid}/heap")
    small = int(m.pctl(pid, "malloc 100"), 16)
    short = int(m.pctl(pid, "malloc 5000 hint=short"), 16)
    big = int(m.pctl(pid, "malloc 200K"), 16)
    arena = int(m.pctl(pid, "malloc 300 pool=3"), 16)

    seg = 1 << 20                                     # an mmap pool grows by 1 MiB segments
    big_len = page_up((200 << 10) + 16)               # its own mapping: header + block
    assert small == HEAP_START + 16
    assert short == MMAP_BASE - seg + 16
    assert big == MMAP_BASE - seg - big_len + 16
    assert arena == MMAP_BASE - seg - big_len - seg + 16

    text = m.read(f"{pid}/heap")
    assert text.splitlines()[:2] == [f"heap of {pid} (lister): guard checks off",
                                     "malloc 4 free 0 errors 0 scavenged 0 pages"]
    assert "pool 0 (main, brk): 1 segment, mapped 135168 bytes" in text
    assert f"pool 1 (short, mmap): 1 segment, mapped {seg} bytes" in text
    assert f"  segment {MMAP_BASE - seg:#x}-{MMAP_BASE:#x}" in text
    assert f"pool 3 (arena 3, mmap): 1 segment, mapped {seg} bytes" in text
    assert pool_line(text, 1, "in use") == f"in use      {chunk(5000)} bytes in 1 chunks"
    assert f"own mappings (>= 128K): 1 blocks, {big_len} bytes" in text
    assert (f"live allocations: 4 ({100 + 5000 + (200 << 10) + 300} bytes requested, "
            f"{chunk(100) + chunk(5000) + big_len + chunk(300)} bytes in chunks)") in text
    assert live_table(text) == {
        small: (100, chunk(100), "0", "long"),
        short: (5000, chunk(5000), "1", "short"),
        big: (200 << 10, big_len, "mmap", "long"),
        arena: (300, chunk(300), "3", "long"),
    }
    # Each block's header page (and the pools' top headers) were written: the exec page,
    # 0x540000, the short pool's first two pages (5008 bytes + the top header), the big
    # block's first page, pool 3's first page.
    assert rss(m, pid) == 4 * (1 + 1 + 2 + 1 + 1)
    aligned = int(m.pctl(pid, "malloc 64 align=4096"), 16)
    assert aligned % 4096 == 0 and HEAP_START < aligned < HEAP_START + 135168
    assert live_table(m.read(f"{pid}/heap"))[aligned][:1] == (64,)


@pytest.mark.parametrize("command,words", [
    ("malloc 0", "between 1 and"),
    ("malloc 100 align=24", "power of two"),
    ("malloc 100 hint=forever", "short or long"),
    ("malloc 100 pool=8", "pools are numbered 0 to 7"),
    ("malloc lots", "lots"),
    ("realloc 0x540010", "missing argument"),
    ("stack 0", "between 1 byte and 1G"),
])
def test_bad_heap_commands_are_refused(machine, command, words):
    pid = machine.spawn("picky")
    code, reason = machine.rejected(command, f"{pid}/ctl")
    assert code == errno.EINVAL, reason
    assert words in reason, reason
    assert words in machine.kmsg_tail()[0]


# ---------------------------------------------------------------------------
# the stack
# ---------------------------------------------------------------------------

def test_a_shallower_stack_leaves_pages_that_scavenge_gives_back(machine):
    """exec wrote 0x7fffffffe000 and sp is there (depth 4 KiB). `stack 1M` moves sp to
    0x7fffffeff000 and writes [0x7fffffeff000, 0x7fffffffe000): 255 new pages; [stack]
    grows down to 0x7fffffeff000. `stack 8K` moves sp up to 0x7fffffffd000 and writes
    nothing. scavenge frees below the page holding sp - 128 (0x7fffffffc000):
    [0x7fffffeff000, 0x7fffffffc000), 253 pages; 3 stay (0x7fffffffc000-0x7ffffffff000)."""
    m = machine
    pid = m.spawn("deep")
    assert rss(m, pid) == 4
    exec_page = STACK_TOP - PAGE

    m.pctl(pid, "stack 1M")
    sp = STACK_TOP - (1 << 20)
    written = (exec_page - sp) // PAGE
    assert written == 255
    assert rss(m, pid) == 4 + 4 * written
    assert f"{sp:x}-{STACK_TOP:x} rw-p" in m.read(f"{pid}/maps")
    assert f"sp {sp:#x}, depth {1 << 20} bytes" in m.read(f"{pid}/heap")

    m.pctl(pid, "stack 8K")
    sp8 = STACK_TOP - 8192
    assert rss(m, pid) == 4 + 4 * written, "returning leaves the pages resident"
    assert f"sp {sp8:#x}, depth 8192 bytes" in m.read(f"{pid}/heap")

    m.pctl(pid, "scavenge")
    keep_from = page_down(sp8 - 128)
    released = (keep_from - sp) // PAGE
    assert released == 253
    assert rss(m, pid) == 4 + 4 * written - 4 * released == 12
    assert f"{sp:x}-{STACK_TOP:x} rw-p" in m.read(f"{pid}/maps"), "[stack] keeps its size"
    assert m.kmsg_tail()[0].endswith(f"scavenge: {pid} (deep): {released} pages given back")

    # Deeper again, to 0x7fffffffb000: [0x7fffffffb000, 0x7fffffffd000) is written; the
    # red zone's page 0x7fffffffc000 stayed, so only 0x7fffffffb000 faults back in.
    m.pctl(pid, "stack 16K")
    assert rss(m, pid) == 12 + 4


def test_a_stack_deeper_than_8m_overflows_and_kills_the_process(machine):
    m = machine
    pid = m.spawn("overflow")
    fd = os.open(m / f"{pid}/ctl", os.O_RDWR)
    try:
        with pytest.raises(OSError) as e:
            os.write(fd, b"stack 9M\n")
    finally:
        os.close(fd)
    assert e.value.errno == errno.EFAULT
    assert pid not in m.pids()
    assert any(f"overflow[{pid}]: segfault at" in ln for ln in m.kmsg_tail(3))


# ---------------------------------------------------------------------------
# the heap's own stores see whatever happened to its pages in between
# ---------------------------------------------------------------------------

def test_a_malloc_after_fork_copies_the_shared_heap_page(machine):
    """After fork both processes map 0x540000 (malloc's headers) copy-on-write; the
    parent's next malloc writes a header there, so the parent gets a copy of its own."""
    m = machine
    pid = m.spawn("forker")
    m.pctl(pid, "malloc 100")
    child = int(m.pctl(pid, "fork"))
    (shared,) = m.pagemap(pid, HEAP_START)
    assert m.pagemap(child, HEAP_START) == [shared]
    b = int(m.pctl(pid, "malloc 100"), 16)
    assert b == HEAP_START + 16 + chunk(100)
    (mine,) = m.pagemap(pid, HEAP_START)
    (theirs,) = m.pagemap(child, HEAP_START)
    pfn = (1 << 55) - 1
    assert theirs & pfn == shared & pfn, "the child keeps the original frame"
    assert mine & pfn != shared & pfn, "the parent's store copied the page"
    # the child's heap is a copy too: its next malloc gets the same address
    assert int(m.pctl(child, "malloc 100"), 16) == b


def test_a_malloc_after_madvise_dontneed_faults_the_page_back(machine):
    m = machine
    pid = m.spawn("advised")
    a = int(m.pctl(pid, "malloc 100"), 16)
    assert rss(m, pid) == 8
    m.pctl(pid, f"madvise {HEAP_START:#x} 4096 dontneed")
    assert rss(m, pid) == 4
    m.pctl(pid, "malloc 100")                         # writes headers into 0x540000 again
    assert rss(m, pid) == 8
    m.pctl(pid, f"madvise {HEAP_START:#x} 4096 dontneed")
    m.pctl(pid, f"free {a:#x}")                       # free writes its links there too
    assert rss(m, pid) == 8


def test_a_malloc_into_a_read_only_heap_page_is_a_segfault(machine):
    m = machine
    pid = m.spawn("readonly")
    m.pctl(pid, "malloc 100")
    m.pctl(pid, f"mprotect {HEAP_START:#x} 4096 r")
    fd = os.open(m / f"{pid}/ctl", os.O_RDWR)
    try:
        with pytest.raises(OSError) as e:
            os.write(fd, b"malloc 100\n")
    finally:
        os.close(fd)
    assert e.value.errno == errno.EFAULT
    assert pid not in m.pids()
    assert any(f"readonly[{pid}]: segfault at 540" in ln for ln in m.kmsg_tail(3))


# ---------------------------------------------------------------------------
# packaging: `pip install .` must ship the heap (and the workloads that drive it)
# ---------------------------------------------------------------------------

def test_every_engine_and_memfs_package_is_in_the_distribution():
    import tomllib
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(init.parent.relative_to(root).parts)
             for top in ("engine", "memfs") for init in (root / top).rglob("__init__.py")}
    assert {"engine.heap", "engine.workloads"} <= found
    assert sorted(found - listed) == []


def test_the_idle_scavenger_visits_an_idle_process_every_50_ticks(machine):
    """On a tick when a CPU ran nothing, the idle scavenger lets one process scavenge
    (round robin; here the only one), then waits clock.scavenge_period = 50 ticks."""
    m = machine
    pid = m.spawn("sleepy")
    ptrs = [int(m.pctl(pid, "malloc 1016"), 16) for _ in range(100)]
    m.pctl(pid, "malloc 16")
    for p in ptrs:
        m.pctl(pid, f"free {p:#x}")
    assert rss(m, pid) == 108
    mark = m.trace_end()
    m.step(50)                                        # one period: exactly one visit
    visits = [ln for ln in m.trace_since(mark) if f" {pid} scavenge reason=idle " in ln]
    assert len(visits) == 1, visits
    assert visits[0].endswith("areas=2 heap_pages=24 stack_pages=0")
    assert rss(m, pid) == 108 - 24 * 4
    first = int(visits[0].split()[0])
    mark = m.trace_end()
    m.step(50)
    visits = [ln for ln in m.trace_since(mark) if f" {pid} scavenge reason=idle " in ln]
    assert [int(v.split()[0]) for v in visits] == [first + 50]
    assert visits[0].endswith("areas=2 heap_pages=0 stack_pages=0"), "nothing left to give"
