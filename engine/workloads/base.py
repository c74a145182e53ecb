"""What every workload is: options checked once, then one step per tick.

A workload is the program a simulated process runs. Each tick the machine
calls step(); it returns True when the program had work this tick (the
process is running, R) and False when it waits (sleeping, S). Everything
random draws from the machine's one seeded generator (tasks.m.rng), in pid
order, so the same seed and commands give the same run.

Options are declared per kind as name -> (type, default, low, high) and
checked before anything happens (spawn refuses bad ones with the reason).
"""
from __future__ import annotations

from ..errors import InvalidArgument
from ..units import fmt_size, parse_number

SIZE, INT, PATH = "size", "int", "path"


def parse_options(kind: str, spec: dict, opts: dict) -> dict:
    """Check opts against spec; returns every option with defaults filled in."""
    unknown = sorted(set(opts) - set(spec))
    if unknown:
        takes = ", ".join(f"{k}=" for k in spec) or "no options"
        raise InvalidArgument(f"workload {kind} takes {takes}; not {', '.join(k + '=' for k in unknown)}")
    out = {}
    for key, (typ, default, lo, hi) in spec.items():
        value = opts.get(key, default)
        if typ == PATH:
            if value is None or not str(value):
                raise InvalidArgument(f"workload {kind} needs {key}=PATH")
            out[key] = str(value)
            continue
        if isinstance(value, str):
            try:
                value = parse_number(value)
            except ValueError as e:
                raise InvalidArgument(f"workload {kind}: {key}={value}: {e}") from None
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            show = fmt_size if typ == SIZE else str
            raise InvalidArgument(f"workload {kind}: {key}={value} must be between {show(lo)} "
                                  f"and {show(hi)}")
        out[key] = value
    return out


class Workload:
    kind = ""
    compress_ratio = 3.0          # zswap: how well its anonymous pages compress
    summary = ""
    options: dict = {}
    has_program = True            # False: the process gets no text, data or stack (replay)

    def __init__(self, opts: dict):
        self.opts = parse_options(self.kind, self.options, opts)

    def describe(self) -> str:
        shown = " ".join(f"{k}={fmt_size(v) if self.options[k][0] == SIZE else v}"
                         for k, v in self.opts.items())
        return f"{self.kind} {shown}".rstrip()

    def start(self, tasks, p) -> None:
        """Set up (map files, first allocations) as the process starts."""

    def step(self, tasks, p) -> bool:
        raise NotImplementedError

    def on_pressure(self, tasks, p, level: str) -> None:
        """A low-memory notification arrived (the heap has scavenged already)."""

    def stop(self, tasks, p) -> None:
        """The process is exiting."""

    def child(self):
        """The workload a forked child runs (None: the child only waits for commands)."""
        return None
