"""The command grammar: one text line -> one typed engine call.

A command is words separated by spaces: the verb, its positional arguments,
then options as `key=value` or bare flags, in any order. Sizes and addresses
are decimal, 0x hex, or sizes with K/M/G/T. Each Verb row below is the single
source for parsing, for the result line, and for the README's help text.
Syntax errors raise InvalidArgument with a reason naming the word at fault.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from engine.errors import InvalidArgument
from engine.units import parse_number

SIZE, INT, STR, RANGE = "SIZE", "N", "NAME", "PFN[-PFN]"


@dataclass(frozen=True)
class Verb:
    name: str
    run: Callable[..., str | None]      # run(machine, args: list, opts: dict) -> result line
    usage: str                          # the grammar after the verb
    summary: str
    example: str
    args: tuple[str, ...] = ()          # kinds of the positional arguments (the last may repeat)
    repeat_last: bool = False
    min_args: int | None = None
    options: dict[str, str] = field(default_factory=dict)   # key -> kind
    flags: tuple[str, ...] = ()


def _convert(verb: str, what: str, kind: str, text: str):
    try:
        if kind in (SIZE,):
            return parse_number(text)
        if kind == INT:
            if not text.lstrip("-").isdigit():
                raise ValueError(f"expected a decimal integer, got {text!r}")
            return int(text)
        if kind == RANGE:
            first, sep, last = text.partition("-")
            lo = parse_number(first)
            hi = parse_number(last) if sep else lo
            if hi < lo:
                raise ValueError(f"range {text!r} ends before it starts")
            return (lo, hi - lo + 1)
        if not text:
            raise ValueError("empty value")
        return text
    except ValueError as e:
        raise InvalidArgument(f"{verb}: {what}: {e}") from None


def parse(line: str, table: dict[str, Verb]) -> tuple[Verb, list, dict]:
    words = line.split()
    if not words:
        raise InvalidArgument("empty command (try: " + ", ".join(sorted(table)) + ")")
    verb = table.get(words[0])
    if verb is None:
        raise InvalidArgument(f"unknown command {words[0]!r} (known: {', '.join(sorted(table))})")
    args, opts = [], {}
    for w in words[1:]:
        key, eq, value = w.partition("=")
        if eq:
            if key not in verb.options:
                known = ", ".join(f"{k}=" for k in verb.options) or "none"
                raise InvalidArgument(f"{verb.name}: unknown option {key}= (options: {known}; "
                                      f"usage: {verb.name} {verb.usage})")
            if key in opts:
                raise InvalidArgument(f"{verb.name}: {key}= given twice")
            opts[key] = _convert(verb.name, w, verb.options[key], value)
        elif w in verb.flags:
            opts[w] = True
        else:
            if len(args) >= len(verb.args) and not verb.repeat_last:
                raise InvalidArgument(f"{verb.name}: unexpected {w!r} (usage: {verb.name} {verb.usage})")
            kind = verb.args[min(len(args), len(verb.args) - 1)]
            args.append(_convert(verb.name, w, kind, w))
    need = len(verb.args) if verb.min_args is None else verb.min_args
    if len(args) < need:
        raise InvalidArgument(f"{verb.name}: missing argument (usage: {verb.name} {verb.usage})")
    return verb, args, opts


# ---------------------------------------------------------------------------
# machine-wide ctl
# ---------------------------------------------------------------------------

def format_runs(runs) -> str:
    return " ".join(f"{p:#x}" if n == 1 else f"{p:#x}-{p + n - 1:#x}" for p, n in runs)


def _palloc(m, args, opts) -> str:
    runs = m.palloc(count=opts.get("count", 1), zone=opts.get("zone"), node=opts.get("node"),
                    contiguous=opts.get("contiguous", False), below=opts.get("below"),
                    align=opts.get("align"), boundary=opts.get("boundary"))
    if opts.get("contiguous"):
        return f"{runs[0][0]:#x}"
    return format_runs(runs)


def _pfree(m, args, opts) -> None:
    runs = list(args)
    if "count" in opts:
        if len(runs) != 1 or runs[0][1] != 1:
            raise InvalidArgument("pfree: count= goes with a single PFN, not with ranges")
        runs = [(runs[0][0], opts["count"])]
    m.pfree(runs)
    return None


def _bar(m, args, opts) -> str:
    bar = m.place_bar(args[0], name=opts.get("name"), wide=opts.get("64bit", False),
                      prefetch=opts.get("prefetch", False))
    return f"{bar.start:#x}"


CTL_VERBS = {v.name: v for v in (
    Verb("palloc", _palloc,
         "[count=N] [zone=Z] [node=N] [contiguous] [below=ADDR] [align=SIZE] [boundary=SIZE]",
         "take physical frames as a kernel driver would. Plain: frames one by one from the "
         "per-cpu free-page stacks; with contiguous/below/align/boundary: one physically "
         "contiguous buffer from the constrained allocator. Prints the first frame number "
         "(contiguous) or the frames as PFN and PFN-PFN runs",
         "palloc count=16 contiguous below=16M boundary=64K",
         options={"count": INT, "zone": STR, "node": INT, "below": SIZE, "align": SIZE,
                  "boundary": SIZE},
         flags=("contiguous",)),
    Verb("pfree", _pfree, "PFN[-PFN]... [count=N]",
         "give back frames that palloc handed out (all named frames, or none if any is not "
         "palloc's)", "pfree 0x100 count=16",
         args=(RANGE,), repeat_last=True, options={"count": INT}),
    Verb("bar", _bar, "SIZE [name=NAME] [64bit] [prefetch]",
         "place a PCI BAR: a naturally aligned hole in a PCI window that no RAM, ROM or "
         "device uses; prints its physical address (see iomem)",
         "bar 16M name=gpu prefetch",
         args=(SIZE,), options={"name": STR}, flags=("64bit", "prefetch")),
)}


# ---------------------------------------------------------------------------
# clock
# ---------------------------------------------------------------------------

def _clock(verb_name):
    def run(m, args, opts):
        arg = args[0] if args else None
        if verb_name == "step" and arg < 1:
            raise InvalidArgument("step: N must be at least 1")
        if verb_name == "hz" and not 1 <= arg <= 10000:
            raise InvalidArgument(f"hz: {arg} is out of range [1, 10000]")
        m.clock_command(verb_name, arg)
        return None
    return run


CLOCK_VERBS = {v.name: v for v in (
    Verb("pause", _clock("pause"), "", "stop the clock: nothing runs until resume or step",
         "pause"),
    Verb("resume", _clock("resume"), "", "run the clock again at its rate", "resume"),
    Verb("step", _clock("step"), "N", "advance exactly N ticks now (paused or not)", "step 100",
         args=(INT,)),
    Verb("hz", _clock("hz"), "N", "set the rate: ticks per wall-clock second while running",
         "hz 1000", args=(INT,)),
)}


def run_line(m, text: str, table: dict[str, Verb]) -> str | None:
    """Parse and run one command line; returns its result line (None if it has none)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) > 1:
        raise InvalidArgument(f"one command per write, got {len(lines)} lines "
                              f"(write each line separately)")
    verb, args, opts = parse(lines[0] if lines else "", table)
    return verb.run(m, args, opts)
