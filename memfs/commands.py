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
from engine.vmm.vma import parse_prot
from engine.workloads import KINDS as WORKLOAD_KINDS, make as make_workload

SIZE, INT, STR, RANGE, ADDR, PROT, VALUE = ("SIZE", "N", "NAME", "PFN[-PFN]", "ADDR", "PROT",
                                            "VALUE")


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
        if kind in (SIZE, ADDR):
            return parse_number(text)
        if kind == VALUE:
            v = parse_number(text)
            if v >= 1 << 64:
                raise ValueError(f"{text!r} does not fit in 64 bits")
            return v
        if kind == PROT:
            prot = parse_prot(text)
            if prot is None:
                raise ValueError(f"{text!r} is not a protection (r, rw, rx, rwx, w, x, none)")
            return prot
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


def _usage(verb: Verb) -> str:
    return f"{verb.name} {verb.usage}".rstrip()


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
                                      f"usage: {_usage(verb)})")
            if key in opts:
                raise InvalidArgument(f"{verb.name}: {key}= given twice")
            opts[key] = _convert(verb.name, w, verb.options[key], value)
        elif w in verb.flags:
            opts[w] = True
        else:
            if len(args) >= len(verb.args) and not verb.repeat_last:
                raise InvalidArgument(f"{verb.name}: unexpected {w!r} (usage: {_usage(verb)})")
            kind = verb.args[min(len(args), len(verb.args) - 1)]
            args.append(_convert(verb.name, w, kind, w))
    need = len(verb.args) if verb.min_args is None else verb.min_args
    if len(args) < need:
        raise InvalidArgument(f"{verb.name}: missing argument (usage: {_usage(verb)})")
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


WORKLOAD_OPTIONS = {"rate": INT, "size": SIZE, "limit": SIZE, "workers": INT, "depth": SIZE,
                    "trace": STR}


def _spawn(m, args, opts) -> str:
    kw = {k: opts[k] for k in ("text", "data", "stack", "uid", "oom_score_adj", "guard")
          if k in opts}
    wopts = {k: v for k, v in opts.items() if k in WORKLOAD_OPTIONS}
    kind = opts.get("workload")
    if kind is None:
        if wopts:
            raise InvalidArgument(f"spawn: {', '.join(k + '=' for k in wopts)} "
                                  f"{'is a workload option' if len(wopts) == 1 else 'are workload options'}"
                                  f": give workload=KIND too")
        return str(m.tasks.spawn(args[0], **kw))
    if "trace" in wopts and not wopts["trace"].startswith("/"):
        raise InvalidArgument(f"spawn: trace={wopts['trace']} must be an absolute path on the "
                              f"host (the memfs daemon reads it)")
    # Built before the engine lock is taken: a replay reads and checks its whole trace here.
    w = make_workload(kind, wopts)
    return str(m.tasks.spawn(args[0], workload=w, **kw))


def _notify(m, args, opts) -> None:
    m.notify(args[0])


def _kill(m, args, opts) -> None:
    m.tasks.kill(args[0])


def _file(m, args, opts) -> None:
    m.tasks.create_file(args[0], args[1])


def _swapon(m, args, opts) -> None:
    m.swapon(args[0], args[1], opts.get("prio"))


def _swapoff(m, args, opts) -> None:
    m.swapoff(args[0])


def _pressure(m, args, opts) -> None:
    m.squeeze(args[0], opts.get("ticks", 100))


def _dimm(m, args, opts) -> str | None:
    sub, what = args
    if sub == "add":
        size = _convert("dimm", "SIZE", SIZE, what)
        return str(m.dimm_add(size, opts.get("node", 0), opts.get("online")))
    if sub == "remove":
        if opts:
            raise InvalidArgument(f"dimm remove: takes no options, got {', '.join(opts)}")
        return str(m.dimm_remove(_convert("dimm", "ID", INT, what)))
    raise InvalidArgument(f"dimm: {sub!r} is not add or remove")


def _hwpoison(m, args, opts) -> None:
    m.inject_faults(opts.get("rate", 0), bool(opts.get("soft")))


CTL_VERBS = {v.name: v for v in (
    Verb("spawn", _spawn, "NAME [workload=KIND [rate=N] [size=SIZE] [limit=SIZE] [workers=N] "
         "[depth=SIZE] [trace=PATH]] [text=SIZE] [data=SIZE] [stack=SIZE] [uid=N] "
         "[oom_score_adj=N] [guard]",
         "start a process: program text (r-x) and data (rw-) mapped from /usr/bin/NAME, an "
         "empty heap, a stack with exec's argument page written; prints its pid. With "
         "workload=KIND it runs by itself every tick: " + "; ".join(
             f"{k}: {w.summary}" for k, w in WORKLOAD_KINDS.items()) + ". guard: heap guard "
         "checks (red zones) on",
         "spawn web workload=web rate=20",
         args=(STR,), options={"text": SIZE, "data": SIZE, "stack": SIZE, "uid": INT,
                               "oom_score_adj": INT, "workload": STR, **WORKLOAD_OPTIONS},
         flags=("guard",)),
    Verb("kill", _kill, "PID", "kill a process (SIGKILL): its memory goes back at once",
         "kill 5000002", args=(INT,)),
    Verb("notify", _notify, "low|critical",
         "tell every process memory is short: on its next tick each one's heap scavenges "
         "itself (free areas of a page or more, and stack pages below the stack pointer); "
         "caching workloads also drop cache entries", "notify low", args=(STR,)),
    Verb("swapon", _swapon, "NAME SIZE [prio=N]",
         "add a swap area of SIZE (a partition /dev/... or a file); without prio= areas get "
         "-2, -3, ... in order; the highest priority fills first, equal ones take turns",
         "swapon /swapfile 256M prio=5", args=(STR, SIZE), options={"prio": INT}),
    Verb("swapoff", _swapoff, "NAME",
         "bring every page of the area back into RAM and remove it; fails with ENOMEM, "
         "changing nothing, if free RAM cannot hold them", "swapoff /swapfile", args=(STR,)),
    Verb("pressure", _pressure, "SIZE [ticks=N]",
         "external memory pressure: every process is told memory is low (its heap scavenges on "
         "its next tick), then from the next tick something outside takes SIZE of RAM through "
         "the allocator (kswapd, direct reclaim, swap, OOM) and holds it for N ticks "
         "(default 100)", "pressure 32M ticks=200", args=(SIZE,), options={"ticks": INT}),
    Verb("file", _file, "NAME SIZE",
         "create a simulated file of SIZE bytes (zeros) that processes can mmap with file=NAME; "
         "its pages are cached in RAM when touched (Cached in meminfo)", "file data.db 64M",
         args=(STR, SIZE)),
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
    Verb("dimm", _dimm, "add SIZE [node=N] [online=offline|online|online_kernel|online_movable] "
         "| remove ID",
         "plug in a DIMM of SIZE (whole memory blocks) on node N at the lowest free address "
         "from 4 GiB: its blocks appear in devices/system/memory and iomem, offline or onlined "
         "as online= (default: auto_online_blocks) says; prints its id. remove: its blocks go "
         "offline (every page migrated; EBUSY and nothing changed if one cannot) and the DIMM "
         "goes; prints the pages migrated", "dimm add 256M node=1 online=online_movable",
         args=(STR, STR), options={"node": INT, "online": STR}),
    Verb("hwpoison", _hwpoison, "rate=N [soft]",
         "inject memory failures: N random RAM frames a simulated second go bad, as "
         "hard_offline_page (or soft_offline_page with soft) would make them; rate=0 stops. "
         "HardwareCorrupted in meminfo counts them, kmsg says what each one hit",
         "hwpoison rate=5", options={"rate": INT}, flags=("soft",)),
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


# ---------------------------------------------------------------------------
# per-process ctl: each run gets the pid first
# ---------------------------------------------------------------------------

def _hex(addr: int) -> str:
    return f"{addr:#x}"


def _munmap(m, pid, args, opts) -> None:
    m.tasks.munmap(pid, args[0], args[1])


def _mprotect(m, pid, args, opts) -> None:
    m.tasks.mprotect(pid, args[0], args[1], args[2])


def _madvise(m, pid, args, opts) -> None:
    m.tasks.madvise(pid, args[0], args[1], args[2])


def _touch(m, pid, args, opts) -> None:
    m.tasks.touch(pid, args[0], args[1], opts.get("write", False))


def _write(m, pid, args, opts) -> None:
    m.tasks.write(pid, args[0], args[1])


def _read(m, pid, args, opts) -> str:
    return str(m.tasks.read(pid, args[0]))


def _fill(m, pid, args, opts) -> None:
    m.tasks.fill(pid, args[0], args[1], opts.get("seed", 0))


def _verify(m, pid, args, opts) -> str:
    return str(m.tasks.verify(pid, args[0], args[1], opts.get("seed", 0)))


def _fork(m, pid, args, opts) -> str:
    return str(m.tasks.fork(pid))


def _mmap(m, pid, args, opts) -> str:
    return _hex(m.tasks.mmap(pid, args[0], addr=opts.get("addr"), prot=opts.get("prot", 3),
                             shared=opts.get("shared", False), file=opts.get("file"),
                             offset=opts.get("offset", 0), populate=opts.get("populate", False)))


def _brk(m, pid, args, opts) -> str:
    if not args:
        return _hex(m.tasks.brk(pid))
    word = args[0]
    try:
        if word[0] in "+-":
            delta = parse_number(word[1:])
            return _hex(m.tasks.brk(pid, delta=delta if word[0] == "+" else -delta))
        return _hex(m.tasks.brk(pid, new=parse_number(word)))
    except ValueError as e:
        raise InvalidArgument(f"brk: {e}") from None


def _malloc(m, pid, args, opts) -> str:
    return _hex(m.tasks.malloc(pid, args[0], align=opts.get("align", 16),
                               hint=opts.get("hint", "long"), pool=opts.get("pool")))


def _free(m, pid, args, opts) -> None:
    m.tasks.free(pid, args[0])


def _realloc(m, pid, args, opts) -> str:
    return _hex(m.tasks.realloc(pid, args[0], args[1]))


def _memset(m, pid, args, opts) -> None:
    m.tasks.memset(pid, args[0], args[1])


def _scavenge(m, pid, args, opts) -> None:
    m.tasks.scavenge(pid)


def _limit(m, pid, args, opts) -> None:
    if "frames" not in opts:
        raise InvalidArgument("limit: frames=N is required (0 lifts the limit)")
    m.tasks.limit(pid, opts["frames"], opts.get("policy", "lru"))


def _stack(m, pid, args, opts) -> None:
    m.tasks.stack(pid, args[0])


def _guard(m, pid, args, opts) -> None:
    if args[0] not in ("on", "off"):
        raise InvalidArgument(f"guard: {args[0]!r} must be on or off")
    m.tasks.set_guard(pid, args[0] == "on")


def _mempolicy(m, pid, args, opts) -> str:
    return m.tasks.set_mempolicy(pid, args[0], args[1] if len(args) > 1 else None)


def _exit(m, pid, args, opts) -> None:
    code = args[0] if args else 0
    if not 0 <= code <= 255:
        raise InvalidArgument(f"exit: status {code} is outside 0..255")
    m.tasks.exit(pid, code)


PROC_VERBS = {v.name: v for v in (
    Verb("mmap", _mmap, "LEN [addr=ADDR] [prot=r|rw|rx|rwx|none] [shared] [file=NAME] "
         "[offset=OFF] [populate]",
         "map LEN bytes (rounded up to pages): anonymous private memory by default, rw; shared "
         "anonymous with `shared`; a file with file=NAME (private copy-on-write, or shared). "
         "Only address space is reserved: frames come on first touch (populate: now). addr= "
         "asks for exactly that address and fails with EEXIST if something is there. Prints "
         "the start address", "mmap 64M",
         args=(SIZE,), options={"addr": ADDR, "prot": PROT, "file": STR, "offset": SIZE},
         flags=("shared", "populate")),
    Verb("touch", _touch, "ADDR LEN [write]",
         "access every page of the range as the program would (read, or write): faults take "
         "frames; an access outside any mapping is a segfault that kills the process",
         "touch 0x7ffff3fff000 1M write", args=(ADDR, SIZE), flags=("write",)),
    Verb("write", _write, "ADDR VALUE",
         "store a 64-bit value in the page at ADDR (each page holds one value)",
         "write 0x7ffff3fff000 42", args=(ADDR, VALUE)),
    Verb("read", _read, "ADDR",
         "the 64-bit value of the page at ADDR, in decimal (never-written memory reads 0)",
         "read 0x7ffff3fff000", args=(ADDR,)),
    Verb("fill", _fill, "ADDR LEN [seed=S]",
         "write to every page of the range a value derived from the page's address and S",
         "fill 0x7ffff3fff000 32M seed=7", args=(ADDR, SIZE), options={"seed": VALUE}),
    Verb("verify", _verify, "ADDR LEN [seed=S]",
         "read every page of the range and print how many differ from what fill wrote "
         "(0 = intact)", "verify 0x7ffff3fff000 32M seed=7", args=(ADDR, SIZE),
         options={"seed": VALUE}),
    Verb("mprotect", _mprotect, "ADDR LEN PROT",
         "change the protection of a mapped range (r, rw, rx, rwx, none)",
         "mprotect 0x7ffff5fff000 64K r", args=(ADDR, SIZE, PROT)),
    Verb("madvise", _madvise, "ADDR LEN dontneed|free|hugepage|nohugepage",
         "dontneed: drop the range's pages now (anonymous memory reads zero again); free: "
         "private anonymous pages become lazily freeable (LazyFree in smaps) until written; "
         "hugepage: faults may map 2 MiB transparent huge pages there (when "
         "kernel/mm/transparent_hugepage/enabled is madvise or always); nohugepage: never",
         "madvise 0x7ffff3fff000 1M dontneed", args=(ADDR, SIZE, STR)),
    Verb("munmap", _munmap, "ADDR LEN",
         "unmap a range (part of a mapping splits it); its private frames go back to the "
         "free lists", "munmap 0x7ffff7ffe000 4K", args=(ADDR, SIZE)),
    Verb("brk", _brk, "[ADDR|+SIZE|-SIZE]",
         "move the program break (the end of [heap]) to ADDR or by SIZE; prints the break",
         "brk +1M", args=(STR,), min_args=0),
    Verb("malloc", _malloc, "SIZE [align=N] [hint=short|long] [pool=N]",
         "the program calls malloc (or aligned_alloc with align=): prints the address. The "
         "heap grows its pool by brk (pool 0) or mmap (other pools) only when short; "
         "requests of 128K or more get their own mapping. hint=short puts the block in the "
         "short-lived pool (1), pool=N in pool N (0-7)",
         "malloc 100", args=(SIZE,), options={"align": SIZE, "hint": STR, "pool": INT}),
    Verb("free", _free, "ADDR",
         "the program frees a block: it goes back to the pool (merged with free neighbours; "
         "the pool shrinks when its top passes 128K). A double free or a pointer malloc "
         "never returned is refused (EINVAL) and reported in kmsg and trace",
         "free 0x4e4010", args=(ADDR,)),
    Verb("realloc", _realloc, "ADDR SIZE",
         "resize a block in place when the neighbours allow, else move it; prints the address",
         "realloc 0x4e4010 4K", args=(ADDR, SIZE)),
    Verb("memset", _memset, "ADDR LEN",
         "the program writes LEN bytes at ADDR (its pages fault in as written). With guard "
         "checks on, a write past the end of a heap block or into freed heap memory is "
         "refused (EINVAL) and reported", "memset 0x4e4010 100", args=(ADDR, SIZE)),
    Verb("scavenge", _scavenge, "",
         "the process gives memory back without shrinking anything: madvise(dontneed) of "
         "every free heap area of at least one page, and of the stack pages below its "
         "stack pointer (RSS falls; the heap's mapped size stays)", "scavenge"),
    Verb("stack", _stack, "DEPTH",
         "set the stack depth: deeper writes the new stack pages (past 8M: stack overflow, "
         "SIGSEGV); shallower leaves the pages below the stack pointer resident until a "
         "scavenge", "stack 256K", args=(SIZE,)),
    Verb("guard", _guard, "on|off",
         "heap guard checks: a 16-byte red zone after every block, checked on memset "
         "(chosen before the first malloc)", "guard on", args=(STR,)),
    Verb("limit", _limit, "frames=N [policy=fifo|lru|clock|opt]",
         "limit the process to N resident pages: a fault when N are resident first evicts "
         "one, chosen by the policy (default lru; opt only for replay, whose future is "
         "known); anonymous pages go to swap. frames=0 lifts the limit. Figures in <pid>/limit",
         "limit frames=64 policy=clock", options={"frames": INT, "policy": STR}),
    Verb("mempolicy", _mempolicy, "default|local|preferred NODE|bind NODES|interleave NODES",
         "the process's NUMA memory policy (set_mempolicy): where its pages, page tables and "
         "page cache come from. default/local: the node of its CPU, then the others by "
         "distance; preferred: that node first; bind: only those nodes (when they run out, "
         "reclaim and the OOM killer act there alone); interleave: one page per node in turn. "
         "NODES as 0-1, 0,1 or all. Forks inherit it; numa_maps shows it; prints the policy",
         "mempolicy bind 1", args=(STR, STR), min_args=1),
    Verb("fork", _fork, "",
         "fork the process: the child shares every page copy-on-write; prints the child's pid",
         "fork"),
    Verb("exit", _exit, "[STATUS]", "the process exits; its memory goes back", "exit",
         args=(INT,), min_args=0),
)}


def run_line(m, text: str, table: dict[str, Verb], *context) -> str | None:
    """Parse and run one command line; returns its result line (None if it has none).

    context goes to the verb before its arguments (the pid, for per-process ctl).
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) > 1:
        raise InvalidArgument(f"one command per write, got {len(lines)} lines "
                              f"(write each line separately)")
    verb, args, opts = parse(lines[0] if lines else "", table)
    return verb.run(m, *context, args, opts)
