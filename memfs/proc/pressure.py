"""/proc/pressure/memory and the per-process resident-limit file."""
from __future__ import annotations


def show_pressure_memory(m) -> str:
    out = []
    for name, (a10, a60, a300, total) in zip(("some", "full"), m.pressure()):
        out.append(f"{name} avg10={a10:.2f} avg60={a60:.2f} avg300={a300:.2f} total={total}\n")
    return "".join(out)


def show_limit(m, pid: int) -> str:
    v = m.tasks.limit_view(pid)
    if v is None:
        return "frames unlimited\n"
    lines = [("frames", v["frames"]), ("policy", v["policy"]), ("resident", v["resident"]),
             ("faults", v["faults"]), ("evictions", v["evictions"])]
    if v["stuck"]:
        lines.append(("evictions_refused", v["stuck"]))
    return "".join(f"{k} {val}\n" for k, val in lines)
