"""Tasks: the process table and every command a process can be given.

Each public method takes the engine lock, finds the process (ESRCH if it is
gone), checks its arguments, and calls the Vmm. What a simulated program's
access causes is handled here: a SIGSEGV or SIGBUS kills the process (kmsg
gets the kernel's segfault line) and the command fails with EFAULT; a fault
that finds no free frame calls the OOM killer.
"""
from __future__ import annotations


from . import process as pr
from .mempolicy import make_policy
from .mm import PAGE, STACK_GUARD_GAP, TASK_SIZE, AddressSpace, page_align
from .process import PID_BASE, PID_LIMIT, Process
from .vma import (VM_ACCOUNT, VM_GROWSDOWN, VM_MAYEXEC, VM_MAYREAD, VM_MAYWRITE, VM_READ,
                  VM_SOFTDIRTY, VM_WRITE, Vma)
from .vmm import FaultOom, Segv, fill_value
from ..errors import EngineError, Fault, InvalidArgument, NoSuchProcess, OutOfMemory
from ..heap.calls import HeapCalls, locked
from ..units import range_list

MAX_PROCESSES = 32768


class Tasks(HeapCalls):
    def __init__(self, machine):
        self.m = machine
        self.vmm = machine.vmm
        self.procs: dict[int, Process] = {}
        self.next_pid = PID_BASE + 1
        self.forks = 0                       # processes created since boot (/proc/stat)
        self.cpu_busy = [0] * machine.config.cpus   # ticks each CPU ran a process (user time)
        self.ctxt = 0                        # context switches since boot
        self.ran_pids: set[int] = set()      # processes that were runnable in the last tick
        kthreadd = Process(self._alloc_pid(), "kthreadd", 0, cpu=0, node=0, start_tick=0,
                           uid=0, kthread=True)
        self.procs[kthreadd.pid] = kthreadd

    # ------------------------------------------------------------------
    # helpers
    # ------------------------------------------------------------------

    def _log(self, text: str) -> None:
        self.m.kmsg.log(self.m.clock.uptime_us, text)

    def _alloc_pid(self) -> int:
        pid = self.next_pid
        while pid in self.procs:
            pid += 1
        if pid > PID_LIMIT:
            raise OutOfMemory("no free pid left")
        self.next_pid = pid + 1
        return pid

    def get(self, pid: int) -> Process:
        p = self.procs.get(pid)
        if p is None:
            raise NoSuchProcess(f"no process {pid}")
        return p

    def _user(self, pid: int) -> Process:
        p = self.get(pid)
        if p.mm is None:
            raise InvalidArgument(f"{pid} ({p.comm}) is a kernel thread: it has no address space")
        self.vmm.current = p                 # the command runs as p (the OOM killer spares it)
        return p

    def _cpu(self, pid: int) -> tuple[int, int]:
        cpu = (pid - PID_BASE) % self.m.config.cpus
        return cpu, self.m.cpu_node.get(cpu, 0)

    def by_name(self, name: str) -> Process | None:
        """The oldest live process called name."""
        best = None
        for p in self.procs.values():
            if p.comm == name and (best is None or p.pid < best.pid):
                best = p
        return best

    # ------------------------------------------------------------------
    # life and death
    # ------------------------------------------------------------------

    @locked
    def spawn(self, name: str, *, text: int = pr.DEFAULT_TEXT, data: int = pr.DEFAULT_DATA,
              stack: int = pr.DEFAULT_STACK, uid: int = 1000, oom_score_adj: int = 0,
              guard: bool = False, workload=None) -> int:
        why = pr.check_comm(name)
        if why:
            raise InvalidArgument(f"spawn: {why}")
        for key, size, lo, hi in (("text", text, PAGE, 1 << 30), ("data", data, 0, 1 << 30),
                                  ("stack", stack, PAGE, 8 << 20)):
            if not lo <= size <= hi:
                raise InvalidArgument(f"spawn: {key}={size} must be between {lo} and {hi} bytes")
        if not -1000 <= oom_score_adj <= 1000:
            raise InvalidArgument(f"spawn: oom_score_adj={oom_score_adj} is outside -1000..1000")
        if not 0 <= uid < 1 << 31:
            raise InvalidArgument(f"spawn: uid={uid} is not a valid user id")
        if len(self.procs) >= MAX_PROCESSES:
            raise OutOfMemory(f"spawn: {MAX_PROCESSES} processes already (threads-max)")
        lay = pr.layout(text, data, stack)
        exe_path = f"/usr/bin/{name}"
        exe_size = lay["data"][1] - pr.TEXT_START
        pid = self._alloc_pid()
        cpu, node = self._cpu(pid)
        p = Process(pid, name, 0, cpu=cpu, node=node, start_tick=self.m.clock.tick, uid=uid)
        p.oom_score_adj = oom_score_adj
        p.guard = guard
        if workload is not None and not workload.has_program:
            return self._spawn_bare(p, workload)
        vmm = self.vmm
        created = exe_path not in vmm.files
        try:
            p.mm = self._new_mm(p)
            exe = vmm.files.get(exe_path) or vmm.create_file(exe_path, exe_size)
            exe.grow(exe_size)
            mm = p.mm
            ts, te = lay["text"]
            ds, de = lay["data"]
            ss, se = lay["stack"]
            vmm.mmap(p, te - ts, addr=ts, prot=pr.TEXT_PROT, shared=False, file=exe, offset=0,
                     populate=False)
            if de > ds:
                vmm.mmap(p, de - ds, addr=ds, prot=pr.DATA_PROT, shared=False, file=exe,
                         offset=ds - ts, populate=False)
            vmm.mmap(p, se - ss, addr=ss, prot=pr.DATA_PROT, shared=False, file=None, offset=0,
                     populate=False, name="[stack]", extra_flags=VM_GROWSDOWN)
            mm.start_code, mm.end_code = ts, te
            mm.start_data, mm.end_data = ds, de
            mm.start_brk = mm.brk = de
            mm.start_stack = p.sp = se - PAGE
            # exec copies argv and the environment to the top of the stack: one written page.
            vmm.write_value(p, se - PAGE, fill_value(se - PAGE, len(name)))
            mm.hiwater_rss = mm.rss
        except (EngineError, FaultOom) as e:
            if p.mm is not None:
                vmm.exit_mm(p)
            if created and exe_path in vmm.files and not vmm.files[exe_path].maps:
                self._forget_file(exe_path)
            if isinstance(e, FaultOom):
                raise OutOfMemory(f"spawn: no free frame for {name}'s page tables or stack") from None
            raise
        self.procs[pid] = p
        self.forks += 1
        self._log(f"spawn: {pid} ({name}) text {te - ts >> 10}K data {de - ds >> 10}K "
                  f"stack {se - ss >> 10}K" + (f" workload {workload.describe()}" if workload else ""))
        self.m.trace.emit(pid, "spawn", name + (f" workload={workload.kind}" if workload else ""))
        if workload is not None:
            self._attach(p, workload)
        return pid

    def _spawn_bare(self, p: Process, workload) -> int:
        """A process with only an address space (a trace replay): no program text, no stack."""
        try:
            p.mm = self._new_mm(p)
        except FaultOom:
            raise OutOfMemory(f"spawn: no free frame for {p.comm}'s page-table root") from None
        p.cmdline = [f"/usr/bin/{p.comm}"]
        self.procs[p.pid] = p
        self.forks += 1
        self._log(f"spawn: {p.pid} ({p.comm}) workload {workload.describe()}")
        self.m.trace.emit(p.pid, "spawn", f"{p.comm} workload={workload.kind}")
        self._attach(p, workload)
        return p.pid

    def _attach(self, p: Process, workload) -> None:
        """Start p's workload; if it cannot start, p exits (the command still made p)."""
        p.workload = workload
        p.state = "R"
        try:
            workload.start(self, p)
        except (EngineError, FaultOom, Segv) as e:
            self._workload_died(p, e)

    def _forget_file(self, path: str) -> None:
        f = self.vmm.files.pop(path)
        self.vmm.drop_cache(f)
        del self.vmm.inodes[f.ino]

    def _new_mm(self, p: Process) -> AddressSpace:
        mm = AddressSpace(self.vmm.new_pgd(p.cpu, p.node, p), p.uid)
        p.mm = mm
        self.vmm.register(p)                 # reclaim's reverse map finds its pages from now on
        return mm

    @locked
    def fork(self, pid: int) -> int:
        parent = self._user(pid)
        child = self.do_fork(parent)
        self._log(f"fork: {pid} ({parent.comm}) -> {child.pid}")
        return child.pid

    def do_fork(self, parent: Process) -> Process:
        """sys_fork: a child sharing every page copy-on-write, and the parent's user-space state."""
        if len(self.procs) >= MAX_PROCESSES:
            raise OutOfMemory(f"fork: {MAX_PROCESSES} processes already (threads-max)")
        cpid = self._alloc_pid()
        cpu, node = self._cpu(cpid)
        child = Process(cpid, parent.comm, parent.pid, cpu=cpu, node=node,
                        start_tick=self.m.clock.tick, uid=parent.uid)
        child.cmdline = list(parent.cmdline)
        child.oom_score_adj = parent.oom_score_adj
        child.anon_family = parent.anon_family
        child.mempolicy = parent.mempolicy.copy() if parent.mempolicy is not None else None
        try:
            child.mm = self._new_mm(child)
        except FaultOom:
            raise OutOfMemory("fork: no free frame for the child's page-table root") from None
        self.vmm.current = parent
        self.vmm.dup_mm(parent, child)          # raises OutOfMemory, child torn down
        self.procs[cpid] = child
        self.forks += 1
        self._fork_userland(parent, child)
        return child

    def _fork_userland(self, parent: Process, child: Process) -> None:
        """The child's copy of what lives in user space: heap bookkeeping, stack pointer."""
        from ..heap.syscalls import ProcessSys
        child.sp = parent.sp
        child.guard = parent.guard
        if parent.heap is not None:
            child.heap = parent.heap.clone(ProcessSys(self, child))
        self.m.trace.emit(parent.pid, "fork", f"child={child.pid}")

    def _exit(self, p: Process, code: int) -> None:
        if p.mm is not None:
            self.vmm.exit_mm(p)
        p.state = "X"
        p.exit_code = code
        p.heap = None
        if p.workload is not None:
            p.workload.stop(self, p)
            p.workload = None
        del self.procs[p.pid]
        self.m.trace.emit(p.pid, "exit", f"status={code}")
        for c in self.procs.values():
            if c.ppid == p.pid:
                c.ppid = 0

    def exit_from_program(self, p: Process, code: int) -> None:
        """The program itself calls exit (a workload finishing): no kmsg line, traced."""
        self._exit(p, code)

    @locked
    def exit(self, pid: int, code: int = 0) -> None:
        p = self._user(pid)
        self._exit(p, code)
        self._log(f"exit: {pid} ({p.comm}) status {code}")

    @locked
    def kill(self, pid: int) -> None:
        p = self.get(pid)
        if p.kthread:
            raise InvalidArgument(f"kill: {pid} ({p.comm}) is a kernel thread; it cannot be killed")
        self._exit(p, 128 + 9)
        self._log(f"kill: {pid} ({p.comm}) killed by SIGKILL")

    def exit_with(self, p: Process, code: int) -> None:
        """The kernel ends p (a signal it cannot survive, such as SIGBUS on lost memory)."""
        self._exit(p, code)

    def reap(self, victim: Process) -> None:
        """The OOM killer's SIGKILL: the victim exits and its memory is freed now."""
        self._exit(victim, 128 + 9)

    # ------------------------------------------------------------------
    # running a program's access: faults have consequences
    # ------------------------------------------------------------------

    def _run(self, p: Process, what: str, fn, *args):
        try:
            return fn(p, *args)
        except Segv as s:
            self._die_of(p, s)
            raise Fault(f"{what}: {s.signal} at {s.va:#x} ({s.why}): process {p.pid} "
                        f"({p.comm}) was killed") from None
        except FaultOom as e:
            if e.victim is None:
                raise OutOfMemory(f"{what}: out of memory and no process the OOM killer may kill "
                                  f"(all are at oom_score_adj -1000); nothing was done") from None
            line = self._die_of(p, e)
            raise OutOfMemory(f"{what}: no free frame for a page fault at this point; the OOM "
                              f"killer chose {p.pid} ({p.comm}): {line}") from None

    def _die_of(self, p: Process, exc: Exception) -> str:
        """p's program met a fatal fault: the kernel kills it. Returns the kmsg line."""
        if isinstance(exc, FaultOom):
            if exc.victim is None:
                return exc.line
            return self.m.oom.kill(p, p, exc.nodemask)
        s = exc
        mm = p.mm
        if s.signal == "SIGSEGV":
            line = (f"{p.comm}[{p.pid}]: segfault at {s.va:x} ip {mm.start_code:016x} "
                    f"sp {p.sp or mm.start_stack:016x} error {s.error_code:x} in "
                    f"{p.comm}[{mm.start_code:x}+{mm.end_code - mm.start_code:x}] "
                    f"likely on CPU {p.cpu} (core {p.cpu}, socket 0)")
        else:
            line = f"{p.comm}[{p.pid}]: {s.signal} at {s.va:x}: {s.why}"
        self._log(line)
        self.m.trace.emit(p.pid, s.signal.lower(), f"{s.va:#x} {s.why}")
        self._exit(p, 128 + (11 if s.signal == "SIGSEGV" else 7))
        return line

    def _workload_died(self, p: Process, exc: Exception) -> None:
        """A workload's program failed: a fatal fault kills it; any other error, it exits 1.
        Out of memory with no one the OOM killer may take: it waits (tries again next tick)."""
        if isinstance(exc, FaultOom) and exc.victim is None:
            return
        if isinstance(exc, (Segv, FaultOom)):
            self._die_of(p, exc)
            return
        reason = getattr(exc, "reason", str(exc))
        self._log(f"{p.comm}[{p.pid}]: workload {p.workload.kind} gave up: {reason}")
        self._exit(p, 1)

    # ------------------------------------------------------------------
    # one tick of every process
    # ------------------------------------------------------------------

    def notify_all(self, level: str) -> int:
        """Low-memory notification to every user process; each handles it on its next run."""
        rank = {None: 0, "low": 1, "critical": 2}
        n = 0
        for p in self.procs.values():
            if p.mm is not None:
                if rank[level] > rank[p.notified]:
                    p.notified = level
                n += 1
        self.m.trace.emit(0, "notify", f"level={level} processes={n}")
        return n

    def run_tick(self) -> int:
        """Every process runs for one tick, in pid order: a pending low-memory notification
        first (its heap scavenges itself), then its workload. A CPU with at least one
        runnable process on it was busy this tick. Returns how many CPUs were busy."""
        ran = 0
        busy_cpus = set()
        per_cpu: dict[int, int] = {}
        self.ran_pids = ran_pids = set()
        for pid in sorted(self.procs):
            p = self.procs.get(pid)
            if p is None or p.mm is None:           # gone (an OOM kill this tick), or kthread
                continue
            self.vmm.current = p
            try:
                if p.notified:
                    level, p.notified = p.notified, None
                    self.scavenge_process(p, f"notify-{level}")
                    if p.workload is not None:
                        p.workload.on_pressure(self, p, level)
                w = p.workload
                if w is None:
                    continue
                busy = w.step(self, p)
            except (Segv, FaultOom, EngineError) as e:
                if p.pid in self.procs:
                    self._workload_died(p, e)
                continue
            if p.pid not in self.procs:              # the workload exited
                continue
            if busy:
                ran += 1
                ran_pids.add(pid)
                p.utime += 1
                busy_cpus.add(p.cpu)
                per_cpu[p.cpu] = per_cpu.get(p.cpu, 0) + 1
                if per_cpu[p.cpu] > 1:               # shared its CPU: preempted once
                    p.nivcsw += 1
                    self.ctxt += 1
                p.state = "R"
            else:
                if p.state == "R":
                    p.nvcsw += 1
                    self.ctxt += 1
                p.state = "S"
        self.vmm.current = None
        for cpu in busy_cpus:
            self.cpu_busy[cpu] += 1
        return len(busy_cpus)

    @staticmethod
    def _range(what: str, addr: int, length: int) -> None:
        if addr < 0 or length < 0 or addr + length > 1 << 64:
            raise InvalidArgument(f"{what}: address and length must be non-negative 64-bit values")

    @locked
    def mmap(self, pid: int, length: int, *, addr: int | None = None, prot: int, shared: bool = False,
             file: str | None = None, offset: int = 0, populate: bool = False) -> int:
        p = self._user(pid)
        f = None
        if file is not None:
            path = file if file.startswith("/") else "/" + file
            f = self.vmm.files.get(path)
            if f is None:
                raise InvalidArgument(f"mmap: no file {path} (create it with `file {file} SIZE` "
                                      f"on the machine's ctl)")
        elif offset:
            raise InvalidArgument("mmap: offset= needs file=")
        start = self._run(p, "mmap", lambda q: self.vmm.mmap(
            q, length, addr=addr, prot=prot, shared=shared, file=f, offset=offset,
            populate=populate))
        vma = p.mm.find(start)
        self._log(f"mmap: {pid} ({p.comm}): {start:#x}-{start + page_align(length):#x} "
                  f"{vma.perms() if vma else ''} {f.path if f else ''}".rstrip())
        return start

    @locked
    def munmap(self, pid: int, addr: int, length: int) -> int:
        self._range("munmap", addr, length)
        return self.vmm.munmap(self._user(pid), addr, length)

    @locked
    def mprotect(self, pid: int, addr: int, length: int, prot: int) -> None:
        self._range("mprotect", addr, length)
        self.vmm.mprotect(self._user(pid), addr, length, prot)

    @locked
    def madvise(self, pid: int, addr: int, length: int, advice: str) -> int:
        self._range("madvise", addr, length)
        return self.vmm.madvise(self._user(pid), addr, length, advice)

    @locked
    def touch(self, pid: int, addr: int, length: int, write: bool) -> int:
        self._range("touch", addr, length)
        return self._run(self._user(pid), "touch", lambda q: self.vmm.touch(q, addr, length, write))

    @locked
    def write(self, pid: int, addr: int, value: int) -> None:
        self._range("write", addr, 1)
        if not 0 <= value < 1 << 64:
            raise InvalidArgument(f"write: value {value} does not fit 64 bits unsigned")
        self._run(self._user(pid), "write", lambda q: self.vmm.write_value(q, addr, value))

    @locked
    def read(self, pid: int, addr: int) -> int:
        self._range("read", addr, 1)
        value = self._run(self._user(pid), "read", lambda q: self.vmm.read_value(q, addr))
        self._log(f"read: {pid}: {addr:#x} = {value}")
        return value

    @locked
    def fill(self, pid: int, addr: int, length: int, seed: int = 0) -> int:
        self._range("fill", addr, length)
        return self._run(self._user(pid), "fill", lambda q: self.vmm.fill(q, addr, length, seed))

    @locked
    def verify(self, pid: int, addr: int, length: int, seed: int = 0) -> int:
        self._range("verify", addr, length)
        bad = self._run(self._user(pid), "verify", lambda q: self.vmm.verify(q, addr, length, seed))
        self._log(f"verify: {pid}: {addr:#x}+{length:#x} seed {seed}: {bad} pages differ")
        return bad

    @locked
    def brk(self, pid: int, new: int | None = None, delta: int | None = None) -> int:
        """Move the program break (absolute, or by delta); returns the new break."""
        p = self._user(pid)
        mm = p.mm
        if new is None and delta is None:
            return mm.brk
        target = new if new is not None else mm.brk + delta
        self.do_brk(p, target)
        self._log(f"brk: {pid} ({p.comm}): break {target:#x}")
        return target

    def do_brk(self, p: Process, target: int) -> None:
        """sys_brk: move p's break to target, growing or shrinking [heap]."""
        mm = p.mm
        if not mm.start_brk:
            # No program was loaded (a trace replay): there is no end of data to start a heap
            # after, so brk fails as Linux's does, with ENOMEM (malloc falls back to mmap).
            raise OutOfMemory(f"brk: {p.pid} ({p.comm}) has no program break: it runs no "
                              f"program of its own")
        if target < mm.start_brk:
            raise InvalidArgument(f"brk: {target:#x} is below the start of the heap "
                                  f"({mm.start_brk:#x})")
        old_top, new_top = page_align(mm.brk), page_align(target)
        if new_top > old_top:
            nxt = mm.next_after(old_top - 1) if old_top > mm.start_brk else mm.next_after(mm.start_brk)
            limit = nxt.start - (STACK_GUARD_GAP if nxt.flags & VM_GROWSDOWN else 0) if nxt else TASK_SIZE
            if new_top > limit:
                raise OutOfMemory(f"brk: the heap cannot grow to {target:#x}: the mapping at "
                                  f"{nxt.start:#x} is in the way")
            grow = (new_top - old_top) // PAGE
            if not self.vmm.charge(grow, mm):
                raise OutOfMemory(self.vmm._refusal("brk", grow))
            # do_brk_flags: stretch the heap VMA that ends at the old break if it still has
            # the heap's flags (mprotect or munmap may have changed or split it), else add one.
            flags = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC | VM_ACCOUNT | VM_SOFTDIRTY
            last = mm.find(old_top - 1) if old_top > mm.start_brk else None
            if last is not None and last.end == old_top and last.name == "[heap]" \
                    and last.flags == flags:
                last.end = new_top
            else:
                mm.insert(Vma(old_top, new_top, flags, name="[heap]"))
            mm.update_hiwater()
        elif new_top < old_top:
            self.vmm.munmap(p, new_top, old_top - new_top)
        mm.brk = target

    @locked
    def create_file(self, path: str, size: int) -> str:
        if not path or any(c.isspace() for c in path) or "//" in path or path.endswith("/"):
            raise InvalidArgument(f"file: {path!r} is not a valid path")
        path = path if path.startswith("/") else "/" + path
        if size <= 0 or size > 1 << 40:
            raise InvalidArgument(f"file: size must be between 1 byte and 1T, not {size}")
        self.vmm.create_file(path, size)
        self._log(f"file: created {path}, {size} bytes")
        return path

    @locked
    def rename(self, pid: int, name: str) -> None:
        """Writing /proc/PID/comm: the process's name (not its command line) changes."""
        why = pr.check_comm(name)
        if why:
            raise InvalidArgument(f"comm: {why}")
        p = self.get(pid)
        if p.kthread:
            raise InvalidArgument(f"comm: {pid} ({p.comm}) is a kernel thread; its name stays")
        self._log(f"comm: {pid} ({p.comm}) is now {name}")
        p.comm = name

    @locked
    def limit(self, pid: int, frames: int, policy: str = "lru") -> int:
        """Give pid a resident-set limit (0 frames: none). Returns the pages evicted to fit."""
        p = self._user(pid)
        evicted = self.vmm.set_limit(p, frames, policy)
        if frames:
            self._log(f"limit: {pid} ({p.comm}): {frames} frames, policy {policy}"
                      f"{f', {evicted} pages evicted to fit' if evicted else ''}")
        else:
            self._log(f"limit: {pid} ({p.comm}): no limit")
        return evicted

    @locked
    def limit_view(self, pid: int) -> dict | None:
        p = self.get(pid)
        lim = p.mm.limit if p.mm is not None else None
        if lim is None:
            return None
        return {"frames": lim.frames, "policy": lim.policy.name, "resident": len(lim.policy),
                "faults": lim.faults, "evictions": lim.evictions, "stuck": lim.stuck}

    @locked
    def set_mempolicy(self, pid: int, mode: str, nodes: str | None = None) -> str:
        """set_mempolicy(2) for pid: default, local, preferred N, bind NODES or interleave
        NODES. Nodes without memory are dropped from the list (as Linux intersects it with
        N_MEMORY); none left is EINVAL. Returns the policy as numa_maps shows it."""
        p = self._user(pid)
        pol = make_policy(mode, nodes, len(self.m.node_zones))
        if pol is not None and pol.nodes:
            with_memory = tuple(n for n in pol.nodes
                                if any(z.managed_pages for z in self.m.node_zones[n]))
            if not with_memory:
                raise InvalidArgument(f"mempolicy: node {range_list(pol.nodes)} has no memory")
            pol.nodes = with_memory
        p.mempolicy = pol
        text = pol.text() if pol is not None else "default"
        self._log(f"mempolicy: {pid} ({p.comm}): {text}")
        return text

    @locked
    def set_oom_score_adj(self, pid: int, value: int) -> None:
        p = self._user(pid)
        if not -1000 <= value <= 1000:
            raise InvalidArgument(f"oom_score_adj: {value} is outside -1000..1000")
        p.oom_score_adj = value

