"""Page-replacement policies on short reference strings, with every fault count worked out by hand.

Each policy is checked twice: the pure class (engine/reclaim/limit.py), driven
the way a resident-set limit drives it (a page in the set is a hit; any other
page is a fault, and a full set first gives up the policy's victim), and
through the machine, where a process under `limit` plays the same string: a
trace replay (one access a tick) or touch commands.

The definitions used for the tables (limit.py's docstring):

    FIFO   evict the page loaded first; hits change nothing
    LRU    evict the page whose last access is oldest
    CLOCK  a circle of frames in load order, one reference bit each, set by
           every access, the one that loads the page included; on a fault the
           hand clears set bits and moves on until it finds a clear bit; that
           page goes, the new page takes its frame (bit set), the hand moves
           past it. While frames are still free a fault just fills the next one.
    OPT    evict the page whose next use is farthest away (never again counts as
           infinitely far; among equals, the page loaded first)

Notation in the tables: `F` fault, `.` hit; frames are listed oldest load first
for FIFO, least recently used first for LRU, as the circle's slots s0 s1 s2
with `*` for a set bit and `^` under the hand for CLOCK.
"""
from __future__ import annotations

import numpy as np
import pytest

from engine.errors import InvalidArgument
from engine.reclaim.limit import Clock, Fifo, Lru, Opt
from engine.workloads import make
from vmm_common import PAGE, RW, event

BELADY = [1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5]
# The string of Silberschatz, Galvin & Gagne's Operating System Concepts (ch. 9/10).
OSC = [7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2, 1, 2, 0, 1, 7, 0, 1]
# Second chance pays off: page 2 is hit just before a fault that FIFO would evict it on.
SECOND = [1, 2, 3, 4, 2, 5, 2]
BASE = 0x10000000                      # page k of a string lives at BASE + k * PAGE


def play(policy, string, frames):
    """Drive a pure policy as a resident-set limit does; returns (faults, victims in order)."""
    faults, victims = 0, []
    for vpn in string:
        if vpn in policy:
            policy.hit(vpn)
            continue
        faults += 1
        while len(policy) >= frames:
            v = policy.victim()
            policy.forget(v)                       # evict_page: the page leaves the set
            victims.append(v)
        policy.load(vpn)
    return faults, victims


def make_policy(name, string):
    if name == "opt":
        return Opt(np.array(string, dtype=np.uint64), 0)
    return {"fifo": Fifo, "lru": Lru, "clock": Clock}[name]()


# ---------------------------------------------------------------------------
# the worked tables
# ---------------------------------------------------------------------------
#
# BELADY = 1 2 3 4 1 2 5 1 2 3 4 5
#
# FIFO, 3 frames                         FIFO, 4 frames
#   1 F [1]                                1 F [1]
#   2 F [1 2]                              2 F [1 2]
#   3 F [1 2 3]                            3 F [1 2 3]
#   4 F [2 3 4]      evict 1               4 F [1 2 3 4]
#   1 F [3 4 1]      evict 2               1 . [1 2 3 4]
#   2 F [4 1 2]      evict 3               2 . [1 2 3 4]
#   5 F [1 2 5]      evict 4               5 F [2 3 4 5]    evict 1
#   1 . [1 2 5]                            1 F [3 4 5 1]    evict 2
#   2 . [1 2 5]                            2 F [4 5 1 2]    evict 3
#   3 F [2 5 3]      evict 1               3 F [5 1 2 3]    evict 4
#   4 F [5 3 4]      evict 2               4 F [1 2 3 4]    evict 5
#   5 . [5 3 4]                            5 F [2 3 4 5]    evict 1
#   9 faults                               10 faults: more frames, more faults (Belady)
#
# LRU, 3 frames (LRU first)              LRU, 4 frames
#   1 2 3 F F F [1 2 3]                    1 2 3 4 F F F F [1 2 3 4]
#   4 F [2 3 4]      evict 1               1 . [2 3 4 1]
#   1 F [3 4 1]      evict 2               2 . [3 4 1 2]
#   2 F [4 1 2]      evict 3               5 F [4 1 2 5]    evict 3
#   5 F [1 2 5]      evict 4               1 . [4 2 5 1]
#   1 . [2 5 1]                            2 . [4 5 1 2]
#   2 . [5 1 2]                            3 F [5 1 2 3]    evict 4
#   3 F [1 2 3]      evict 5               4 F [1 2 3 4]    evict 5
#   4 F [2 3 4]      evict 1               5 F [2 3 4 5]    evict 1
#   5 F [3 4 5]      evict 2               8 faults (LRU is a stack algorithm: no anomaly)
#   10 faults
#
# CLOCK, 3 frames                        CLOCK, 4 frames
#   1 2 3 F F F [1* 2* 3*] hand s0         1 2 3 4 F F F F [1* 2* 3* 4*] hand s0
#   4 F clear 1 2 3, back at s0: evict 1   1 . 2 . (bits already set)
#       [4* 2 3] hand s1                   5 F clear all, evict 1: [5* 2 3 4] hand s1
#   1 F s1 clear: evict 2 [4* 1* 3] s2     1 F evict 2 [5* 1* 3 4] hand s2
#   2 F s2 clear: evict 3 [4* 1* 2*] s0    2 F evict 3 [5* 1* 2* 4] hand s3
#   5 F clear all, evict 4 [5* 1 2] s1     3 F evict 4 [5* 1* 2* 3*] hand s0
#   1 . [5* 1* 2]                          4 F clear all, evict 5 [4* 1 2 3] hand s1
#   2 . [5* 1* 2*]                         5 F evict 1 [4* 5* 2 3] hand s2
#   3 F clear 1 2 5, evict 1 [5 3* 2] s2   10 faults
#   4 F s2 clear: evict 2 [5 3* 4*] s0
#   5 . [5* 3* 4*]
#   9 faults
#
# OPT, 3 frames (next use in brackets, positions 0..11)
#   1 2 3 F F F
#   4 F  1[4] 2[5] 3[9]        evict 3 -> {1 2 4}
#   1 . 2 .
#   5 F  1[7] 2[8] 4[10]       evict 4 -> {1 2 5}
#   1 . 2 .
#   3 F  1[-] 2[-] 5[11]       1 and 2 never again: the first loaded, 1 -> {2 5 3}
#   4 F  2[-] 5[11] 3[-]       2 and 3 never again: 2 loaded first -> {5 3 4}
#   5 .
#   7 faults
# OPT, 4 frames
#   1 2 3 4 F F F F, 1 . 2 .
#   5 F  1[7] 2[8] 3[9] 4[10]  evict 4 -> {1 2 3 5}
#   1 . 2 . 3 .
#   4 F  1[-] 2[-] 3[-] 5[11]  evict 1 (loaded first) -> {2 3 5 4}
#   5 .
#   6 faults
#
# OSC = 7 0 1 2 0 3 0 4 2 3 0 3 2 1 2 0 1 7 0 1, 3 frames
#
#  pos page | FIFO         | LRU          | CLOCK               | OPT
#   0   7   | F [7]        | F [7]        | F [7*]              | F {7}
#   1   0   | F [7 0]      | F [7 0]      | F [7* 0*]           | F {7 0}
#   2   1   | F [7 0 1]    | F [7 0 1]    | F [7* 0* 1*] ^s0    | F {7 0 1}
#   3   2   | F [0 1 2] -7 | F [0 1 2] -7 | F [2* 0 1] ^s1 -7   | F -7 (7@17 0@4 1@13)
#   4   0   | .            | . [1 2 0]    | . [2* 0* 1]         | .
#   5   3   | F [1 2 3] -0 | F [2 0 3] -1 | F [2* 0 3*] ^s0 -1  | F -1 (0@6 1@13 2@8)
#   6   0   | F [2 3 0] -1 | . [2 3 0]    | . [2* 0* 3*]        | .
#   7   4   | F [3 0 4] -2 | F [3 0 4] -2 | F [4* 0 3] ^s1 -2   | F -0 (0@10 2@8 3@9)
#   8   2   | F [0 4 2] -3 | F [0 4 2] -3 | F [4* 2* 3] ^s2 -0  | .
#   9   3   | F [4 2 3] -0 | F [4 2 3] -0 | . [4* 2* 3*]        | .
#  10   0   | F [2 3 0] -4 | F [2 3 0] -4 | F [4 2 0*] ^s0 -3   | F -4 (2@12 3@11 4@-)
#  11   3   | .            | . [2 0 3]    | F [3* 2 0*] ^s1 -4  | .
#  12   2   | .            | . [0 3 2]    | . [3* 2* 0*]        | .
#  13   1   | F [3 0 1] -2 | F [3 2 1] -0 | F [3 1* 0] ^s2 -2   | F -3 (2@14 0@15 3@-)
#  14   2   | F [0 1 2] -3 | . [3 1 2]    | F [3 1* 2*] ^s0 -0  | .
#  15   0   | .            | F [1 2 0] -3 | F [0* 1* 2*] ^s1 -3 | .
#  16   1   | .            | . [2 0 1]    | .                   | .
#  17   7   | F [1 2 7] -0 | F [0 1 7] -2 | F [0 7* 2] ^s2 -1   | F -2 (0@18 1@19 2@-)
#  18   0   | F [2 7 0] -1 | . [1 7 0]    | . [0* 7* 2]         | .
#  19   1   | F [7 0 1] -2 | . [7 0 1]    | F [0* 7* 1*] ^s0 -2 | .
#  faults   | 15           | 12           | 14                  | 9
#
# SECOND = 1 2 3 4 2 5 2, 3 frames
#   FIFO:  1 2 3 F F F; 4 F -1 [2 3 4]; 2 .; 5 F -2 [3 4 5]; 2 F -3 [4 5 2]        6 faults
#   CLOCK: 1 2 3 F F F ^s0; 4 F clear all, -1 [4* 2 3] ^s1; 2 . [4* 2* 3];
#          5 F s1 set: clear, s2 clear: -3 [4* 2 5*] ^s0; 2 . [4* 2* 5*]           5 faults
#   LRU:   4 F -1 [2 3 4]; 2 . [3 4 2]; 5 F -3 [4 2 5]; 2 .                          5 faults
#   OPT:   4 F 1[-] 2[4] 3[-]: -1; 2 .; 5 F 2[6] 3[-] 4[-]: -3 (loaded before 4); 2 . 5 faults

CASES = [
    # (policy, string, frames, faults, victims in order)
    ("fifo", BELADY, 3, 9, [1, 2, 3, 4, 1, 2]),
    ("fifo", BELADY, 4, 10, [1, 2, 3, 4, 5, 1]),
    ("lru", BELADY, 3, 10, [1, 2, 3, 4, 5, 1, 2]),
    ("lru", BELADY, 4, 8, [3, 4, 5, 1]),
    ("clock", BELADY, 3, 9, [1, 2, 3, 4, 1, 2]),
    ("clock", BELADY, 4, 10, [1, 2, 3, 4, 5, 1]),
    ("opt", BELADY, 3, 7, [3, 4, 1, 2]),
    ("opt", BELADY, 4, 6, [4, 1]),
    ("fifo", OSC, 3, 15, [7, 0, 1, 2, 3, 0, 4, 2, 3, 0, 1, 2]),
    ("lru", OSC, 3, 12, [7, 1, 2, 3, 0, 4, 0, 3, 2]),
    ("clock", OSC, 3, 14, [7, 1, 2, 0, 3, 4, 2, 0, 3, 1, 2]),
    ("opt", OSC, 3, 9, [7, 1, 0, 4, 3, 2]),
    ("fifo", SECOND, 3, 6, [1, 2, 3]),
    ("clock", SECOND, 3, 5, [1, 3]),
    ("lru", SECOND, 3, 5, [1, 3]),
    ("opt", SECOND, 3, 5, [1, 3]),
]
IDS = [f"{p}-{'belady' if s is BELADY else 'osc' if s is OSC else 'second'}-{n}"
       for p, s, n, _, _ in CASES]


# ---------------------------------------------------------------------------
# the pure policies
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,string,frames,faults,victims", CASES, ids=IDS)
def test_policy_class_faults_and_victims_match_the_worked_table(name, string, frames, faults,
                                                                 victims):
    got_faults, got_victims = play(make_policy(name, string), string, frames)
    assert (got_faults, got_victims) == (faults, victims)


def test_beladys_anomaly_fifo_faults_more_with_more_frames():
    """The anomaly itself: FIFO on 1 2 3 4 1 2 5 1 2 3 4 5 faults 9 times with 3 frames and
    10 times with 4; LRU and OPT (stack algorithms) never fault more with more frames."""
    assert play(Fifo(), BELADY, 3)[0] == 9
    assert play(Fifo(), BELADY, 4)[0] == 10
    for name in ("lru", "opt"):
        counts = [play(make_policy(name, BELADY), BELADY, n)[0] for n in range(1, 6)]
        assert counts == sorted(counts, reverse=True), f"{name}: {counts}"


def test_clock_sets_the_bit_of_the_page_it_loads():
    """3 frames, 1 2 3 4: every bit is set when 4 faults (loads set bits), so the hand goes
    all the way round clearing them and evicts 1, ending on s1; the others keep clear bits.
    Then 5 evicts 2 at once (s1's bit is clear): no second trip."""
    c = Clock()
    assert play(c, [1, 2, 3, 4], 3) == (4, [1])
    assert c.circle == [4, 2, 3] and c.hand == 1
    assert c.pages == {4: 1, 2: 0, 3: 0}
    assert play(c, [5], 3) == (1, [2])
    assert c.circle == [4, 5, 3] and c.hand == 2


def test_opt_counts_a_page_the_future_does_not_hold_as_never_used_again():
    """The future is 1 2 3 1 2 with 2 frames; page 9 (not in it) gets INF. Playing 1 2 then
    the foreign 9: 1 is next used at 3 and 2 at 4, so 2 goes; then 3 (position 2) finds
    1@3 and 9@never: 9 goes."""
    o = Opt(np.array([1, 2, 3, 1, 2], dtype=np.uint64), 0)
    assert play(o, [1, 2], 2) == (2, [])
    assert play(o, [9], 2) == (1, [2])
    assert play(o, [3], 2) == (1, [9])


# ---------------------------------------------------------------------------
# through the machine: a trace replay under a limit
# ---------------------------------------------------------------------------

def write_trace(path, string, op="L"):
    path.write_text("".join(f" {op} {BASE + k * PAGE:x},8\n" for k in string))
    return str(path)


def replay(m, tmp_path, string, frames, policy, op="L"):
    trace = write_trace(tmp_path / "refs.trace", string, op)
    pid = m.tasks.spawn("rp", workload=make("replay", {"trace": trace, "rate": 1}))
    m.tasks.limit(pid, frames, policy)
    return pid


@pytest.mark.parametrize("name,string,frames,faults,victims", CASES, ids=IDS)
def test_replay_under_a_limit_faults_as_worked_out(small, tmp_path, invariants, name, string,
                                                   frames, faults, victims):
    """Loads only: each first touch maps the zero page, each eviction drops it again."""
    m = small
    pid = replay(m, tmp_path, string, frames, name)
    assert m.tasks.limit_view(pid)["faults"] == 0
    m.step(len(string) + 2)                       # one access a tick, then idle
    v = m.tasks.limit_view(pid)
    assert (v["faults"], v["evictions"], v["resident"]) == (faults, len(victims), frames)
    assert v["stuck"] == 0 and v["policy"] == name and v["frames"] == frames
    invariants(m)


def test_replay_step_by_step_fifo_belady_with_3_frames(small, tmp_path, invariants):
    """After each tick the fault count follows the FIFO table's F column: 1 2 3 4 1 2 5
    fault (7), 1 2 hit, 3 4 fault (9), 5 hits."""
    m = small
    pid = replay(m, tmp_path, BELADY, 3, "fifo")
    seen = []
    for _ in BELADY:
        m.step()
        seen.append(m.tasks.limit_view(pid)["faults"])
    assert seen == [1, 2, 3, 4, 5, 6, 7, 7, 7, 8, 9, 9]
    invariants(m)


@pytest.mark.parametrize("name", ["fifo", "lru", "clock", "opt"])
def test_replay_of_stores_swaps_the_evicted_pages_out_and_back(small, tmp_path, invariants, name):
    """With stores (M) the pages are anonymous: each eviction writes the page to swap (zswap
    or the device) and each later fault on it reads it back; the counts are the table's."""
    m = small
    out = event(m, "pswpout") + event(m, "zswpout")
    pid = replay(m, tmp_path, BELADY, 3, name, op="M")
    m.step(len(BELADY) + 1)
    v = m.tasks.limit_view(pid)
    expect = {"fifo": (9, 6), "lru": (10, 7), "clock": (9, 6), "opt": (7, 4)}[name]
    assert (v["faults"], v["evictions"]) == expect
    written = event(m, "pswpout") + event(m, "zswpout") - out
    assert written == expect[1]                  # each eviction wrote its (dirty) page once
    mm = m.tasks.procs[pid].mm
    assert mm.rss == 3 and mm.swap_ents == 5 - 3  # pages 1..5: three resident, two in swap
    invariants(m)


def test_opt_is_refused_for_a_process_that_replays_no_trace(small, invariants):
    m = small
    pid = m.tasks.spawn("p")
    with pytest.raises(InvalidArgument, match="opt"):
        m.tasks.limit(pid, 3, "opt")
    assert m.tasks.limit_view(pid) is None
    with pytest.raises(InvalidArgument, match="policy"):
        m.tasks.limit(pid, 3, "random")
    with pytest.raises(InvalidArgument, match="frames"):
        m.tasks.limit(pid, -1, "lru")
    invariants(m)


# ---------------------------------------------------------------------------
# through the machine: touch, write and read commands under a limit
# ---------------------------------------------------------------------------

def limited(m, frames, policy, pages=8):
    """A process whose only resident page (exec's stack page) is dropped first, so the
    limit starts from an empty set: (pid, base of an 8-page anonymous area)."""
    pid = m.tasks.spawn("lim")
    mm = m.tasks.procs[pid].mm
    m.tasks.madvise(pid, mm.start_stack, PAGE, "dontneed")
    assert mm.rss == 0
    base = m.tasks.mmap(pid, pages * PAGE, prot=RW)
    m.tasks.limit(pid, frames, policy)
    return pid, base


@pytest.mark.parametrize("name,string,frames,faults,victims",
                         [c for c in CASES if c[0] != "opt"],
                         ids=[i for i, c in zip(IDS, CASES) if c[0] != "opt"])
def test_touch_commands_under_a_limit_fault_as_worked_out(small, invariants, name, string,
                                                          frames, faults, victims):
    m = small
    pid, base = limited(m, frames, name)
    for k in string:
        m.tasks.touch(pid, base + k * PAGE, PAGE, True)
    v = m.tasks.limit_view(pid)
    assert (v["faults"], v["evictions"], v["resident"]) == (faults, len(victims), frames)
    mm = m.tasks.procs[pid].mm
    assert mm.rss == frames
    assert mm.swap_ents == len(set(string)) - frames   # every evicted page written, in swap
    invariants(m)


@pytest.mark.parametrize("name", ["fifo", "lru", "clock"])
def test_evicted_pages_keep_their_values(small, invariants, name):
    """Write a distinct value to each of 8 pages with room for 3: five go to swap. Reading
    them all back gives every value (each read of an evicted page is a fault and evicts
    another, whose value must survive in its turn)."""
    m = small
    pid, base = limited(m, 3, name)
    for k in range(8):
        m.tasks.write(pid, base + k * PAGE, 0xC0FFEE00 + k)
    assert m.tasks.limit_view(pid)["evictions"] == 5
    for _ in range(2):
        for k in (7, 0, 3, 6, 1, 5, 2, 4):
            assert m.tasks.read(pid, base + k * PAGE) == 0xC0FFEE00 + k
    assert m.tasks.procs[pid].mm.rss == 3
    invariants(m)


def test_read_only_touches_under_a_limit_drop_the_zero_page_without_swapping(small, invariants):
    """Pages only ever read map the shared zero page: evicting one just clears the entry."""
    m = small
    out = event(m, "pswpout") + event(m, "zswpout")
    pid, base = limited(m, 2, "lru")
    for k in (0, 1, 2, 0, 3):
        m.tasks.touch(pid, base + k * PAGE, PAGE, False)
    v = m.tasks.limit_view(pid)
    # LRU, 2 frames: 0 F, 1 F, 2 F -0, 0 F -1, 3 F -2: 5 faults, 3 evictions
    assert (v["faults"], v["evictions"]) == (5, 3)
    assert event(m, "pswpout") + event(m, "zswpout") == out
    assert m.tasks.procs[pid].mm.swap_ents == 0
    invariants(m)


def test_a_limit_on_a_busy_process_evicts_down_to_it_and_lifting_it_stops_evictions(small,
                                                                                   invariants):
    """8 written pages, then limit 3 (fifo): they enter in address order, so the 5 lowest go;
    the data survives; frames=0 lifts the limit and later touches evict nothing."""
    m = small
    pid = m.tasks.spawn("busy")
    mm = m.tasks.procs[pid].mm
    m.tasks.madvise(pid, mm.start_stack, PAGE, "dontneed")
    base = m.tasks.mmap(pid, 8 * PAGE, prot=RW)
    m.tasks.fill(pid, base, 8 * PAGE, seed=5)
    assert m.tasks.limit(pid, 3, "fifo") == 5
    assert mm.rss == 3 and mm.swap_ents == 5
    assert m.tasks.verify(pid, base, 8 * PAGE, seed=5) == 0
    assert mm.rss == 3
    invariants(m)
    assert m.tasks.limit(pid, 0, "fifo") == 0
    assert m.tasks.limit_view(pid) is None
    assert m.tasks.verify(pid, base, 8 * PAGE, seed=5) == 0
    assert mm.rss == 8 and mm.swap_ents == 0
    invariants(m)
