"""/proc/PID files: status, statm, stat, maps, smaps, smaps_rollup, cmdline, comm,
oom_score, oom_score_adj, and memfs's pte dump, in the layouts of fs/proc/array.c and
task_mmu.c (reference/linux-mm-interfaces.md §5).

Each show_* takes the machine and a pid and formats an engine snapshot
(engine/vmm/views.py); nothing here counts pages itself.
"""
from __future__ import annotations

import numpy as np

from engine.errors import InvalidArgument
from engine.pmm.frames import PageType
from engine.units import KiB, PAGE_SIZE
from engine.vmm import pte as P
from engine.vmm.mm import TASK_SIZE
from engine.vmm.views import PSS_SHIFT, MemStats, VmaView

KB = PAGE_SIZE // KiB
USER_HZ = 100
STATES = {"R": "R (running)", "S": "S (sleeping)", "D": "D (disk sleep)", "T": "T (stopped)",
          "Z": "Z (zombie)", "X": "X (dead)", "I": "I (idle)"}
MAPS_NAME_COLUMN = 73          # 25 + 6 * sizeof(void *) - 1, then one space


# ---------------------------------------------------------------------------
# status, statm, stat
# ---------------------------------------------------------------------------

def _vm(key: str, pages: int) -> str:
    return f"{key}:\t{pages * KB:>8} kB\n"


def _cpu_mask(m) -> tuple[str, str]:
    n = m.config.cpus
    return f"{(1 << n) - 1:x}", (f"0-{n - 1}" if n > 1 else "0")


def _node_mask(m) -> tuple[str, str]:
    n = len(m.config.nodes)
    return f"00000000,{(1 << n) - 1:08x}", (f"0-{n - 1}" if n > 1 else "0")


def show_status(m, pid: int) -> str:
    v = m.proc_view(pid)
    cpus, cpulist = _cpu_mask(m)
    mems, memlist = _node_mask(m)
    uid = v.uid
    lines = [f"Name:\t{v.comm}\n", "Umask:\t0022\n", f"State:\t{STATES[v.state]}\n",
             f"Tgid:\t{pid}\n", "Ngid:\t0\n", f"Pid:\t{pid}\n", f"PPid:\t{v.ppid}\n",
             "TracerPid:\t0\n", f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}\n",
             f"Gid:\t{uid}\t{uid}\t{uid}\t{uid}\n", "FDSize:\t64\n", "Groups:\t \n",
             f"NStgid:\t{pid}\n", f"NSpid:\t{pid}\n", f"NSpgid:\t{pid}\n", f"NSsid:\t{pid}\n",
             f"Kthread:\t{int(v.kthread)}\n"]
    if not v.kthread:
        text_kb = v.text
        lines += [_vm("VmPeak", v.hiwater_vm), _vm("VmSize", v.total_vm), _vm("VmLck", 0),
                  _vm("VmPin", 0), _vm("VmHWM", v.hiwater_rss), _vm("VmRSS", v.rss),
                  _vm("RssAnon", v.rss_anon), _vm("RssFile", v.rss_file),
                  _vm("RssShmem", v.rss_shmem), _vm("VmData", v.data_vm),
                  _vm("VmStk", v.stack_vm), _vm("VmExe", text_kb),
                  _vm("VmLib", v.exec_vm - v.text),
                  f"VmPTE:\t{v.pt_bytes // KiB:>8} kB\n", _vm("VmSwap", v.swap),
                  _vm("HugetlbPages", 0), "CoreDumping:\t0\n", "THP_enabled:\t1\n"]
    cap = "0000000000000000" if uid else "000001ffffffffff"
    lines += [f"Threads:\t{v.nr_threads}\n", "SigQ:\t0/63519\n",
              "SigPnd:\t0000000000000000\n", "ShdPnd:\t0000000000000000\n",
              "SigBlk:\t0000000000000000\n", "SigIgn:\t0000000000000000\n",
              "SigCgt:\t0000000000000000\n", "CapInh:\t0000000000000000\n",
              f"CapPrm:\t{cap}\n", f"CapEff:\t{cap}\n", "CapBnd:\t000001ffffffffff\n",
              "CapAmb:\t0000000000000000\n", "NoNewPrivs:\t0\n", "Seccomp:\t0\n",
              "Seccomp_filters:\t0\n", "Speculation_Store_Bypass:\tthread vulnerable\n",
              "SpeculationIndirectBranch:\tconditional enabled\n",
              f"Cpus_allowed:\t{cpus}\n", f"Cpus_allowed_list:\t{cpulist}\n",
              f"Mems_allowed:\t{mems}\n", f"Mems_allowed_list:\t{memlist}\n",
              f"voluntary_ctxt_switches:\t{v.nvcsw}\n",
              f"nonvoluntary_ctxt_switches:\t{v.nivcsw}\n"]
    return "".join(lines)


def show_statm(m, pid: int) -> str:
    v = m.proc_view(pid)
    return (f"{v.total_vm} {v.rss} {v.rss_file + v.rss_shmem} {v.text} 0 "
            f"{v.data_vm + v.stack_vm} 0\n")


def show_stat(m, pid: int) -> str:
    v = m.proc_view(pid)
    tick_ms = m.config.clock.tick_ms
    start = v.start_tick * tick_ms * USER_HZ // 1000
    flags = 0x208040 if v.kthread else 0x400100        # PF_KTHREAD...; PF_RANDOMIZE|PF_FORKNOEXEC
    fields = [pid, f"({v.comm})", v.state, v.ppid, pid, pid, 0, -1, flags,
              v.minflt, 0, v.majflt, 0, v.utime * tick_ms * USER_HZ // 1000, 0, 0, 0, 20, 0,
              v.nr_threads, 0, start,
              v.total_vm * PAGE_SIZE, v.rss, (1 << 64) - 1,
              v.start_code, v.end_code, v.start_stack, 0, 0, 0, 0, 0, 0, 0, 0, 0, 17, v.cpu,
              0, 0, 0, 0, 0, v.start_data, v.end_data, v.start_brk] + [v.start_stack] * 4 + [0]
    return " ".join(str(f) for f in fields) + "\n"


def show_cmdline(m, pid: int) -> bytes:
    v = m.proc_view(pid)
    return b"".join(a.encode() + b"\0" for a in v.cmdline)


def show_comm(m, pid: int) -> str:
    return m.proc_view(pid).comm + "\n"


def store_comm(m, pid: int, text: str) -> None:
    m.tasks.rename(pid, text.rstrip("\n"))


def show_oom_score(m, pid: int) -> str:
    return f"{m.proc_view(pid).oom_score}\n"


def show_oom_score_adj(m, pid: int) -> str:
    return f"{m.proc_view(pid).oom_score_adj}\n"


def store_oom_score_adj(m, pid: int, text: str) -> None:
    word = text.strip()
    if not word.lstrip("-").isdigit():
        raise InvalidArgument(f"oom_score_adj: {word!r} is not an integer (-1000..1000)")
    m.tasks.set_oom_score_adj(pid, int(word))


# ---------------------------------------------------------------------------
# maps, smaps, smaps_rollup
# ---------------------------------------------------------------------------

def maps_line(start: int, end: int, perms: str, pgoff: int, dev: str, ino: int, name: str) -> str:
    head = f"{start:08x}-{end:08x} {perms} {pgoff:08x} {dev} {ino} "
    if not name:
        return head + "\n"
    return f"{head:<{MAPS_NAME_COLUMN - 1}} {name}\n"


def _vma_line(r: VmaView) -> str:
    return maps_line(r.start, r.end, r.perms, r.pgoff, r.dev, r.ino, r.path)


def show_maps(m, pid: int) -> str:
    return "".join(_vma_line(r) for r in m.proc_view(pid, vmas=True).vmas)


def _kb(label: str, value_bytes: int) -> str:
    return f"{label + ':':<16}{value_bytes // KiB:>8} kB\n"


def _stat_lines(s: MemStats, rollup: bool) -> list[str]:
    out = [_kb("Rss", s.rss), _kb("Pss", s.pss >> PSS_SHIFT),
           _kb("Pss_Dirty", s.pss_dirty >> PSS_SHIFT)]
    if rollup:
        out += [_kb("Pss_Anon", s.pss_anon >> PSS_SHIFT), _kb("Pss_File", s.pss_file >> PSS_SHIFT),
                _kb("Pss_Shmem", s.pss_shmem >> PSS_SHIFT)]
    out += [_kb("Shared_Clean", s.shared_clean), _kb("Shared_Dirty", s.shared_dirty),
            _kb("Private_Clean", s.private_clean), _kb("Private_Dirty", s.private_dirty),
            _kb("Referenced", s.referenced), _kb("Anonymous", s.anonymous), _kb("KSM", 0),
            _kb("LazyFree", s.lazyfree), _kb("AnonHugePages", s.anon_huge), _kb("ShmemPmdMapped", 0),
            _kb("FilePmdMapped", 0), _kb("Shared_Hugetlb", 0), "Private_Hugetlb:       0 kB\n",
            _kb("Swap", s.swap), _kb("SwapPss", s.swap_pss >> PSS_SHIFT), _kb("Locked", 0)]
    return out


def show_smaps(m, pid: int) -> str:
    out = []
    for r in m.proc_view(pid, vmas=True, stats=True).vmas:
        out.append(_vma_line(r))
        out += [_kb("Size", r.end - r.start), _kb("KernelPageSize", PAGE_SIZE),
                _kb("MMUPageSize", PAGE_SIZE)]
        out += _stat_lines(r.stats, rollup=False)
        out.append(f"{'THPeligible:':<16}{int(r.thp_eligible):>8}\n")
        out.append(f"VmFlags: {r.vmflags}\n")
    return "".join(out)


def show_smaps_rollup(m, pid: int) -> str:
    v = m.proc_view(pid, vmas=True, stats=True)
    if not v.vmas:
        return ""
    total = MemStats()
    for r in v.vmas:
        total = total + r.stats
    head = maps_line(v.vmas[0].start, v.vmas[-1].end, "---p", 0, "00:00", 0, "[rollup]")
    return head + "".join(_stat_lines(total, rollup=True))


def show_numa_maps(m, pid: int) -> str:
    """numa_maps: each mapping's start, policy, kind, and its pages by node."""
    out = []
    for r in m.numa_maps(pid):
        line = f"{r.start:08x} {r.policy}{r.where}"
        if r.pages:
            if r.anon:
                line += f" anon={r.anon}"
            if r.dirty:
                line += f" dirty={r.dirty}"
            if r.pages not in (r.anon, r.dirty):
                line += f" mapped={r.pages}"
            if r.mapmax > 1:
                line += f" mapmax={r.mapmax}"
            if r.swapcache:
                line += f" swapcache={r.swapcache}"
            if r.active < r.pages:
                line += f" active={r.active}"
            line += "".join(f" N{n}={c}" for n, c in r.nodes)
            line += f" kernelpagesize_kB={PAGE_SIZE // KiB}"
        out.append(line + "\n")
    return "".join(out)


# ---------------------------------------------------------------------------
# pte: the page tables, for humans
# ---------------------------------------------------------------------------

KIND = {int(PageType.ANON): "anon", int(PageType.FILE): "file", int(PageType.SHMEM): "shmem"}


def _flags_text(e: int) -> str:
    return " ".join(P.flag_words(e))


def show_pte(m, pid: int) -> str:
    d = m.pte_dump(pid)
    v = m.proc_view(pid)
    out = [f"# {pid} ({v.comm}): 4-level page tables, PGD at pfn {d.pgd:#x}, "
           f"{len(d.tables)} table pages\n",
           "# each entry: virtual address, raw 64-bit entry, state, frame, what it maps, flags;\n"
           "# entries that are none (never populated) are not listed: a VMA's header says "
           "what touching them does\n",
           "# tables:\n"]
    for level, va, pfn in d.tables:
        out.append(f"#   {level} {va:016x} pfn {pfn:#x}\n")
    zero = m.vmm.zero_pfn
    for view, none_means, vas, ents, types, notes in d.vmas:
        present = int(((ents & np.uint64(P.P | P.PROTNONE)) != 0).sum())
        pages = (view.end - view.start) // PAGE_SIZE
        out.append(f"{view.start:012x}-{view.end:012x} {view.perms} {view.path or '[anon]'}: "
                   f"{pages} pages, {present} present, {pages - len(ents)} none "
                   f"(none: {none_means})\n")
        writable_private = view.perms[1] == "w" and view.perms[3] == "p"
        for va, e, t in zip(vas.tolist(), ents.tolist(), types.tolist()):
            state, detail = P.decode(e)
            if state == "present" or state == "protnone":
                pfn = P.pfn_of(e)
                kind = "zero-page" if e & P.SPECIAL and pfn == zero else KIND.get(t, "?")
                if state == "present" and writable_private and not e & P.RW:
                    kind += " cow"
                out.append(f"  {va:012x} {e:016x} {state} {detail} {kind} {_flags_text(e)}\n")
            elif e in notes:
                out.append(f"  {va:012x} {e:016x} {state} {detail}: {notes[e]}\n")
            else:
                out.append(f"  {va:012x} {e:016x} {state} {detail}\n")
    return "".join(out)


# ---------------------------------------------------------------------------
# binary: pagemap, kpagecount, kpageflags (only the range asked for)
# ---------------------------------------------------------------------------

ENTRY = 8
USER_PAGES = TASK_SIZE // PAGE_SIZE


def read_pagemap(m, pid: int, offset: int, size: int) -> bytes:
    if offset % ENTRY or size % ENTRY:
        raise InvalidArgument("pagemap: reads must start and end on 8-byte entries")
    first = offset // ENTRY
    count = min(size // ENTRY, max(0, USER_PAGES - first))
    if count <= 0:
        return b""
    return m.pagemap(pid, first, count)


def read_kpagecount(m, offset: int, size: int) -> bytes:
    if offset % ENTRY or size % ENTRY:
        raise InvalidArgument("kpagecount: reads must start and end on 8-byte entries")
    return m.kpagecount(offset // ENTRY, size // ENTRY)


def read_kpageflags(m, offset: int, size: int) -> bytes:
    if offset % ENTRY or size % ENTRY:
        raise InvalidArgument("kpageflags: reads must start and end on 8-byte entries")
    return m.kpageflags(offset // ENTRY, size // ENTRY)


def show_files(m) -> str:
    rows = m.files()
    out = [f"{'path':<32} {'size':>12} {'cached':>8} {'dirty':>8} {'maps':>5}\n"]
    for path, size, cached, dirty, maps in rows:
        out.append(f"{path:<32} {size:>12} {cached:>8} {dirty:>8} {maps:>5}\n")
    return "".join(out)
