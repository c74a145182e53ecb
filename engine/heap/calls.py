"""What a process does with its heap and stack: the per-process commands and the
workloads' calls (Tasks inherits these).

The public methods are the `<pid>/ctl` verbs: they take the engine lock, log
their result in kmsg and trace it. The `heap_*` methods are what a running
program (a workload) calls: no kmsg, only trace. Programmer errors (double
free, a pointer never given out, a write past a block with guard checks on)
are refused with the heap unchanged, and reported in kmsg and trace.
"""
from __future__ import annotations

import functools

from .heap import Heap, page_down
from .syscalls import ProcessSys
from ..errors import InvalidArgument
from ..vmm.mm import STACK_RLIMIT, STACK_TOP

RED_ZONE = 128                         # x86-64 ABI: the 128 bytes below sp are still in use


def locked(func):
    """A command of the process: under the engine lock; its events published after."""
    @functools.wraps(func)
    def wrapper(self, *args, **kwargs):
        with self.m.mu:
            running = self.vmm.current
            try:
                return func(self, *args, **kwargs)
            finally:
                self.vmm.current = running
                self.m.publish_trace()
    return wrapper




class HeapCalls:
    # The host class (Tasks) provides: m, vmm, _user(pid), _run(p, what, fn), _log(text).

    def heap_of(self, p):
        if p.heap is None:
            p.heap = Heap(ProcessSys(self, p), guard=p.guard)
        return p.heap

    def _heap_error(self, p, what: str, e: InvalidArgument) -> None:
        self.m.trace.emit(p.pid, "heap-error", e.reason)
        self._log(f"heap: {p.pid} ({p.comm}): {e.reason}")

    # ------------------------------------------------------------------
    # what a running program calls
    # ------------------------------------------------------------------

    def heap_malloc(self, p, n: int, *, align: int = 16, hint: str = "long",
                    pool: int | None = None) -> int:
        h = p.heap
        if h is None:
            h = self.heap_of(p)
        ptr = h.malloc(n, align=align, hint=hint, pool=pool, tick=self.m.clock.tick)
        pool_no = h.live[ptr][2]
        self.m.trace.emit(p.pid, "malloc", f"{ptr:#x} size={n} pool={pool_no if pool_no >= 0 else 'mmap'}")
        return ptr

    def heap_free(self, p, ptr: int) -> None:
        if ptr == 0:
            return
        h = p.heap
        if h is None:
            h = self.heap_of(p)
        rec = h.live.get(ptr)
        if rec is None:
            try:
                h.check_free("free", ptr)
            except InvalidArgument as e:
                self._heap_error(p, "free", e)
                raise
        n = rec[0]
        back = h.free(ptr, tick=self.m.clock.tick)
        self.m.trace.emit(p.pid, "free", f"{ptr:#x} size={n}" + (f" trimmed={back}" if back else ""))

    def heap_realloc(self, p, ptr: int, n: int) -> int:
        h = self.heap_of(p)
        if ptr:
            try:
                h.check_free("realloc", ptr)
            except InvalidArgument as e:
                self._heap_error(p, "realloc", e)
                raise
        new = h.realloc(ptr, n, tick=self.m.clock.tick)
        self.m.trace.emit(p.pid, "realloc", f"{ptr:#x} -> {new:#x} size={n}")
        return new

    def heap_memset(self, p, addr: int, length: int) -> None:
        if p.heap is not None:
            why = p.heap.check_write(addr, length)
            if why:
                p.heap.errors += 1
                e = InvalidArgument(f"memset({addr:#x}, {length}): {why}; nothing was written")
                self._heap_error(p, "memset", e)
                raise e
        self.vmm.touch(p, addr, length, True)

    def scavenge_process(self, p, reason: str) -> int:
        """The process gives back what it does not use: free heap areas of at least a page
        (malloc_trim) and the stack pages below its stack pointer. Returns pages freed."""
        areas = heap_pages = 0
        if p.heap is not None:
            areas, heap_pages = p.heap.scavenge()
        stack_pages = self._release_stack(p)
        self.m.trace.emit(p.pid, "scavenge", f"reason={reason} areas={areas} "
                          f"heap_pages={heap_pages} stack_pages={stack_pages}")
        return heap_pages + stack_pages

    def _stack_vma(self, p):
        return p.mm.find(STACK_TOP - 1)

    def _release_stack(self, p) -> int:
        vma = self._stack_vma(p)
        if vma is None or not p.sp:
            return 0
        hi = page_down(p.sp - RED_ZONE)
        if hi <= vma.start:
            return 0
        return self.vmm.madvise(p, vma.start, hi - vma.start, "dontneed")

    def set_stack_depth(self, p, depth: int) -> None:
        """The program's stack is now depth bytes deep: a deeper stack writes its new frames
        (growing [stack], or overflowing it); a shallower one leaves its pages behind."""
        new_sp = STACK_TOP - depth
        old_sp = p.sp or STACK_TOP
        if new_sp < old_sp:
            self.vmm.touch(p, new_sp, old_sp - new_sp, True)
        p.sp = new_sp

    # ------------------------------------------------------------------
    # the <pid>/ctl verbs
    # ------------------------------------------------------------------

    @locked
    def malloc(self, pid: int, n: int, *, align: int = 16, hint: str = "long",
               pool: int | None = None) -> int:
        p = self._user(pid)
        ptr = self._run(p, "malloc", lambda q: self.heap_malloc(q, n, align=align, hint=hint,
                                                                   pool=pool))
        self._log(f"malloc: {pid} ({p.comm}): {n} bytes at {ptr:#x}")
        return ptr

    @locked
    def free(self, pid: int, ptr: int) -> None:
        p = self._user(pid)
        self._run(p, "free", lambda q: self.heap_free(q, ptr))

    @locked
    def realloc(self, pid: int, ptr: int, n: int) -> int:
        p = self._user(pid)
        new = self._run(p, "realloc", lambda q: self.heap_realloc(q, ptr, n))
        self._log(f"realloc: {pid} ({p.comm}): {ptr:#x} -> {new:#x} ({n} bytes)")
        return new

    @locked
    def memset(self, pid: int, addr: int, length: int) -> None:
        if addr < 0 or length <= 0 or addr + length > 1 << 64:
            raise InvalidArgument("memset: the address must be non-negative and the length "
                                  "more than 0")
        p = self._user(pid)
        self._run(p, "memset", lambda q: self.heap_memset(q, addr, length))

    @locked
    def scavenge(self, pid: int) -> int:
        p = self._user(pid)
        pages = self.scavenge_process(p, "command")
        self._log(f"scavenge: {pid} ({p.comm}): {pages} pages given back")
        return pages

    @locked
    def stack(self, pid: int, depth: int) -> None:
        if not 0 < depth <= 1 << 30:
            raise InvalidArgument(f"stack: depth {depth} must be between 1 byte and 1G "
                                  f"(the stack limit is {STACK_RLIMIT >> 20}M; deeper overflows "
                                  f"and the process dies of SIGSEGV)")
        p = self._user(pid)
        if self._stack_vma(p) is None:
            raise InvalidArgument(f"stack: {pid} ({p.comm}) has no [stack] mapping")
        self._run(p, "stack", lambda q: self.set_stack_depth(q, depth))
        self.m.trace.emit(pid, "stack", f"depth={depth} sp={p.sp:#x}")

    @locked
    def set_guard(self, pid: int, on: bool) -> None:
        p = self._user(pid)
        h = p.heap
        if h is not None and (h.live or any(pl.segs for pl in h.pools)) and on != h.guard:
            raise InvalidArgument(f"guard: {pid} ({p.comm}) already has a heap; guard checks "
                                  f"are chosen before the first malloc (or with spawn ... guard)")
        p.guard = on
        if h is not None:
            h.guard = on
