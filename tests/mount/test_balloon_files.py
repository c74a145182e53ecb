"""The virtio balloon through the mount (devices/virtio/balloon/), on the small machine.

The small machine (config/small.yaml): MemTotal 55300 kB (13825 pages), 128 MiB of
swap on /dev/vdb behind zswap. Figures worked out by hand:

  fresh       MemFree 55300 kB = 56627200 bytes; MemAvailable = free - totalreserve,
              totalreserve = DMA (high 97 + lowmem_reserve 39) + DMA32 high 253 = 389
              pages: 13436 pages = 53744 kB = 55033856 bytes.
  rate        2048 pages (8192 kB) a tick: target 3000 -> 2048, 3000; MemFree
              55300 - 4 x 3000 = 43300 kB; Balloon 12000 kB.
  reporting   the first free page report is at 2 s, tick 200 (10 ms a tick); a fresh
              machine's free blocks of 2 MiB and up (buddyinfo, see test_files.py) are DMA
              1 x 512 + 3 x 1024, DMA32 1 x 512 + 9 x 1024: 13312 pages.
  workload    a process writing 40 MiB leaves about 14 MiB free; a target of 8192 pages
              (32 MiB) is met only by reclaim, still 2048 a tick: 4 ticks each way.
  hot-plug    probe 0x100000000 adds memory32 (128 MiB, memmap 2048 kB taken from
              DMA32); online_movable makes it Movable, where the balloon inflates first;
              offlining it moves the balloon pages below 4 GiB (balloon_migrate):
              MemFree 55300 - 2048 - 12000 = 41252 kB.
  OOM         with a 4 MiB swap file only: keeper (-1000) writes 8 MiB, the balloon holds
              2048 pages (8 MiB), grower writes 56 MiB: 72 MiB do not fit in 54 + 4. The
              balloon gives back 256 pages at a time, 8 times, before grower is killed.
"""
from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path


B = "devices/virtio/balloon"
MEMTOTAL_KB = 55300
PAGE = 4096
KPF_OFFLINE = 1 << 23
RELEASED = "virtio_balloon virtio0: Out of memory: released 256 pages"
SCENARIOS = Path(__file__).resolve().parents[2] / "scripts" / "scenarios"

FRESH_STATS = ("swap-in 0\nswap-out 0\nmajor-faults 0\nminor-faults 0\nfree-memory 56627200\n"
               "total-memory 56627200\navailable-memory 55033856\ndisk-caches 0\n"
               "hugetlb-allocations 0\nhugetlb-failures 0\noom-kills 0\nalloc-stalls 0\n"
               "async-scans 0\ndirect-scans 0\nasync-reclaims 0\ndirect-reclaims 0\n")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def vmstat(m) -> dict[str, int]:
    return {k: int(v) for k, v in (ln.split() for ln in m.read("vmstat").splitlines())}


def bstats(m) -> dict[str, int]:
    return {k: int(v) for k, v in (ln.split() for ln in m.read(f"{B}/stats").splitlines())}


def actual(m) -> int:
    text = m.read(f"{B}/actual")
    assert text.endswith("\n") and text[:-1].isdigit(), repr(text)
    return int(text)


def kmsg_text(m) -> list[str]:
    return [ln.split("] ", 1)[1] for ln in m.read("kmsg").splitlines()]


def offline_frames_below(m, end_pfn: int) -> int:
    """Frames below end_pfn with KPF_OFFLINE set in kpageflags."""
    return sum(1 for f in m.u64s("kpageflags", 0, end_pfn) if f & KPF_OFFLINE)


# ---------------------------------------------------------------------------
# the files
# ---------------------------------------------------------------------------

def test_the_balloon_files_their_modes_and_a_fresh_machines_contents(machine):
    m = machine
    assert set(os.listdir(m / B)) == {"target", "actual", "stats", "features", "reported_pages"}
    mode = lambda rel: stat.S_IMODE(os.stat(m / f"{B}/{rel}").st_mode)     # noqa: E731
    assert mode("target") == 0o644
    for f in ("actual", "stats", "features", "reported_pages"):
        assert mode(f) == 0o444, f
    assert m.read(f"{B}/target") == "0\n"
    assert m.read(f"{B}/actual") == "0\n"
    assert m.read(f"{B}/features") == "STATS_VQ DEFLATE_ON_OOM REPORTING\n"
    assert m.read(f"{B}/reported_pages") == "0\n"
    assert m.read(f"{B}/stats") == FRESH_STATS
    mi = m.meminfo()
    assert (mi["MemTotal"], mi["MemFree"], mi["MemAvailable"], mi["Balloon"]) == (
        MEMTOTAL_KB, MEMTOTAL_KB, 53744, 0)


def test_the_read_only_files_refuse_writes(machine):
    for name in ("actual", "stats", "features", "reported_pages"):
        before = machine.read(f"{B}/{name}")
        assert machine.write_errno(f"{B}/{name}", "5\n") == errno.EACCES, name
        assert machine.read(f"{B}/{name}") == before, name


def test_target_inflates_2048_pages_a_tick_and_every_file_shows_it(small):
    m = small
    m.write(f"{B}/target", "3000\n")
    assert m.read(f"{B}/target") == "3000\n"
    assert m.kmsg_tail(1)[0].endswith(
        "virtio_balloon virtio0: target 3000 pages (12000 kB), actual 0")
    assert actual(m) == 0, "the clock is paused: nothing moves before a tick"
    m.step(1)
    assert actual(m) == 2048
    assert m.meminfo()["MemFree"] == MEMTOTAL_KB - 8192
    m.step(1)
    assert actual(m) == 3000
    mi = m.meminfo()
    assert (mi["MemTotal"], mi["MemFree"], mi["Balloon"]) == (MEMTOTAL_KB, 43300, 12000)
    node = m.kb("devices/system/node/node0/meminfo")
    assert (node["Node 0 MemTotal"], node["Node 0 MemFree"], node["Node 0 Balloon"]) == (
        MEMTOTAL_KB, 43300, 12000)
    v = vmstat(m)
    assert (v["nr_balloon_pages"], v["balloon_inflate"], v["balloon_deflate"],
            v["balloon_migrate"]) == (3000, 3000, 0, 0)
    s = bstats(m)
    assert (s["free-memory"], s["total-memory"]) == (43300 * 1024, MEMTOTAL_KB * 1024)
    assert s["available-memory"] == (43300 - 389 * 4) * 1024
    # kpageflags: the balloon's frames, and only they, are OFFLINE below 64 MiB
    assert offline_frames_below(m, 0x4000) == 3000

    m.write(f"{B}/target", "0\n")
    assert m.kmsg_tail(1)[0].endswith("virtio_balloon virtio0: target 0 pages (0 kB), actual 3000")
    m.step(1)
    assert actual(m) == 952
    m.step(1)
    assert actual(m) == 0
    mi = m.meminfo()
    assert (mi["MemTotal"], mi["MemFree"], mi["Balloon"]) == (MEMTOTAL_KB, MEMTOTAL_KB, 0)
    v = vmstat(m)
    assert (v["nr_balloon_pages"], v["balloon_inflate"], v["balloon_deflate"]) == (0, 3000, 3000)
    assert offline_frames_below(m, 0x4000) == 0


def test_target_accepts_any_u32_page_count(machine):
    m = machine
    try:
        for text, want in (("4294967295\n", "4294967295\n"), (" 42 \n", "42\n"), ("7", "7\n"),
                           ("0\n", "0\n")):
            m.write(f"{B}/target", text)
            assert m.read(f"{B}/target") == want, text
        assert m.kmsg_tail(1)[0].endswith("virtio_balloon virtio0: target 0 pages (0 kB), actual 0")
    finally:
        m.write(f"{B}/target", "0\n")


BAD_TARGETS = [
    ("abc\n", "'abc' is not a number of 4 KiB pages"),
    ("-1\n", "'-1' is not a number of 4 KiB pages"),
    ("1.5\n", "'1.5' is not a number of 4 KiB pages"),
    ("0x10\n", "'0x10' is not a number of 4 KiB pages"),
    ("12 pages\n", "'12 pages' is not a number of 4 KiB pages"),
    ("\n", "'' is not a number of 4 KiB pages"),
    ("4294967296\n", "target 4294967296 is not a page count from 0 to 4294967295"),
    ("99999999999999999999999\n", "is not a page count from 0 to 4294967295"),
]


def test_a_target_that_is_not_a_u32_page_count_is_einval_and_changes_nothing(machine):
    m = machine
    try:
        m.write(f"{B}/target", "100\n")
        for bad, reason in BAD_TARGETS:
            assert m.write_errno(f"{B}/target", bad) == errno.EINVAL, bad
            assert reason in m.kmsg_tail(1)[0], bad
            assert m.read(f"{B}/target") == "100\n", bad
        assert m.read(f"{B}/actual") == "0\n"
    finally:
        m.write(f"{B}/target", "0\n")


def test_a_target_of_unicode_digits_int_refuses_is_einval(machine):
    m = machine
    assert m.write_errno(f"{B}/target", "\u00b2\n") == errno.EINVAL
    assert "is not a number of 4 KiB pages" in m.kmsg_tail(1)[0]
    assert m.read(f"{B}/target") == "0\n"


def test_free_page_reporting_reports_every_two_seconds(small):
    m = small
    m.step(199)
    assert m.read(f"{B}/reported_pages") == "0\n"
    m.step(1)
    assert m.read(f"{B}/reported_pages") == "13312\n"
    assert m.meminfo()["MemFree"] == MEMTOTAL_KB, "reported pages stay free in the guest"


# ---------------------------------------------------------------------------
# under a workload: reclaim, and the memory comes back
# ---------------------------------------------------------------------------

def test_inflating_under_a_workload_reclaims_and_deflating_gives_the_memory_back(small):
    m = small
    pid = m.spawn("hog")
    a = m.mmap(pid, "40M")
    m.pctl(pid, f"fill {a:#x} 40M seed=1")
    mi0, v0 = m.meminfo(), vmstat(m)
    assert v0["pswpout"] + v0["zswpout"] == 0 and mi0["MemFree"] < 8192 * 4

    m.write(f"{B}/target", "8192\n")
    for want in (2048, 4096, 6144, 8192):
        m.step(1)
        assert actual(m) == want
    mi1, v1 = m.meminfo(), vmstat(m)
    assert (mi1["MemTotal"], mi1["Balloon"]) == (MEMTOTAL_KB, 32768)
    assert v1["pswpout"] + v1["zswpout"] > 0, "the balloon pushed the guest into swap"
    assert v1["pgsteal_direct"] > 0 and v1["oom_kill"] == 0
    assert mi1["SwapFree"] < mi0["SwapFree"] and mi1["Zswapped"] > 0
    st = m.status(pid)
    assert st["VmSwap"] > 0 and st["RssAnon"] + st["VmSwap"] == 40 * 1024 + 4
    s = bstats(m)
    assert s["swap-out"] == v1["pswpout"] * PAGE and s["free-memory"] == mi1["MemFree"] * 1024
    assert s["direct-reclaims"] == v1["pgsteal_direct"] * PAGE
    assert m.pctl(pid, f"verify {a:#x} 40M seed=1") == "0", "every value intact, inflated"

    free_inflated = m.meminfo()["MemFree"]
    m.write(f"{B}/target", "0\n")
    for want in (6144, 4096, 2048, 0):
        m.step(1)
        assert actual(m) == want
    mi2, v2 = m.meminfo(), vmstat(m)
    assert (mi2["MemTotal"], mi2["Balloon"]) == (MEMTOTAL_KB, 0)
    assert v2["balloon_inflate"] == v2["balloon_deflate"] == 8192
    assert mi2["MemFree"] - free_inflated >= 32768, "the balloon's 32 MiB came back"
    assert mi2["MemFree"] >= mi0["MemFree"]
    assert m.pctl(pid, f"verify {a:#x} 40M seed=1") == "0"


def test_deflate_on_oom_empties_the_balloon_before_anything_is_killed(small):
    m = small
    assert m.ctl("swapoff /dev/vdb") == ""
    assert m.ctl("swapon /swapfile 4M") == ""
    keeper = m.spawn("keeper")
    m.write(f"{keeper}/oom_score_adj", "-1000\n")
    ka = m.mmap(keeper, "8M")
    m.pctl(keeper, f"fill {ka:#x} 8M seed=1")
    m.write(f"{B}/target", "2048\n")
    m.step(1)
    assert actual(m) == 2048
    before = len(m.read("kmsg").splitlines())
    grower = m.spawn("grower")
    ga = m.mmap(grower, "56M")
    code, _ = m.rejected(f"fill {ga:#x} 56M seed=2", f"{grower}/ctl")
    assert code == errno.ENOMEM
    text = kmsg_text(m)[before:]
    released = [i for i, ln in enumerate(text) if ln == RELEASED]
    killed = [i for i, ln in enumerate(text) if ln.startswith("Out of memory: Killed process")]
    assert len(released) == 8 and len(killed) == 1
    assert max(released) < killed[0], "the balloon emptied before the kill"
    assert text[killed[0]].startswith(f"Out of memory: Killed process {grower} (grower)")
    assert actual(m) == 0 and m.meminfo()["Balloon"] == 0
    v = vmstat(m)
    assert (v["balloon_deflate"], v["oom_kill"]) == (2048, 1)
    assert bstats(m)["oom-kills"] == 1
    assert grower not in m.pids() and keeper in m.pids()
    m.step(1)
    assert actual(m) == 2048, "the driver inflates again: the target still asks for 2048"
    assert m.pctl(keeper, f"verify {ka:#x} 8M seed=1") == "0"


def test_offlining_a_movable_block_migrates_the_balloon_pages(small):
    m = small
    m.write("devices/system/memory/probe", "0x100000000\n")
    m.write("devices/system/memory/memory32/state", "online_movable\n")
    m.write(f"{B}/target", "3000\n")
    m.step(2)
    assert actual(m) == 3000
    assert offline_frames_below(m, 0x4000) == 0, "the balloon inflated in the Movable block"
    m.write("devices/system/memory/memory32/state", "offline\n")
    assert m.read("devices/system/memory/memory32/state") == "offline\n"
    assert actual(m) == 3000
    v = vmstat(m)
    assert (v["balloon_migrate"], v["balloon_inflate"], v["balloon_deflate"],
            v["nr_balloon_pages"]) == (3000, 3000, 0, 3000)
    mi = m.meminfo()
    assert (mi["MemTotal"], mi["MemFree"], mi["Balloon"]) == (MEMTOTAL_KB, 41252, 12000)
    assert offline_frames_below(m, 0x4000) == 3000, "every balloon page now lies below 64 MiB"


# ---------------------------------------------------------------------------
# the scenario script
# ---------------------------------------------------------------------------

def test_balloon_scenario_on_the_small_machine(small):
    """balloon.sh: hog writes 55300 * 3 / 4 / 1024 = 40 MiB; the host asks for 55300 / 8 =
    6912 pages (27648 kB, half of RAM): 2048, 4096, 6144, 6912; back to 0 by 4864, 2816,
    768, 0."""
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    r = subprocess.run(["bash", str(SCENARIOS / "balloon.sh"), str(small.path)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout.splitlines()
    assert "WRONG" not in r.stdout and out[-1] == "balloon: every figure as expected"
    assert out[0] == ("balloon: 55300 kB of RAM; hog writes 40 MiB, the host asks for 6912 "
                      "pages (27648 kB)")
    assert "1. spawn hog (pid 5000002), mmap 40M at 0x7ffff57ff000 and write every page" in out
    inflate = out.index("3. step the clock: the balloon inflates, 2048 pages a tick, reclaiming "
                        "as it goes")
    assert out[inflate + 1:inflate + 5] == ["   tick 1: actual 2048", "   tick 2: actual 4096",
                                            "   tick 3: actual 6144", "   tick 4: actual 6912"]
    deflate = next(i for i, ln in enumerate(out) if ln.startswith("5. the host lets go"))
    assert out[deflate + 1:deflate + 5] == ["   tick 1: actual 4864", "   tick 2: actual 2816",
                                            "   tick 3: actual 768", "   tick 4: actual 0"]
    for line in ("   ok: kmsg line", "   ok: Balloon = 27648", "   ok: nr_balloon_pages = 6912",
                 "   ok: balloon_inflate = 6912", "   ok: balloon_deflate = 6912",
                 "   ok: oom_kill = 0", "   ok: MemTotal = 55300",
                 "   ok: MemTotal (the balloon's pages stay in it) = 55300"):
        assert line in out, f"missing {line!r} in:\n{r.stdout}"
    assert any(ln.startswith("   ok: the guest was pushed into reclaim: pswpout+zswpout 0 -> ")
               for ln in out)
    assert out.count("   ok: pages that differ from what hog wrote = 0") == 2
    assert small.pids() == {5000001}, "the scenario's process is gone"
    assert small.read("clock").splitlines()[1] == "state paused"
    assert small.read(f"{B}/target") == "0\n" and small.read(f"{B}/actual") == "0\n"


def test_balloon_scenario_refuses_a_directory_that_is_not_a_machine(tmp_path):
    r = subprocess.run(["bash", str(SCENARIOS / "balloon.sh"), str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "not a mounted memfs machine" in r.stderr
