"""memfs's own files, with no Linux equivalent: README, ctl, clock, kmsg."""
from __future__ import annotations

from .. import commands


def store_ctl(m, text: str) -> str | None:
    return commands.run_line(m, text, commands.CTL_VERBS)


def store_proc_ctl(m, pid: int, text: str) -> str | None:
    return commands.run_line(m, text, commands.PROC_VERBS, pid)


def show_clock(m) -> str:
    c = m.clock_state()
    up = c["uptime_us"]
    return (f"tick {c['tick']}\nstate {c['state']}\nhz {c['hz']}\ntick_ms {c['tick_ms']}\n"
            f"uptime {up // 1_000_000}.{up % 1_000_000 // 10_000:02d}\n")


def store_clock(m, text: str) -> None:
    return commands.run_line(m, text, commands.CLOCK_VERBS)


def show_kmsg(m) -> str:
    return "".join(line + "\n" for line in m.kmsg_lines())


def _mode_text(node) -> str:
    if getattr(node, "transaction", False):
        return "rw, transaction"
    r = node.readable
    w = node.writable
    return "rw" if r and w else ("w" if w else "r")


def _walk(m, d, prefix=""):
    """Every file under d, listing only the fixed entries (not live processes, nor the
    links to memory blocks)."""
    from ..tree import Dir, Link
    static = d.entries(m) if callable(d.entries) else d.entries
    for name, node in static.items():
        path = f"{prefix}{name}"
        if isinstance(node, Link):
            continue
        if isinstance(node, Dir):
            yield path + "/", node
            yield from _walk(m, node, path + "/")
        else:
            yield path, node


def _verbs_text(title: str, table) -> list[str]:
    out = [title, ""]
    for v in table.values():
        out.append(f"  {v.name} {v.usage}".rstrip())
        out.append(f"      {v.summary}.")
        out.append(f"      example: {v.example}")
    out.append("")
    return out


def show_readme(m) -> str:
    from ..tree import build_root, Dir
    lines = [
        "memfs - a live, simulated memory manager, mounted as a filesystem",
        "",
        f"Machine: {m.config.name} ({m.config.source}), {len(m.config.nodes)} node(s), "
        f"{m.config.cpus} CPU(s).",
        "Read a file to see state; write a command to a ctl file to make something happen.",
        "A rejected write fails with an errno (echo prints e.g. 'write error: Invalid argument')",
        "and kmsg says why. Sizes and addresses: decimal, 0x hex, or 64K/16M/1G (powers of 1024).",
        "",
        "Files (r = read, w = write, transaction = write a command, read its result on the",
        "same open file, e.g. exec 3<>ctl; echo palloc >&3; cat <&3):",
        "",
    ]
    from ..tree import pid_dir
    pid_template = Dir({"<pid>": pid_dir(0)})
    for path, node in list(_walk(m, build_root())) + list(_walk(m, pid_template)):
        if isinstance(node, Dir):
            if node.help:
                lines.append(f"  {path:<34} {node.help}")
            continue
        lines.append(f"  {path:<34} [{_mode_text(node)}] {node.help}")
    lines.append("")
    lines += _verbs_text("Commands for ctl (memfs ctl MOUNTPOINT COMMAND... prints the result):",
                         commands.CTL_VERBS)
    lines += _verbs_text("Commands for <pid>/ctl (memfs ctl MOUNTPOINT/<pid>/ctl COMMAND...):",
                         commands.PROC_VERBS)
    lines += _verbs_text("Commands for clock (echo step 10 > clock):", commands.CLOCK_VERBS)
    lines.append("Example: sysctl knobs take a number: echo 4096 > sys/vm/min_free_kbytes")
    return "\n".join(lines) + "\n"
