"""Processes: the task table, spawn (fork + exec of a simulated program), fork, exit, kill.

Pids: simulated pids start above 4194304, Linux's PID_MAX_LIMIT on 64-bit,
so no simulated pid can ever be a live pid on the host. That matters because
psutil, even with PROCFS_PATH pointing at the mount, checks pids against the
host kernel in places (pid_exists() calls kill(pid, 0); send_signal(),
nice() and friends are host syscalls): a simulated pid equal to a host pid
would make those calls act on the real process. Pids stay below 2^31 so they
fit pid_t.

The machine boots with one kernel thread, kthreadd (no address space, like
Linux's pid 2), so the pid list is never empty. Processes spawned through
`ctl` have parent 0: they come from outside the simulated machine.
"""
from __future__ import annotations

from .mm import STACK_TOP, TEXT_START, AddressSpace, page_align
from .vma import VM_EXEC, VM_READ, VM_WRITE

PID_BASE = 5_000_000                  # above PID_MAX_LIMIT (4194304): never a host pid
PID_LIMIT = (1 << 31) - 1
COMM_LEN = 15                         # TASK_COMM_LEN - 1
DEFAULT_TEXT = 1 << 20
DEFAULT_DATA = 256 << 10
DEFAULT_STACK = 132 << 10             # the usual initial [stack] VMA (0x21000)


class Process:
    __slots__ = ("pid", "comm", "cmdline", "ppid", "uid", "state", "mm", "cpu", "node",
                 "minflt", "majflt", "start_tick", "oom_score_adj", "anon_family", "kthread",
                 "exit_code", "heap", "workload", "sp", "notified", "nvcsw", "nivcsw", "utime",
                 "guard", "mempolicy")

    def __init__(self, pid: int, comm: str, ppid: int, *, cpu: int, node: int, start_tick: int,
                 uid: int = 1000, kthread: bool = False):
        self.pid = pid
        self.comm = comm
        self.cmdline: list[str] = [] if kthread else [f"/usr/bin/{comm}"]
        self.ppid = ppid
        self.uid = uid
        self.state = "S"                  # sleeping: waits for commands (workloads make it run)
        self.mm: AddressSpace | None = None
        self.cpu = cpu
        self.node = node
        self.minflt = 0
        self.majflt = 0
        self.start_tick = start_tick
        self.oom_score_adj = 0
        self.anon_family = pid - PID_BASE  # shared by a process and its forks (the anon rmap owner)
        self.kthread = kthread
        self.exit_code = 0
        self.heap = None                  # the program's allocator (engine.heap), made on first use
        self.workload = None              # what it does every tick (engine.workloads), or None
        self.sp = 0                       # stack pointer: the stack in use is [sp, stack top)
        self.notified: str | None = None  # a low-memory notification not yet handled
        self.nvcsw = 0                    # voluntary context switches (went to sleep)
        self.nivcsw = 0                   # involuntary ones (preempted while running)
        self.utime = 0                    # ticks spent running
        self.guard = False                # heap guard checks (red zones) for new heaps
        self.mempolicy = None             # NUMA memory policy (vmm.mempolicy.MemPolicy); None: default

    def __repr__(self) -> str:
        return f"<Process {self.pid} ({self.comm})>"


def check_comm(name: str) -> str | None:
    """Why name cannot be a process name, or None."""
    if not name or len(name) > COMM_LEN:
        return f"process names are 1 to {COMM_LEN} characters (TASK_COMM_LEN), not {len(name)}"
    if name.isdigit():
        return "an all-digit name would read as a pid"
    bad = [c for c in name if not (c.isalnum() or c in "-_.+@")]
    if bad:
        return f"{bad[0]!r} is not allowed in a process name (letters, digits, - _ . + @)"
    return None


def layout(text: int, data: int, stack: int) -> dict:
    """Where exec puts a program: text at 0x400000, data right after, brk after data."""
    text = page_align(text)
    data = page_align(data)
    stack = page_align(stack)
    return {"text": (TEXT_START, TEXT_START + text),
            "data": (TEXT_START + text, TEXT_START + text + data),
            "stack": (STACK_TOP - stack, STACK_TOP)}


TEXT_PROT = VM_READ | VM_EXEC
DATA_PROT = VM_READ | VM_WRITE
