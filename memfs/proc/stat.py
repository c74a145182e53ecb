"""/proc/stat: CPU times, interrupts, boot time and task counts (fs/proc/stat.c).

Times are USER_HZ ticks. A CPU is in user time for a tick when a process
ran on it (a workload's step), idle otherwise; the other columns read 0. The
timer interrupt and TIMER softirq counts come from the engine's clock.
"""
from __future__ import annotations

from engine.views import CpuStat

SOFTIRQ_NAMES = ("HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED",
                 "HRTIMER", "RCU")
TIME_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest",
               "guest_nice")


def show_stat(m) -> str:
    s = m.cpu_stat()
    return cpu_lines(s) + counter_lines(s) + softirq_line(s)


def cpu_times(user_ticks: int, idle_ticks: int) -> tuple[int, ...]:
    """The ten time columns of one CPU (or of all), in TIME_FIELDS order."""
    return tuple(idle_ticks if name == "idle" else user_ticks if name == "user" else 0
                 for name in TIME_FIELDS)


def cpu_lines(s: CpuStat) -> str:
    """`cpu  ` (two spaces) with the sum over CPUs, then one `cpuN` line per CPU."""
    total = " ".join(str(t) for t in cpu_times(sum(s.user_per_cpu), sum(s.idle_per_cpu)))
    lines = [f"cpu  {total}\n"]
    for cpu, (user, idle) in enumerate(zip(s.user_per_cpu, s.idle_per_cpu)):
        lines.append(f"cpu{cpu} " + " ".join(str(t) for t in cpu_times(user, idle)) + "\n")
    return "".join(lines)


def counter_lines(s: CpuStat) -> str:
    return (f"intr {s.interrupts}\n"
            f"ctxt {s.ctxt}\n"
            f"btime {s.boot_time}\n"
            f"processes {s.processes}\n"
            f"procs_running {s.procs_running}\n"
            f"procs_blocked {s.procs_blocked}\n")


def softirq_line(s: CpuStat) -> str:
    """`softirq TOTAL HI TIMER …`: the total, then one count per softirq type."""
    counts = [s.softirq_timer if name == "TIMER" else 0 for name in SOFTIRQ_NAMES]
    return "softirq " + " ".join(str(n) for n in [sum(counts)] + counts) + "\n"
