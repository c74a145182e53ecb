"""The OOM killer (mm/oom_kill.c): when reclaim cannot free a frame, kill the biggest.

oom_badness: a process's resident pages + swap entries + page-table pages,
plus oom_score_adj thousandths of all memory (RAM + swap pages). A process
at -1000 is never chosen; kernel threads have no memory to give. The one
with the most points dies (the first in pid order among equals). Before it
dies, kmsg gets the report Linux prints: who invoked the killer, the task
table (memory values in pages), the oom-kill summary line, and "Out of
memory: Killed process ...".
"""
from __future__ import annotations

from .. import views
from ..stats import VmEvent
from ..units import KiB, PAGE_SIZE, range_list

OOM_SCORE_ADJ_MIN = -1000


def badness(p, totalpages: int) -> int | None:
    """oom_badness; None when the process may not be chosen."""
    if p.kthread or p.mm is None or p.oom_score_adj == OOM_SCORE_ADJ_MIN:
        return None
    mm = p.mm
    points = mm.rss + mm.swap_ents + mm.pt_pages + 1
    return points + p.oom_score_adj * (totalpages // 1000)


class OomKiller:
    def __init__(self, machine):
        self.m = machine

    def totalpages(self, nodemask: tuple | None = None) -> int:
        """RAM and swap pages the OOM killer weighs oom_score_adj against; for a memory
        policy's OOM only its nodes' RAM (constrained_alloc)."""
        if nodemask is None:
            ram = self.m.total_ram_pages()
        else:
            ram = sum(z.present_pages for n in nodemask for z in self.m.node_zones[n])
        return ram + self.m.swap.total_slots()

    def choose(self, nodemask: tuple | None = None):
        """select_bad_process: the process with the most points, or None. With a memory
        policy's nodemask (CONSTRAINT_MEMORY_POLICY), a process bound to other nodes
        only is spared: killing it would free nothing there (mempolicy_in_oom_domain)."""
        total = self.totalpages(nodemask)
        best, best_points = None, None
        for pid in sorted(self.m.tasks.procs):
            p = self.m.tasks.procs[pid]
            if not self.eligible(p, nodemask):
                continue
            points = badness(p, total)
            if points is None:
                continue
            if best is None or points > best_points:
                best, best_points = p, points
        return best

    @staticmethod
    def eligible(p, nodemask: tuple | None) -> bool:
        """May killing p help an OOM limited to nodemask (oom_cpuset_eligible)? Not if p is
        bound to other nodes only."""
        pol = p.mempolicy
        return nodemask is None or pol is None or pol.mode != "bind" \
            or bool(set(pol.nodes) & set(nodemask))

    def report(self, trigger, victim, nodemask: tuple | None = None) -> list[str]:
        """The lines dump_header and oom_kill_process log, victim last."""
        lines = []
        who = trigger.comm if trigger is not None else "kswapd0"
        adj = trigger.oom_score_adj if trigger is not None else 0
        lines.append(f"{who} invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|"
                     f"__GFP_COMP), order=0, oom_score_adj={adj}")
        mi = views.meminfo(self.m, None)
        lines.append(f"Mem-Info: free:{mi.free} active_anon:{mi.active_anon} "
                     f"inactive_anon:{mi.inactive_anon} active_file:{mi.active_file} "
                     f"inactive_file:{mi.inactive_file} swapfree:{mi.swap_free} "
                     f"swapcached:{mi.swap_cached}")
        lines.append("Tasks state (memory values in pages):")
        lines.append("[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem "
                     "pgtables_bytes swapents oom_score_adj name")
        for pid in sorted(self.m.tasks.procs):
            p = self.m.tasks.procs[pid]
            if p.kthread or p.mm is None or not self.eligible(p, nodemask):
                continue
            mm = p.mm
            lines.append(f"[{p.pid:7d}] {p.uid:5d} {p.pid:5d} {mm.total_vm():8d} {mm.rss:8d} "
                         f"{mm.rss_anon:8d} {mm.rss_file:8d} {mm.rss_shmem:9d} "
                         f"{(mm.pt_pages + 1) * PAGE_SIZE:8d} {mm.swap_ents:8d}         "
                         f"{p.oom_score_adj:5d} {p.comm}")
        constraint = "CONSTRAINT_NONE" if nodemask is None else "CONSTRAINT_MEMORY_POLICY"
        mask = "(null)" if nodemask is None else range_list(nodemask)
        mems = range_list(n for n, zones in enumerate(self.m.node_zones)
                          if any(z.managed_pages for z in zones))
        lines.append(f"oom-kill:constraint={constraint},nodemask={mask},cpuset=/,"
                     f"mems_allowed={mems},global_oom,task_memcg=/,task={victim.comm},"
                     f"pid={victim.pid},uid={victim.uid}")
        mm = victim.mm
        kb = PAGE_SIZE // KiB
        lines.append(f"Out of memory: Killed process {victim.pid} ({victim.comm}) "
                     f"total-vm:{mm.total_vm() * kb}kB, anon-rss:{mm.rss_anon * kb}kB, "
                     f"file-rss:{mm.rss_file * kb}kB, shmem-rss:{mm.rss_shmem * kb}kB, "
                     f"UID:{victim.uid} pgtables:{(mm.pt_pages + 1) * kb}kB "
                     f"oom_score_adj:{victim.oom_score_adj}")
        return lines

    def kill(self, trigger, victim, nodemask: tuple | None = None) -> str:
        """Log the report and kill victim now (its memory is reaped at once). Returns the
        "Out of memory: Killed process" line."""
        lines = self.report(trigger, victim, nodemask)
        for line in lines:
            self.m.kmsg.log(self.m.clock.uptime_us, line)
        self.m.events[VmEvent.OOM_KILL] += 1
        self.m.trace.emit(victim.pid, "oom-kill", f"by={trigger.pid if trigger else 0}")
        self.m.tasks.reap(victim)
        return lines[-1]
