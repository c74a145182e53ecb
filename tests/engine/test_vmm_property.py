"""Random programs against a model: the invariants hold and no written value is ever lost.

A hypothesis state machine drives a small machine through random sequences of
spawn, mmap (private and shared anonymous, private and shared file), touch,
write, fill, read, fork, munmap, mprotect, madvise, exit and wild accesses.
Next to it runs a model of what every process should read at every page:

- a page is (prot, private?, backing object, page index in the object);
  objects are the file /f, each executable, and each shared anonymous area;
- a private page that was written (or written to by a touch, or populated
  writable) has its own value; until then it reads its object's page (0 for
  plain anonymous memory) — so a private file page sees other processes'
  shared writes until its first write copies it;
- fork copies a process's pages and private values; munmap, MADV_DONTNEED
  (private values only) and exit drop them; MADV_FREE keeps them (nothing
  reclaims yet);
- an access to a page that is not mapped, or that its protection refuses,
  kills the process; the pages before it in the same command were done.

After every step check_invariants must pass, the task table must match, and
every readable page that holds a value or is present must read as the model
says. Deterministic (derandomize) and bounded to a few seconds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from engine import Machine, load
from engine.errors import Fault, InvalidArgument, OutOfMemory
from engine.invariants import check_invariants
from engine.vmm import pte as P
from engine.vmm.vma import VM_READ, VM_WRITE
from engine.vmm.vmm import fill_value
from memfs.machines import builtin

PAGE = 4096
R, RW = VM_READ, VM_READ | VM_WRITE
FILE_PAGES = 16
MAX_PROCS = 5
TEXT_PAGES, DATA_PAGES, STACK_PAGES = 4, 4, 33
TEXT, STACK = 0x400000, 0x7FFFFFFDE000
DATA = TEXT + TEXT_PAGES * PAGE
HOLE = 0x1000000000                    # never mapped, far from any stack
NAMES = ("ant", "bee", "cat")


@dataclass(frozen=True)
class Page:
    prot: int
    private: bool
    obj: object                        # None: plain anonymous memory
    index: int = 0


@dataclass
class Proc:
    name: str
    pages: dict = field(default_factory=dict)      # vpn -> Page
    priv: dict = field(default_factory=dict)       # vpn -> value of a private page
    regions: list = field(default_factory=list)    # (start, pages, may munmap)

    def copy(self) -> "Proc":
        return Proc(self.name, dict(self.pages), dict(self.priv), list(self.regions))


def readable(prot: int) -> bool:
    return bool(prot & (VM_READ | VM_WRITE))


class VmmModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.m = Machine(load(builtin("small")), paused=True)
        self.m.tasks.create_file("/f", FILE_PAGES * PAGE)
        self.procs: dict[int, Proc] = {}
        self.shared: dict[tuple, int] = {}         # (object, index) -> value
        self.next_shm = 0

    # ------------------------------------------------------------------
    # the model
    # ------------------------------------------------------------------

    def expect(self, p: Proc, vpn: int) -> int:
        if vpn in p.priv:
            return p.priv[vpn]
        pg = p.pages[vpn]
        return 0 if pg.obj is None else self.shared.get((pg.obj, pg.index), 0)

    def pick(self, i: int) -> int:
        pids = sorted(self.procs)
        return pids[i % len(pids)]

    def span(self, p: Proc, r: int, off: int, n: int, munmap: bool = False):
        """(start va, pages) of a sub-range of one of p's regions, mostly of its mmaps."""
        mmaps = p.regions[3:]                       # after text, data and stack
        regions = mmaps if mmaps and r % 4 else p.regions
        if munmap:
            regions = [x for x in regions if x[2]]
        start, pages, _ = regions[(r >> 2) % len(regions)]
        off %= pages
        return start + off * PAGE, 1 + n % (pages - off)

    def model_access(self, pid: int, va: int, n: int, write: bool, value=None) -> bool:
        """Apply an access of n pages from va to the model; False if it faults (pages before stay done)."""
        p = self.procs[pid]
        for k in range(n):
            vpn = (va >> 12) + k
            pg = p.pages.get(vpn)
            if pg is None or not (pg.prot & VM_WRITE if write else readable(pg.prot)):
                return False
            if not write:
                continue
            v = value(vpn << 12) if value is not None else None
            if pg.private:
                p.priv[vpn] = self.expect(p, vpn) if v is None else v
            elif v is not None:
                self.shared[(pg.obj, pg.index)] = v
        return True

    def run(self, pid: int, ok: bool, fn):
        """Run a command that the model says succeeds (ok) or kills the process."""
        if ok:
            return fn()
        with pytest.raises(Fault):
            fn()
        del self.procs[pid]
        assert pid not in self.m.pids()
        return None

    # ------------------------------------------------------------------
    # rules
    # ------------------------------------------------------------------

    @initialize(shm=st.integers(1, 8), file=st.integers(1, 8), offset=st.integers(0, 8))
    def start(self, shm, file, offset):
        """A first process with one area of each kind, so that sharing shows up early."""
        self.spawn("ant")
        pid = self.pick(0)
        self.mmap(pid, "anon", 8, RW, 0, False)
        self.mmap(pid, "shm", shm, RW, 0, False)
        self.mmap(pid, "file", file, RW, offset, False)
        self.mmap(pid, "file-shared", 8, RW, offset, False)

    @precondition(lambda self: len(self.procs) < 3)
    @rule(name=st.sampled_from(NAMES))
    def spawn(self, name):
        pid = self.m.tasks.spawn(name, text=TEXT_PAGES * PAGE, data=DATA_PAGES * PAGE)
        assert pid not in self.procs
        p = Proc(name)
        exe = ("exe", name)
        for k in range(TEXT_PAGES):
            p.pages[(TEXT >> 12) + k] = Page(R, True, exe, k)
        for k in range(DATA_PAGES):
            p.pages[(DATA >> 12) + k] = Page(RW, True, exe, TEXT_PAGES + k)
        for k in range(STACK_PAGES):
            p.pages[(STACK >> 12) + k] = Page(RW, True, None)
        top = STACK + (STACK_PAGES - 1) * PAGE
        p.priv[top >> 12] = fill_value(top, len(name))
        p.regions = [(TEXT, TEXT_PAGES, True), (DATA, DATA_PAGES, True), (STACK, STACK_PAGES, False)]
        self.procs[pid] = p

    @precondition(lambda self: self.procs)
    @rule(i=st.integers(0, 99), kind=st.sampled_from(["anon", "shm", "file", "file-shared"]),
          pages=st.integers(1, 8), prot=st.sampled_from([RW, RW, RW, R, 0]), off=st.integers(0, 8),
          populate=st.booleans())
    def map(self, i, kind, pages, prot, off, populate):
        self.mmap(self.pick(i), kind, pages, prot, off, populate)

    def mmap(self, pid, kind, pages, prot, off, populate):
        p = self.procs[pid]
        kw = dict(prot=prot, populate=populate)
        if kind == "shm":
            kw["shared"] = True
            obj, first = ("shm", self.next_shm), 0
            self.next_shm += 1
        elif kind.startswith("file"):
            kw.update(file="/f", offset=off * PAGE, shared=kind == "file-shared")
            obj, first = "/f", off
        else:
            obj, first = None, 0
        va = self.m.tasks.mmap(pid, pages * PAGE, **kw)
        assert va % PAGE == 0
        private = not kw.get("shared", False)
        for k in range(pages):
            assert (va >> 12) + k not in p.pages, "mmap returned a range that is in use"
            p.pages[(va >> 12) + k] = Page(prot, private, obj, first + k)
        p.regions.append((va, pages, True))
        if populate and readable(prot):
            # MAP_POPULATE writes private writable pages in (so they are copied), reads the rest
            assert self.model_access(pid, va, pages, bool(prot & VM_WRITE) and private)

    @precondition(lambda self: self.procs)
    @rule(i=st.integers(0, 99), r=st.integers(0, 99), off=st.integers(0, 300),
          n=st.integers(0, 300), write=st.booleans())
    def touch(self, i, r, off, n, write):
        pid = self.pick(i)
        va, n = self.span(self.procs[pid], r, off, n)
        ok = self.model_access(pid, va, n, write)
        self.run(pid, ok, lambda: self.m.tasks.touch(pid, va, n * PAGE, write))

    @precondition(lambda self: self.procs)
    @rule(i=st.integers(0, 99), r=st.integers(0, 99), off=st.integers(0, 300),
          value=st.integers(0, (1 << 64) - 1))
    def write(self, i, r, off, value):
        pid = self.pick(i)
        va, _ = self.span(self.procs[pid], r, off, 0)
        ok = self.model_access(pid, va, 1, True, lambda _: value)
        self.run(pid, ok, lambda: self.m.tasks.write(pid, va + (value & 0xFFF), value))

    @precondition(lambda self: self.procs)
    @rule(i=st.integers(0, 99), r=st.integers(0, 99), off=st.integers(0, 300),
          n=st.integers(0, 300), seed=st.integers(0, 3))
    def fill(self, i, r, off, n, seed):
        pid = self.pick(i)
        va, n = self.span(self.procs[pid], r, off, n)
        ok = self.model_access(pid, va, n, True, lambda a: fill_value(a, seed))
        self.run(pid, ok, lambda: self.m.tasks.fill(pid, va, n * PAGE, seed))

    @precondition(lambda self: self.procs)
    @rule(i=st.integers(0, 99), r=st.integers(0, 99), off=st.integers(0, 300))
    def read(self, i, r, off):
        pid = self.pick(i)
        p = self.procs[pid]
        va, _ = self.span(p, r, off, 0)
        ok = self.model_access(pid, va, 1, False)
        want = self.expect(p, va >> 12) if ok else None
        got = self.run(pid, ok, lambda: self.m.tasks.read(pid, va))
        assert got == want, f"pid {pid} read {got:#x} at {va:#x}, expected {want:#x}"

    @precondition(lambda self: self.procs)
    @rule(i=st.integers(0, 99), write=st.booleans())
    def wild_access(self, i, write):
        pid = self.pick(i)
        self.run(pid, False, lambda: self.m.tasks.touch(pid, HOLE, 1, write))

    @precondition(lambda self: 0 < len(self.procs) < MAX_PROCS)
    @rule(i=st.integers(0, 99))
    def fork(self, i):
        pid = self.pick(i)
        child = self.m.tasks.fork(pid)
        assert child not in self.procs
        self.procs[child] = self.procs[pid].copy()

    @precondition(lambda self: self.procs)
    @rule(i=st.integers(0, 99), r=st.integers(0, 99), off=st.integers(0, 300),
          n=st.integers(0, 300))
    def munmap(self, i, r, off, n):
        pid = self.pick(i)
        p = self.procs[pid]
        got = self.span(p, r, off, n, munmap=True)
        if got is None:
            return
        va, n = got
        self.m.tasks.munmap(pid, va, n * PAGE)
        for vpn in range(va >> 12, (va >> 12) + n):
            p.pages.pop(vpn, None)
            p.priv.pop(vpn, None)

    @precondition(lambda self: self.procs)
    @rule(i=st.integers(0, 99), r=st.integers(0, 99), off=st.integers(0, 300),
          n=st.integers(0, 300), prot=st.sampled_from([0, R, RW]))
    def mprotect(self, i, r, off, n, prot):
        pid = self.pick(i)
        p = self.procs[pid]
        va, n = self.span(p, r, off, n)
        vpns = range(va >> 12, (va >> 12) + n)
        if not all(v in p.pages for v in vpns):
            with pytest.raises(OutOfMemory):
                self.m.tasks.mprotect(pid, va, n * PAGE, prot)
            return
        self.m.tasks.mprotect(pid, va, n * PAGE, prot)
        for v in vpns:
            pg = p.pages[v]
            p.pages[v] = Page(prot, pg.private, pg.obj, pg.index)

    @precondition(lambda self: self.procs)
    @rule(i=st.integers(0, 99), r=st.integers(0, 99), off=st.integers(0, 300),
          n=st.integers(0, 300), advice=st.sampled_from(["dontneed", "free"]))
    def madvise(self, i, r, off, n, advice):
        pid = self.pick(i)
        p = self.procs[pid]
        va, n = self.span(p, r, off, n)
        vpns = range(va >> 12, (va >> 12) + n)
        if not all(v in p.pages for v in vpns):
            with pytest.raises(OutOfMemory):
                self.m.tasks.madvise(pid, va, n * PAGE, advice)
            return
        if advice == "free" and any(not p.pages[v].private or p.pages[v].obj is not None
                                    for v in vpns):
            with pytest.raises(InvalidArgument):
                self.m.tasks.madvise(pid, va, n * PAGE, advice)
            return
        self.m.tasks.madvise(pid, va, n * PAGE, advice)
        if advice == "dontneed":
            for v in vpns:
                p.priv.pop(v, None)

    @precondition(lambda self: len(self.procs) > 1)
    @rule(i=st.integers(0, 99))
    def exit(self, i):
        pid = self.pick(i)
        self.m.tasks.exit(pid)
        del self.procs[pid]

    # ------------------------------------------------------------------
    # after every step
    # ------------------------------------------------------------------

    @invariant()
    def consistent(self):
        m = self.m
        check_invariants(m)
        assert m.pids()[1:] == sorted(self.procs)
        for pid, p in self.procs.items():
            present = set()
            for _, _, vas, ents, *_ in m.pte_dump(pid).vmas:
                present.update(int(va) >> 12 for va, e in zip(vas, ents) if int(e) & P.P)
            for vpn, pg in p.pages.items():
                if not readable(pg.prot):
                    continue
                want = self.expect(p, vpn)
                if want or vpn in present:
                    got = m.tasks.read(pid, vpn << 12)
                    assert got == want, (f"pid {pid} reads {got:#x} at {vpn << 12:#x}, "
                                         f"expected {want:#x} ({pg})")

    def teardown(self):
        m = self.m
        for pid in list(self.procs):
            m.tasks.exit(pid)
        check_invariants(m)
        mi = m.meminfo()
        assert (mi.page_tables, mi.anon_pages, mi.shmem, mi.mapped, mi.committed_as) == (0, 0, 0, 0, 0)
        assert mi.free + mi.cached == mi.total          # only the page cache of files stays


VmmModel.TestCase.settings = settings(
    max_examples=50, stateful_step_count=30, derandomize=True, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestVmmModel = VmmModel.TestCase
