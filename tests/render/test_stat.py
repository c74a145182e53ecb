"""/proc/stat: CPU time lines, interrupt and softirq totals, boot time."""
import re
import time

import psutil
import pytest

from memfs.proc.stat import show_stat

TICK_MS = 10            # both shipped machines: one 10 ms tick is one USER_HZ tick


def lines_by_key(text: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in text.splitlines()}


def test_layout_after_25_ticks_on_two_cpus(default):
    default.step(25)
    lines = show_stat(default).splitlines()
    assert lines[:3] == ["cpu  0 0 0 50 0 0 0 0 0 0",      # idle summed over the two CPUs
                         "cpu0 0 0 0 25 0 0 0 0 0 0",
                         "cpu1 0 0 0 25 0 0 0 0 0 0"]
    assert lines[3] == "intr 50"                          # one timer interrupt per tick per CPU
    assert lines[4] == "ctxt 0"
    assert re.fullmatch(r"btime \d+", lines[5])
    assert [line.split()[0] for line in lines[6:9]] == ["processes", "procs_running", "procs_blocked"]
    # softirq TOTAL HI TIMER NET_TX NET_RX BLOCK IRQ_POLL TASKLET SCHED HRTIMER RCU
    assert lines[9] == "softirq 50 0 50 0 0 0 0 0 0 0 0"
    assert len(lines) == 10


def test_two_spaces_after_cpu_one_after_cpun(shared_small):
    text = show_stat(shared_small)
    assert text.startswith("cpu  ")
    assert "\ncpu0 " in text and "\ncpu0  " not in text
    assert text.endswith("\n") and "\n\n" not in text


def test_btime_is_the_boot_wall_clock(shared_small):
    assert abs(int(lines_by_key(show_stat(shared_small))["btime"][0]) - time.time()) < 600


@pytest.fixture
def procfs(tmp_path, monkeypatch):
    monkeypatch.setattr(psutil, "PROCFS_PATH", str(tmp_path))
    return tmp_path


def test_psutil_parses_stat(default, procfs):
    default.step(30)                  # 30 ticks of TICK_MS: 0.3 s
    (procfs / "stat").write_text(show_stat(default))
    times = psutil.cpu_times()
    assert times.idle == pytest.approx(0.6) and times.user == 0
    assert [t.idle for t in psutil.cpu_times(percpu=True)] == pytest.approx([0.3, 0.3])
    stats = psutil.cpu_stats()
    assert (stats.ctx_switches, stats.interrupts, stats.soft_interrupts) == (0, 60, 60)
