"""Unmodified psutil, pointed at the mount with psutil.PROCFS_PATH, reads the simulated processes.

The scene (a paused small machine, clock stepped to tick 50 first so start
times are not zero):
  web     spawn, mmap 64M (-> 0x7ffff3fff000), fill the low 32 MiB:
          8192 + 1 (exec's stack page) resident pages, all private;
          statm: size 256 + 64 + 16384 + 33 = 16737, text 256, data 64 + 16384 + 33 = 16481
  parent  spawn, mmap 1M (-> 0x7ffff7eff000), fill all 256 pages, fork
  child   parent's child; writes the first page of the mapping (one copy)
          parent and child: 257 resident pages each; the written page is now private in
          both, the other 256 (255 + stack) are shared by the two:
          USS 1 page, PSS 256 / 2 + 1 = 129 pages = 516 KiB each
psutil multiplies statm by the host page size (4096, as simulated) and smaps kB by 1024.
"""
import warnings

import psutil
import pytest

PAGE = 4096
A64 = 0x7FFFF3FFF000
A1 = 0x7FFFF7EFF000
KTHREADD = 5000001
PID_MAX_LIMIT = 4194304          # the host's pids are at most this; simulated pids are above


@pytest.fixture(scope="module")
def scene(small_module):
    m = small_module
    m.step(50)
    web = m.spawn("web")
    assert m.mmap(web, "64M") == A64
    m.pctl(web, f"fill {A64:#x} 32M seed=3")
    parent = m.spawn("parent")
    assert m.mmap(parent, "1M") == A1
    m.pctl(parent, f"fill {A1:#x} 1M seed=1")
    child = int(m.pctl(parent, "fork"))
    m.pctl(child, f"write {A1:#x} 7")
    saved = psutil.PROCFS_PATH
    psutil.PROCFS_PATH = str(m.path)
    psutil.process_iter.cache_clear()
    try:
        yield m, {"web": web, "parent": parent, "child": child}
    finally:
        psutil.PROCFS_PATH = saved
        psutil.process_iter.cache_clear()


@pytest.fixture(autouse=True)
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")        # a missing meminfo field would warn
        yield


def test_virtual_and_swap_memory_are_the_simulated_machines(scene):
    m, _ = scene
    mi = m.meminfo()
    vm = psutil.virtual_memory()
    assert vm.total == mi["MemTotal"] * 1024 == 55300 * 1024
    assert vm.free == mi["MemFree"] * 1024
    assert vm.available == mi["MemAvailable"] * 1024
    assert vm.used == vm.total - vm.available
    assert vm.cached == (mi["Cached"] + mi["SReclaimable"]) * 1024
    assert vm.inactive == mi["Inactive"] * 1024
    sw = psutil.swap_memory()
    assert sw.total == mi["SwapTotal"] * 1024 == 131068 * 1024
    assert sw.free == mi["SwapFree"] * 1024 and sw.used == 0
    assert sw.sin == sw.sout == 0


def test_pids_are_the_simulated_ones(scene):
    _, p = scene
    pids = psutil.pids()
    assert pids == sorted({KTHREADD, *p.values()})
    assert all(pid > PID_MAX_LIMIT for pid in pids)


def test_process_iter_sees_every_process(scene):
    _, p = scene
    seen = {proc.info["pid"]: proc.info for proc in
            psutil.process_iter(["pid", "name", "memory_info"])}
    assert set(seen) == {KTHREADD, *p.values()}
    assert seen[KTHREADD]["name"] == "kthreadd" and seen[KTHREADD]["memory_info"].rss == 0
    assert seen[p["web"]]["name"] == "web"
    assert seen[p["web"]]["memory_info"].rss == (8192 + 1) * PAGE
    assert seen[p["child"]]["name"] == "parent", "a forked child keeps its parent's name"
    assert seen[p["child"]]["memory_info"].rss == 257 * PAGE


def test_web_name_status_ppid_and_memory_info(scene):
    _, p = scene
    web = psutil.Process(p["web"])
    assert web.name() == "web"
    assert web.status() == psutil.STATUS_SLEEPING
    assert web.ppid() == 0
    assert web.cmdline() == ["/usr/bin/web"]
    assert web.num_threads() == 1
    assert web.uids().real == 1000
    assert web.create_time() == pytest.approx(psutil.boot_time() + 50 / 100)
    mem = web.memory_info()
    assert mem.rss == (8192 + 1) * PAGE
    assert mem.vms == 16737 * PAGE
    assert (mem.shared, mem.text, mem.lib, mem.data, mem.dirty) == (0, 256 * PAGE, 0, 16481 * PAGE, 0)
    full = web.memory_full_info()
    assert full.rss == full.uss == full.pss == (8192 + 1) * PAGE
    assert full.swap == 0


def test_web_memory_maps(scene):
    _, p = scene
    web = psutil.Process(p["web"])
    grouped = {mm.path: mm for mm in web.memory_maps()}
    assert set(grouped) == {"/usr/bin/web", "[anon]", "[stack]"}
    assert grouped["/usr/bin/web"].size == (1024 + 256) * 1024 and grouped["/usr/bin/web"].rss == 0
    anon = grouped["[anon]"]
    assert anon.size == 64 << 20
    assert anon.rss == anon.private_dirty == anon.anonymous == anon.pss == 32 << 20
    assert anon.shared_dirty == anon.shared_clean == anon.swap == 0
    stack = grouped["[stack]"]
    assert stack.size == 132 * 1024 and stack.rss == PAGE
    flat = [(mm.addr, mm.perms, mm.path) for mm in web.memory_maps(grouped=False)]
    assert flat == [
        ("00400000-00500000", "r-xp", "/usr/bin/web"),
        ("00500000-00540000", "rw-p", "/usr/bin/web"),
        ("7ffff3fff000-7ffff7fff000", "rw-p", "[anon]"),
        ("7ffffffde000-7ffffffff000", "rw-p", "[stack]"),
    ]


def test_forked_child_ppid_and_shared_pages(scene):
    _, p = scene
    parent, child = psutil.Process(p["parent"]), psutil.Process(p["child"])
    assert child.ppid() == p["parent"]
    assert child.parent().pid == p["parent"]
    assert [c.pid for c in parent.children()] == [p["child"]]
    for proc in (parent, child):
        full = proc.memory_full_info()
        assert full.rss == 257 * PAGE
        assert full.uss == 1 * PAGE
        assert full.pss == (256 * PAGE) // 2 + PAGE
        anon = {mm.path: mm for mm in proc.memory_maps()}["[anon]"]
        assert anon.private_dirty == PAGE and anon.shared_dirty == 255 * PAGE


def test_kthreadd_has_no_memory(scene):
    kt = psutil.Process(KTHREADD)
    assert kt.name() == "kthreadd" and kt.ppid() == 0
    assert kt.status() == psutil.STATUS_SLEEPING
    assert tuple(kt.memory_info()) == (0,) * 7
    full = kt.memory_full_info()
    assert (full.uss, full.pss, full.swap) == (0, 0, 0)
    assert kt.memory_maps() == []
    assert kt.cmdline() == []


def test_a_killed_process_is_gone_for_psutil(scene):
    m, _ = scene
    pid = m.spawn("shortlived")
    proc = psutil.Process(pid)
    assert proc.is_running() and proc.name() == "shortlived"
    m.ctl(f"kill {pid}")
    assert not proc.is_running()
    with pytest.raises(psutil.NoSuchProcess):
        psutil.Process(pid)
    assert pid not in psutil.pids()
