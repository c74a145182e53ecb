"""Reclaim on the small machine: kswapd, direct reclaim, file pages, swappiness, drop_caches,
the OOM killer, PSI, and low-memory notifications that make processes scavenge first.

Each scenario ends with check_invariants. Sizes: the small machine has 13825
pages (54 MiB) to hand out and 128 MiB of swap on /dev/vdb behind zswap.
"""
from __future__ import annotations

import re

import pytest

from engine.errors import OutOfMemory
from vmm_common import MIB, PAGE, RW, event

SWAP_LINES = "swap:\n  - {name: /dev/vdb, size: 128M}\n"


def events(m, *names):
    d = dict(m.vmstat())
    return {n: d[n] for n in names}


def hog(m, size, seed, name="hog", **spawn):
    pid = m.tasks.spawn(name, **spawn)
    a = m.tasks.mmap(pid, size, prot=RW)
    m.tasks.fill(pid, a, size, seed=seed)
    return pid, a


def zones(m):
    return [z for z in m.zones if z.managed_pages]


@pytest.fixture
def noswap(machine_from_yaml, builtin_yaml):
    """The small machine built without any swap area."""
    text = builtin_yaml("small")
    assert SWAP_LINES in text
    return machine_from_yaml(text.replace(SWAP_LINES, ""))


# ---------------------------------------------------------------------------
# kswapd and direct reclaim
# ---------------------------------------------------------------------------

def test_direct_reclaim_stalls_the_allocation_and_is_counted(small, invariants):
    m = small
    pid, a = hog(m, 60 * MIB, seed=1)
    ev = events(m, "pgscan_direct", "pgsteal_direct", "allocstall_dma32", "allocstall_normal",
                "pgscan_kswapd")
    assert ev["pgscan_direct"] >= ev["pgsteal_direct"] > 0
    assert ev["allocstall_dma32"] + ev["allocstall_normal"] > 0
    assert ev["pgscan_kswapd"] == 0                 # no tick has run: kswapd had no turn
    invariants(m)


def test_kswapd_raises_every_zone_to_its_high_watermark(small, invariants):
    m = small
    pid, a = hog(m, 60 * MIB, seed=1)
    assert any(z.free_pages < z.wmark_low for z in zones(m)), \
        "direct reclaim leaves a zone between min and low: kswapd's cue"
    before = events(m, "pgscan_kswapd", "pgsteal_kswapd", "pageoutrun")
    m.step(3)
    after = events(m, "pgscan_kswapd", "pgsteal_kswapd", "pageoutrun")
    for z in zones(m):
        assert z.free_pages >= z.wmark_high, f"{z.name}: {z.free_pages} < high {z.wmark_high}"
    assert after["pageoutrun"] == before["pageoutrun"] + 1
    assert after["pgscan_kswapd"] >= after["pgsteal_kswapd"] > before["pgsteal_kswapd"]
    invariants(m)
    m.step(5)                                      # balanced: kswapd sleeps
    assert events(m, "pgscan_kswapd", "pageoutrun") == {
        "pgscan_kswapd": after["pgscan_kswapd"], "pageoutrun": after["pageoutrun"]}
    assert m.tasks.verify(pid, a, 60 * MIB, seed=1) == 0
    invariants(m)


def test_a_kswapd_tick_looks_at_no_more_than_its_scan_budget_and_goes_on_next_tick(
        small, invariants, monkeypatch):
    """Right after a fill every page is referenced, so a pass finds little to reclaim per
    page looked at. A tick looks at no more than KSWAPD_SCAN pages (pgscan + pgrefill; here
    64 instead of 16384 so the small machine shows it); kswapd stays awake without counting
    a failure, goes on the next tick, and in the end balances every zone in one run
    (pageoutrun + 1)."""
    from engine.reclaim import vmscan
    m = small
    pid, a = hog(m, 60 * MIB, seed=1)
    monkeypatch.setattr(vmscan, "KSWAPD_SCAN", 64)
    looked = ("pgscan_kswapd", "pgrefill")
    before = events(m, *looked, "pageoutrun")
    m.step(1)
    one = events(m, *looked)
    assert 0 < sum(one[k] - before[k] for k in looked) <= 64
    assert m.reclaim.kswapd_active[0] and m.reclaim.kswapd_failures[0] == 0
    ticks = 1
    while m.reclaim.kswapd_active[0] and ticks < 2000:
        prev = events(m, *looked)
        m.step(1)
        now = events(m, *looked)
        assert sum(now[k] - prev[k] for k in looked) <= 64
        ticks += 1
    assert ticks > 2, "a budget of 64 needs several ticks"
    for z in zones(m):
        assert z.free_pages >= z.wmark_high, f"{z.name}: {z.free_pages} < high {z.wmark_high}"
    assert events(m, "pageoutrun")["pageoutrun"] == before["pageoutrun"] + 1
    assert m.reclaim.kswapd_failures[0] == 0
    assert m.tasks.verify(pid, a, 60 * MIB, seed=1) == 0
    invariants(m)


def test_kswapd_stays_asleep_while_every_zone_is_above_low(small, invariants):
    m = small
    hog(m, 20 * MIB, seed=1)
    m.step(10)
    assert events(m, "pageoutrun", "pgscan_kswapd") == {"pageoutrun": 0, "pgscan_kswapd": 0}
    invariants(m)


def test_clean_file_pages_are_dropped_and_read_back_from_the_file(small, invariants):
    """A shared file mapping written page by page (dirty page cache): pressure writes each
    back before dropping it, and reading it again (a major fault) gives the written value."""
    m = small
    m.tasks.create_file("/data", 8 * MIB)
    pid = m.tasks.spawn("f")
    f = m.tasks.mmap(pid, 8 * MIB, prot=RW, shared=True, file="/data")
    n = 8 * MIB // PAGE
    for k in range(n):
        m.tasks.write(pid, f + k * PAGE, 1000 + k)
    assert m.meminfo().dirty == n
    hog(m, 60 * MIB, seed=1, name="other")
    cached = m.vmm.files["/data"].nr_cached
    assert cached < n, "pressure should have dropped some of the file's pages"
    assert event(m, "pgsteal_file") >= n - cached
    assert m.meminfo().dirty <= cached
    invariants(m)
    majflt = m.tasks.procs[pid].majflt
    assert all(m.tasks.read(pid, f + k * PAGE) == 1000 + k for k in range(n))
    assert m.tasks.procs[pid].majflt > majflt       # read back from the file
    invariants(m)


def test_swappiness_0_reclaims_page_cache_before_any_anonymous_page(small, invariants):
    m = small
    m.sysctl_write("swappiness", "0")
    m.tasks.create_file("/data", 16 * MIB)
    pid = m.tasks.spawn("reader")
    f = m.tasks.mmap(pid, 16 * MIB, prot=RW, file="/data")
    m.tasks.touch(pid, f, 16 * MIB, False)
    m.tasks.munmap(pid, f, 16 * MIB)               # 4096 clean, unmapped cached pages
    assert m.vmm.files["/data"].nr_cached == 4096
    other, b = hog(m, 44 * MIB, seed=1, name="other")
    ev = events(m, "pswpout", "zswpout", "pgsteal_file", "pgsteal_anon")
    assert m.vmm.files["/data"].nr_cached < 4096
    assert ev["pgsteal_file"] > 0
    assert ev == {**ev, "pswpout": 0, "zswpout": 0, "pgsteal_anon": 0}
    assert m.tasks.verify(other, b, 44 * MIB, seed=1) == 0
    invariants(m)


def test_swappiness_200_swaps_before_dropping_page_cache(small, invariants):
    m = small
    m.sysctl_write("swappiness", "200")
    m.tasks.create_file("/data", 16 * MIB)
    pid = m.tasks.spawn("reader")
    f = m.tasks.mmap(pid, 16 * MIB, prot=RW, file="/data")
    m.tasks.touch(pid, f, 16 * MIB, False)
    m.tasks.munmap(pid, f, 16 * MIB)
    other, b = hog(m, 44 * MIB, seed=1, name="other")
    assert m.vmm.files["/data"].nr_cached == 4096
    assert event(m, "pgsteal_file") == 0 and event(m, "pgsteal_anon") > 0
    assert m.tasks.verify(other, b, 44 * MIB, seed=1) == 0
    invariants(m)


# ---------------------------------------------------------------------------
# drop_caches
# ---------------------------------------------------------------------------

def test_drop_caches_drops_clean_unmapped_page_cache_only(small, invariants):
    """A shared mapping of the 64-page /data: pages 0-31 read, 32-39 written (dirty), 40-63
    never touched (not cached). Pages 0-15 are unmapped: drop_caches 1 drops exactly those
    16 (clean and unmapped); 16-31 (mapped) and 32-39 (dirty) stay: 24 cached, 8 dirty."""
    m = small
    m.tasks.create_file("/data", 64 * PAGE)
    pid = m.tasks.spawn("q")
    f = m.tasks.mmap(pid, 64 * PAGE, prot=RW, shared=True, file="/data")
    m.tasks.touch(pid, f, 32 * PAGE, False)
    m.tasks.touch(pid, f + 32 * PAGE, 8 * PAGE, True)
    m.tasks.munmap(pid, f, 16 * PAGE)
    data = m.vmm.files["/data"]
    assert (data.nr_cached, data.nr_dirty) == (40, 8)
    m.sysctl_write("drop_caches", "1")
    assert (data.nr_cached, data.nr_dirty) == (24, 8)
    assert event(m, "drop_pagecache") == 1
    assert "drop_caches: 1 (16 pages dropped)" in m.kmsg_lines()[-1]
    invariants(m)
    # unmapped dirty pages stay too (drop_caches does not write back)
    m.tasks.munmap(pid, f + 16 * PAGE, 48 * PAGE)
    m.sysctl_write("drop_caches", "3")
    assert (data.nr_cached, data.nr_dirty) == (8, 8)
    invariants(m)


def test_drop_caches_leaves_anonymous_memory_and_swap_alone(small, invariants):
    m = small
    pid, a = hog(m, 64 * MIB, seed=2)
    mm = m.tasks.procs[pid].mm
    before = (mm.rss_anon, mm.swap_ents, m.meminfo().swap_free)
    m.sysctl_write("drop_caches", "1")
    assert (mm.rss_anon, mm.swap_ents, m.meminfo().swap_free) == before
    invariants(m)


# ---------------------------------------------------------------------------
# the OOM killer
# ---------------------------------------------------------------------------

@pytest.fixture(params=["no swap configured", "swapped off"])
def no_swap(request, noswap, small):
    if request.param == "swapped off":
        small.swapoff("/dev/vdb")
        m = small
    else:
        m = noswap
    assert m.meminfo().swap_total == 0
    return m


def oom_lines(m):
    return [re.sub(r"^\[\s*[\d.]+\] ", "", line) for line in m.kmsg_lines()]


def test_oom_kills_the_process_with_the_highest_oom_score(no_swap, invariants):
    """keeper (-1000, 20 MiB), big (20 MiB), then grower asks for 25 MiB: 65 MiB do not fit
    in 54. big has the most points; keeper is never a candidate. grower goes on."""
    m = no_swap
    keeper, ka = hog(m, 20 * MIB, seed=1, name="keeper", oom_score_adj=-1000)
    big, ba = hog(m, 20 * MIB, seed=2, name="big")
    grower = m.tasks.spawn("grower")
    scores = {p: m.proc_view(p).oom_score for p in (keeper, big, grower)}
    assert scores[keeper] == 0 and scores[big] > scores[grower]
    ga = m.tasks.mmap(grower, 25 * MIB, prot=RW)
    m.tasks.fill(grower, ga, 25 * MIB, seed=3)
    assert not m.has_pid(big)
    assert m.has_pid(keeper) and m.has_pid(grower)
    assert event(m, "oom_kill") == 1
    lines = oom_lines(m)
    start = next(i for i, x in enumerate(lines) if "invoked oom-killer" in x)
    report = lines[start:]
    assert report[0].startswith("grower invoked oom-killer: gfp_mask=")
    assert report[0].endswith("oom_score_adj=0")
    assert "Tasks state (memory values in pages):" in report
    header = report.index("Tasks state (memory values in pages):") + 1
    assert report[header].split() == ["[", "pid", "]", "uid", "tgid", "total_vm", "rss",
                                      "rss_anon", "rss_file", "rss_shmem", "pgtables_bytes",
                                      "swapents", "oom_score_adj", "name"]
    rows = {int(r.split("]")[0].strip("[ ")): r.split() for r in report[header + 1:]
            if r.startswith("[")}
    assert set(rows) == {keeper, big, grower}
    assert rows[keeper][-2:] == ["-1000", "keeper"] and rows[big][-2:] == ["0", "big"]
    assert int(rows[big][4]) >= 20 * MIB // PAGE          # rss
    assert any(x.startswith("oom-kill:constraint=CONSTRAINT_NONE") and f"task=big,pid={big}" in x
               for x in report)
    killed = [x for x in report if x.startswith("Out of memory: Killed process")]
    assert len(killed) == 1
    assert killed[0].startswith(f"Out of memory: Killed process {big} (big) total-vm:")
    assert "anon-rss:2048" in killed[0] and "oom_score_adj:0" in killed[0]
    invariants(m)
    assert m.tasks.verify(keeper, ka, 20 * MIB, seed=1) == 0
    assert m.tasks.verify(grower, ga, 25 * MIB, seed=3) == 0
    invariants(m)


def test_the_faulting_process_dies_when_it_is_the_worst_and_never_one_at_minus_1000(
        no_swap, invariants):
    m = no_swap
    keeper, ka = hog(m, 30 * MIB, seed=1, name="keeper", oom_score_adj=-1000)
    grower = m.tasks.spawn("grower")
    ga = m.tasks.mmap(grower, 40 * MIB, prot=RW)
    with pytest.raises(OutOfMemory, match=f"OOM killer chose {grower} \\(grower\\)"):
        m.tasks.fill(grower, ga, 40 * MIB, seed=3)
    assert not m.has_pid(grower) and m.has_pid(keeper)
    assert event(m, "oom_kill") == 1
    assert any(x.startswith(f"Out of memory: Killed process {grower} (grower)")
               for x in oom_lines(m))
    invariants(m)
    assert m.tasks.verify(keeper, ka, 30 * MIB, seed=1) == 0
    invariants(m)


def test_oom_score_adj_makes_a_small_process_the_victim(no_swap, invariants):
    m = no_swap
    big, ba = hog(m, 20 * MIB, seed=1, name="big")
    small_, sa = hog(m, 4 * MIB, seed=2, name="small")
    m.tasks.set_oom_score_adj(small_, 1000)
    assert m.proc_view(small_).oom_score > m.proc_view(big).oom_score
    grower = m.tasks.spawn("grower")
    ga = m.tasks.mmap(grower, 30 * MIB, prot=RW)
    m.tasks.fill(grower, ga, 30 * MIB, seed=3)            # 54 MiB in all: one must go
    assert not m.has_pid(small_) and m.has_pid(big) and m.has_pid(grower)
    assert event(m, "oom_kill") == 1
    assert any(x.startswith(f"Out of memory: Killed process {small_} (small)") and
               x.endswith("oom_score_adj:1000") for x in oom_lines(m))
    assert m.tasks.verify(big, ba, 20 * MIB, seed=1) == 0
    assert m.tasks.verify(grower, ga, 30 * MIB, seed=3) == 0
    invariants(m)


def test_with_everyone_at_minus_1000_nothing_is_killed(no_swap, invariants):
    m = no_swap
    keeper, ka = hog(m, 30 * MIB, seed=1, name="keeper", oom_score_adj=-1000)
    other = m.tasks.spawn("other", oom_score_adj=-1000)
    oa = m.tasks.mmap(other, 40 * MIB, prot=RW)
    with pytest.raises(OutOfMemory, match="no process the OOM killer may kill"):
        m.tasks.fill(other, oa, 40 * MIB, seed=2)
    assert m.has_pid(keeper) and m.has_pid(other)
    assert event(m, "oom_kill") == 0
    assert any("Out of memory and no killable processes" in x for x in oom_lines(m))
    invariants(m)
    assert m.tasks.verify(keeper, ka, 30 * MIB, seed=1) == 0
    invariants(m)


def test_oom_once_ram_and_swap_are_both_exhausted(small, invariants):
    """Only a 4 MiB swap file: a process writing 56 MiB (with 8 MiB elsewhere) fills RAM and
    swap, then the OOM killer takes the biggest (itself); the -1000 one keeps every value."""
    m = small
    m.swapoff("/dev/vdb")
    m.swapon("/swapfile", 4 * MIB)
    keeper, ka = hog(m, 8 * MIB, seed=1, name="keeper", oom_score_adj=-1000)
    grower = m.tasks.spawn("grower")
    ga = m.tasks.mmap(grower, 56 * MIB, prot=RW)
    with pytest.raises(OutOfMemory):
        m.tasks.fill(grower, ga, 56 * MIB, seed=2)
    info = next(x for x in oom_lines(m) if x.startswith("Mem-Info:"))
    assert int(re.search(r"swapfree:(\d+)", info).group(1)) < 64     # swap ran out first
    assert not m.has_pid(grower) and m.has_pid(keeper)
    assert event(m, "oom_kill") == 1
    assert event(m, "pswpout") + event(m, "zswpout") > 0      # swap was used first
    invariants(m)
    assert m.tasks.verify(keeper, ka, 8 * MIB, seed=1) == 0
    invariants(m)


def test_a_squeeze_that_runs_out_of_memory_oom_kills_a_process(small, invariants):
    """Without swap a process's 30 MiB cannot make room for a 40 MiB squeeze: the squeeze's
    allocation reaches the OOM killer, which must kill the process (and log it) rather
    than fail the tick."""
    m = small
    m.swapoff("/dev/vdb")
    pid, a = hog(m, 30 * MIB, seed=1)
    m.squeeze(40 * MIB, ticks=50)
    m.step(10)
    assert not m.has_pid(pid)
    assert event(m, "oom_kill") == 1
    lines = oom_lines(m)
    assert any(x.startswith("pressure invoked oom-killer") for x in lines)
    assert any(x.startswith(f"Out of memory: Killed process {pid} (hog)") for x in lines)
    invariants(m)


# ---------------------------------------------------------------------------
# PSI
# ---------------------------------------------------------------------------

def test_psi_some_rises_under_a_squeeze_and_its_average_decays_after(small, invariants):
    m = small
    pid, a = hog(m, 40 * MIB, seed=1)
    m.step(300)
    (some10, _, _, some_total), (full10, _, _, full_total) = m.pressure()
    assert (some10, some_total) == (0.0, 0)
    m.squeeze(30 * MIB, ticks=300)
    m.step(300)                                    # the squeeze, reclaiming to take its pages
    (some10, some60, _, some_total), (_, _, _, full_total) = m.pressure()
    assert some_total > 0 and full_total > 0
    assert some10 > 0 and some60 > 0
    peak = some10
    m.step(20)                                     # it ends: everything given back
    assert m.pressure_src.held_pages() == 0
    history = []
    for _ in range(5):
        m.step(400)
        history.append(m.pressure()[0])
    avg10s = [h[0] for h in history]
    assert avg10s == sorted(avg10s, reverse=True) and avg10s[-1] < peak / 4
    assert all(h[3] == history[0][3] for h in history)    # no new stall: total stays
    assert m.tasks.verify(pid, a, 40 * MIB, seed=1) == 0
    invariants(m)


def test_psi_counts_swap_in_stalls_of_a_process(small, invariants):
    m = small
    pid, a = hog(m, 64 * MIB, seed=1)
    m.step(1)
    total = m.pressure()[0][3]
    assert m.tasks.verify(pid, a, 16 * MIB, seed=1) == 0    # swap-ins: the process waits
    m.step(1)
    assert m.pressure()[0][3] > total
    invariants(m)


# ---------------------------------------------------------------------------
# notifications: processes scavenge before anything is swapped
# ---------------------------------------------------------------------------

def freed_heap(m):
    """A process that malloc'd and wrote 300 blocks of 100000 bytes and freed every other
    one: half its heap is free but resident (no free chunk touches the top, so nothing was
    trimmed). Returns (pid, pages the heap could give back)."""
    pid = m.tasks.spawn("heapy")
    ptrs = [m.tasks.malloc(pid, 100000) for _ in range(300)]
    for p in ptrs:
        m.tasks.memset(pid, p, 100000)
    rss = m.tasks.procs[pid].mm.rss
    for p in ptrs[::2]:
        m.tasks.free(pid, p)
    assert m.tasks.procs[pid].mm.rss == rss
    releasable = m.heap_view(pid)["heap"]["releasable"] // PAGE
    assert releasable > 3000
    return pid, releasable


def test_a_squeeze_is_met_by_scavenging_before_anything_is_swapped(small, invariants):
    """The squeeze takes more than is free, but less than free + what the heap gives back
    when notified (with 1500 pages to spare for the watermarks): the process scavenges on
    its next tick, the squeeze gets all its pages, and nothing is swapped or reclaimed."""
    m = small
    pid, releasable = freed_heap(m)
    mm = m.tasks.procs[pid].mm
    rss = mm.rss
    free = m.meminfo().free
    pages = free + releasable - 1500
    assert pages > free
    m.squeeze(pages * PAGE, ticks=30)
    m.step(15)
    assert m.pressure_src.held_pages() == pages
    assert mm.rss <= rss - releasable + 16
    assert m.heap_view(pid)["heap"]["scavenged_pages"] >= releasable - 16
    ev = events(m, "pswpout", "zswpout", "pgscan_kswapd", "pgscan_direct")
    assert ev == {"pswpout": 0, "zswpout": 0, "pgscan_kswapd": 0, "pgscan_direct": 0}
    assert mm.swap_ents == 0
    invariants(m)
    m.step(20)
    assert m.pressure_src.held_pages() == 0
    invariants(m)


def test_a_low_memory_notification_makes_every_process_scavenge_on_its_next_tick(small,
                                                                              invariants):
    m = small
    pid, releasable = freed_heap(m)
    mm = m.tasks.procs[pid].mm
    rss = mm.rss
    assert m.notify("low") >= 1
    assert mm.rss == rss                           # handled on the process's next run
    m.step(1)
    assert mm.rss <= rss - releasable + 16
    assert event(m, "pswpout") + event(m, "zswpout") == 0
    invariants(m)
