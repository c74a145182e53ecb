"""Machine configuration: YAML -> validated, frozen dataclasses.

Owns: the schema of a machine description and every check that can be made
before a machine is built (unknown keys, wrong types, overlapping ranges,
RAM that does not cover the kernel's reserve). Every error names the key's
path (`memory_map[3].size`) and says what is wrong, so `memfs mount` can
refuse a bad file before anything mounts. Values that need the engine's
tunable table (sysctl bounds) are checked by Machine at build time with the
same ConfigError.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .units import PAGE_SIZE, MiB, parse_number, fmt_size, is_power_of_two

PAGEBLOCK_BYTES = 2 * MiB

REGION_KINDS = {
    # kind: (default iomem name, default cacheability)
    "ram": ("System RAM", "wb"),
    "reserved": ("Reserved", "wb"),
    "rom": ("Reserved", "wp"),
    "acpi": ("ACPI Tables", "wb"),
    "acpi_nvs": ("ACPI Non-volatile Storage", "wb"),
    "mmio": (None, "uc"),
    "pmem": ("Persistent Memory", "wb"),
}
CACHE_TYPES = {
    "wb": "write-back",
    "uc": "uncached",
    "wc": "write-combining",
    "wt": "write-through",
    "wp": "write-protect",
}


class ConfigError(Exception):
    """A bad machine description: `path` is the key (`memory_map[2].size`)."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True)
class Region:
    """One range of the physical address map, [start, end) in bytes."""
    start: int
    end: int
    kind: str            # one of REGION_KINDS
    name: str            # as shown in iomem
    cache: str           # one of CACHE_TYPES
    hotplug: bool = False
    nonvolatile: bool = False

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class PciWindow:
    start: int
    end: int
    name: str


@dataclass(frozen=True)
class NodeConfig:
    id: int
    start: int           # the node's physical span [start, end): RAM inside belongs to it
    end: int
    cpus: tuple[int, ...]


@dataclass(frozen=True)
class SwapConfig:
    name: str
    size: int            # bytes, including the header page
    priority: int | None


@dataclass(frozen=True)
class KernelConfig:
    low_reserve: int         # bytes at the bottom of RAM the kernel keeps (x86: 1 MiB)
    image_base: int          # physical load address of the kernel image
    image_size: int          # code + rodata + data + bss
    struct_page_bytes: int   # memmap cost per 4 KiB frame, reserved on each node


@dataclass(frozen=True)
class ClockConfig:
    hz: int                  # ticks per wall-clock second while running
    tick_ms: int             # simulated milliseconds per tick
    scavenge_period: int = 50     # ticks between idle-scavenger runs (on idle ticks only)
    pressure_interval: int = 100  # ticks between two low-memory notifications


@dataclass(frozen=True)
class ZswapConfig:
    enabled: bool = True          # pages being swapped out go to the compressed pool first
    max_pool_percent: int = 20    # the pool's limit, in percent of RAM


@dataclass(frozen=True)
class ProcessConfig:
    """A process the machine starts at boot: spawn NAME [workload=KIND] [key=value...]."""
    name: str
    workload: str | None
    spawn: dict              # text, data, stack, uid, oom_score_adj, guard
    options: dict            # the workload's options, checked against its kind


@dataclass(frozen=True)
class MachineConfig:
    name: str
    seed: int
    cpus: int
    clock: ClockConfig
    kernel: KernelConfig
    memory_map: tuple[Region, ...]
    nodes: tuple[NodeConfig, ...]
    distance: tuple[tuple[int, ...], ...]
    pci_windows: tuple[PciWindow, ...]
    hotplug_block_size: int
    swap: tuple[SwapConfig, ...]
    sysctl: dict = field(default_factory=dict)   # name -> raw value, checked by Machine
    processes: tuple[ProcessConfig, ...] = ()
    zswap: ZswapConfig = ZswapConfig()
    source: str = "<built-in>"

    @property
    def ram_regions(self) -> tuple[Region, ...]:
        return tuple(r for r in self.memory_map if r.kind == "ram")

    @property
    def ram_bytes(self) -> int:
        return sum(r.size for r in self.ram_regions)

    def with_seed(self, seed: int) -> "MachineConfig":
        from dataclasses import replace
        return replace(self, seed=seed)

    def without_processes(self) -> "MachineConfig":
        """The same machine with nothing started at boot (a quiet machine)."""
        from dataclasses import replace
        return replace(self, processes=())


# ---------------------------------------------------------------------------
# small typed getters: each names the key's path in its error
# ---------------------------------------------------------------------------

def _mapping(value, path: str, allowed: set[str], required: set[str] = frozenset()) -> dict:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(path, f"expected a mapping of keys, got {type(value).__name__}")
    for key in value:
        if key not in allowed:
            raise ConfigError(f"{path}.{key}" if path else str(key),
                              f"unknown key (known: {', '.join(sorted(allowed))})")
    for key in sorted(required):
        if key not in value:
            raise ConfigError(f"{path}.{key}" if path else key, "missing (required)")
    return value


def _join(path: str, key) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _number(d: dict, key: str, path: str, default=None) -> int:
    if key not in d:
        if default is None:
            raise ConfigError(_join(path, key), "missing (required)")
        return default
    try:
        return parse_number(d[key])
    except ValueError as e:
        raise ConfigError(_join(path, key), str(e)) from None


def _int(d: dict, key: str, path: str, default=None, *, lo=None, hi=None) -> int:
    if key not in d:
        if default is None:
            raise ConfigError(_join(path, key), "missing (required)")
        return default
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(_join(path, key), f"expected an integer, got {v!r}")
    if lo is not None and v < lo or hi is not None and v > hi:
        raise ConfigError(_join(path, key), f"{v} is out of range [{lo}, {hi}]")
    return v


def _str(d: dict, key: str, path: str, default=None) -> str:
    if key not in d:
        if default is None:
            raise ConfigError(_join(path, key), "missing (required)")
        return default
    v = d[key]
    if not isinstance(v, str) or not v.strip():
        raise ConfigError(_join(path, key), f"expected a non-empty string, got {v!r}")
    return v


def _bool(d: dict, key: str, path: str, default=False) -> bool:
    v = d.get(key, default)
    if not isinstance(v, bool):
        raise ConfigError(_join(path, key), f"expected true or false, got {v!r}")
    return v


def _list(d: dict, key: str, path: str, default=None) -> list:
    if key not in d:
        if default is None:
            raise ConfigError(_join(path, key), "missing (required)")
        return default
    v = d[key]
    if not isinstance(v, list):
        raise ConfigError(_join(path, key), f"expected a list, got {type(v).__name__}")
    return v


def _range(d: dict, path: str) -> tuple[int, int]:
    """A range given as start + size, or start + end (exclusive); page aligned."""
    start = _number(d, "start", path)
    if ("size" in d) == ("end" in d):
        raise ConfigError(path, "give exactly one of size or end (exclusive)")
    end = start + _number(d, "size", path) if "size" in d else _number(d, "end", path)
    if end <= start:
        raise ConfigError(path, f"empty range {start:#x}-{end:#x}")
    return start, end


def _fmt_range(start: int, end: int) -> str:
    return f"{start:#010x}-{end - 1:#010x}"


# ---------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------

def _parse_region(raw, path: str) -> Region:
    d = _mapping(raw, path, {"start", "size", "end", "type", "name", "cache", "hotplug",
                             "nonvolatile"}, {"start", "type"})
    kind = _str(d, "type", path)
    if kind not in REGION_KINDS:
        raise ConfigError(_join(path, "type"),
                          f"unknown type {kind!r} (known: {', '.join(REGION_KINDS)})")
    start, end = _range(d, path)
    default_name, default_cache = REGION_KINDS[kind]
    if default_name is None and "name" not in d:
        raise ConfigError(_join(path, "name"), f"a {kind} region needs a name (as iomem shows it)")
    name = _str(d, "name", path, default_name)
    cache = _str(d, "cache", path, default_cache)
    if cache not in CACHE_TYPES:
        raise ConfigError(_join(path, "cache"),
                          f"unknown cacheability {cache!r} (known: {', '.join(CACHE_TYPES)})")
    if kind == "ram" and (start % PAGE_SIZE or end % PAGE_SIZE):
        raise ConfigError(path, f"RAM range {_fmt_range(start, end)} is not 4 KiB aligned")
    return Region(start, end, kind, name, cache,
                  hotplug=_bool(d, "hotplug", path), nonvolatile=_bool(d, "nonvolatile", path))


def _check_no_overlap(items, path: str, what=lambda i: f"[{i}]") -> None:
    order = sorted(range(len(items)), key=lambda i: items[i].start)
    for a, b in zip(order, order[1:]):
        if items[b].start < items[a].end:
            raise ConfigError(f"{path}{what(b)}",
                              f"{_fmt_range(items[b].start, items[b].end)} overlaps "
                              f"{path}{what(a)} ({_fmt_range(items[a].start, items[a].end)})")


def _parse_nodes(raw_numa, cpus: int, ram: list[Region]) -> tuple[tuple[NodeConfig, ...], tuple]:
    numa = _mapping(raw_numa, "numa", {"nodes", "distance"}, {"nodes"})
    raw_nodes = _list(numa, "nodes", "numa")
    if not raw_nodes:
        raise ConfigError("numa.nodes", "at least one node is needed")
    nodes = []
    cpu_owner = {}
    for i, raw in enumerate(raw_nodes):
        path = f"numa.nodes[{i}]"
        d = _mapping(raw, path, {"id", "start", "size", "end", "cpus"}, {"start"})
        node_id = _int(d, "id", path, i, lo=0, hi=63)
        if node_id != i:
            raise ConfigError(_join(path, "id"), f"nodes are numbered in order: expected {i}, got {node_id}")
        start, end = _range(d, path)
        for what, addr in (("start", start), ("end", end)):
            if addr % PAGEBLOCK_BYTES:
                raise ConfigError(_join(path, what), f"{addr:#x} is not 2 MiB aligned (a 2 MiB "
                                                     f"pageblock belongs to one node)")
        cpu_list = _list(d, "cpus", path, [])
        for j, c in enumerate(cpu_list):
            if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < cpus:
                raise ConfigError(f"{path}.cpus[{j}]", f"expected a CPU number 0..{cpus - 1}, got {c!r}")
            if c in cpu_owner:
                raise ConfigError(f"{path}.cpus[{j}]", f"CPU {c} already belongs to node {cpu_owner[c]}")
            cpu_owner[c] = i
        nodes.append(NodeConfig(i, start, end, tuple(cpu_list)))
    _check_no_overlap(nodes, "numa.nodes")
    for c in range(cpus):
        if c not in cpu_owner:
            # A CPU no node claims sits on node 0, as Linux does without SRAT affinity.
            n0 = nodes[0]
            nodes[0] = NodeConfig(0, n0.start, n0.end, tuple(sorted(n0.cpus + (c,))))
            cpu_owner[c] = 0
    for i, r in enumerate(ram):
        covered = sum(max(0, min(r.end, n.end) - max(r.start, n.start)) for n in nodes)
        if covered != r.size:
            raise ConfigError("numa.nodes", f"RAM {_fmt_range(r.start, r.end)} is not wholly "
                                            f"inside the nodes' ranges")
    n = len(nodes)
    if "distance" in numa:
        dist = _list(numa, "distance", "numa")
        if len(dist) != n or any(not isinstance(row, list) or len(row) != n for row in dist):
            raise ConfigError("numa.distance", f"expected a {n}x{n} table of distances")
        for a in range(n):
            for b in range(n):
                v = dist[a][b]
                if isinstance(v, bool) or not isinstance(v, int) or not 10 <= v <= 254:
                    raise ConfigError(f"numa.distance[{a}][{b}]", f"expected 10..254, got {v!r}")
                if (a == b) != (v == 10):
                    raise ConfigError(f"numa.distance[{a}][{b}]",
                                      "the local distance is 10 and only the local distance is 10")
        distance = tuple(tuple(row) for row in dist)
    else:
        distance = tuple(tuple(10 if a == b else 20 for b in range(n)) for a in range(n))
    return tuple(nodes), distance


def _parse_kernel(raw) -> KernelConfig:
    d = _mapping(raw, "kernel", {"low_reserve", "image_base", "image_size", "struct_page_bytes"})
    k = KernelConfig(
        low_reserve=_number(d, "low_reserve", "kernel", MiB),
        image_base=_number(d, "image_base", "kernel", 16 * MiB),
        image_size=_number(d, "image_size", "kernel", 32 * MiB),
        struct_page_bytes=_int(d, "struct_page_bytes", "kernel", 64, lo=1, hi=4096),
    )
    for key in ("low_reserve", "image_base", "image_size"):
        if getattr(k, key) % PAGE_SIZE:
            raise ConfigError(f"kernel.{key}", f"{getattr(k, key):#x} is not 4 KiB aligned")
    return k


def _parse_swap(raw) -> tuple[SwapConfig, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("swap", "expected a list of swap devices")
    out, names = [], set()
    for i, item in enumerate(raw):
        path = f"swap[{i}]"
        d = _mapping(item, path, {"name", "size", "priority"}, {"name", "size"})
        name = _str(d, "name", path)
        if name in names:
            raise ConfigError(_join(path, "name"), f"{name!r} is listed twice")
        names.add(name)
        size = _number(d, "size", path)
        if size < 2 * PAGE_SIZE or size % PAGE_SIZE:
            raise ConfigError(_join(path, "size"), "a swap area is a whole number of pages, "
                                                   "at least two (one is the header)")
        prio = _int(d, "priority", path, 0, lo=-1, hi=32767) if "priority" in d else None
        out.append(SwapConfig(name, size, prio))
    return tuple(out)


def parse(raw, source: str = "<string>") -> MachineConfig:
    """Validate a parsed YAML document and build the frozen MachineConfig."""
    top = _mapping(raw, "", {"machine", "clock", "kernel", "memory_map", "numa", "pci",
                             "hotplug", "swap", "zswap", "sysctl", "processes"},
                   {"memory_map", "numa"})
    m = _mapping(top.get("machine"), "machine", {"name", "seed", "cpus"})
    cpus = _int(m, "cpus", "machine", 1, lo=1, hi=256)
    c = _mapping(top.get("clock"), "clock", {"hz", "tick_ms", "scavenge_period",
                                             "pressure_interval"})
    clock = ClockConfig(hz=_int(c, "hz", "clock", 100, lo=1, hi=10000),
                        tick_ms=_int(c, "tick_ms", "clock", 10, lo=1, hi=1000),
                        scavenge_period=_int(c, "scavenge_period", "clock", 50, lo=1, hi=1 << 20),
                        pressure_interval=_int(c, "pressure_interval", "clock", 100, lo=1,
                                               hi=1 << 20))
    kernel = _parse_kernel(top.get("kernel"))

    raw_map = top["memory_map"]
    if not isinstance(raw_map, list) or not raw_map:
        raise ConfigError("memory_map", "expected a non-empty list of regions")
    regions = [_parse_region(r, f"memory_map[{i}]") for i, r in enumerate(raw_map)]
    _check_no_overlap(regions, "memory_map")
    ram = [r for r in regions if r.kind == "ram"]
    if not ram:
        raise ConfigError("memory_map", "no region of type ram")

    p = _mapping(top.get("pci"), "pci", {"windows"})
    windows = []
    for i, w in enumerate(_list(p, "windows", "pci", [])):
        path = f"pci.windows[{i}]"
        d = _mapping(w, path, {"start", "size", "end", "name"}, {"start"})
        start, end = _range(d, path)
        windows.append(PciWindow(start, end, _str(d, "name", path, "PCI Bus 0000:00")))
    _check_no_overlap(windows, "pci.windows")
    for i, w in enumerate(windows):
        for j, r in enumerate(regions):
            if r.kind in ("ram", "rom", "acpi", "acpi_nvs", "pmem", "reserved") \
                    and r.start < w.end and w.start < r.end:
                raise ConfigError(f"pci.windows[{i}]",
                                  f"{_fmt_range(w.start, w.end)} overlaps memory_map[{j}] "
                                  f"({r.kind} {_fmt_range(r.start, r.end)}); a PCI window holds "
                                  f"only device MMIO")
            if r.kind == "mmio" and r.start < w.end and w.start < r.end \
                    and not (w.start <= r.start and r.end <= w.end):
                raise ConfigError(f"memory_map[{j}]",
                                  f"{r.name} {_fmt_range(r.start, r.end)} straddles the edge of "
                                  f"pci.windows[{i}] ({_fmt_range(w.start, w.end)}): a device "
                                  f"range lies wholly inside a window or outside it")

    h = _mapping(top.get("hotplug"), "hotplug", {"block_size"})
    block = _number(h, "block_size", "hotplug", 128 * MiB)
    if not is_power_of_two(block) or block < 2 * MiB:
        raise ConfigError("hotplug.block_size", f"{fmt_size(block)} must be a power of two, at least 2M")

    nodes, distance = _parse_nodes(top["numa"], cpus, ram)

    sysctl = _parse_sysctl(top.get("sysctl"))
    cfg = MachineConfig(
        name=_str(m, "name", "machine", "memfs"),
        seed=_int(m, "seed", "machine", 1, lo=0),
        cpus=cpus, clock=clock, kernel=kernel,
        memory_map=tuple(sorted(regions, key=lambda r: r.start)),
        nodes=nodes, distance=distance, pci_windows=tuple(windows),
        hotplug_block_size=block, swap=_parse_swap(top.get("swap")),
        sysctl=dict(sysctl), processes=_parse_processes(top.get("processes")),
        zswap=_parse_zswap(top.get("zswap")), source=source)
    _check_kernel_fits(cfg)
    return cfg


def _parse_zswap(raw) -> ZswapConfig:
    z = _mapping(raw, "zswap", {"enabled", "max_pool_percent"})
    return ZswapConfig(enabled=_bool(z, "enabled", "zswap", True),
                       max_pool_percent=_int(z, "max_pool_percent", "zswap", 20, lo=0, hi=100))


SPAWN_KEYS = {"text": "size", "data": "size", "stack": "size", "uid": "int",
              "oom_score_adj": "int", "guard": "bool"}


def _parse_processes(raw) -> tuple[ProcessConfig, ...]:
    """The processes started at boot; workload options are checked against their kind."""
    from .workloads import KINDS, OPTION_KEYS
    from .workloads.base import parse_options
    from .errors import EngineError
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("processes", "expected a list of processes")
    out = []
    for i, item in enumerate(raw):
        path = f"processes[{i}]"
        d = _mapping(item, path, {"name", "workload"} | set(SPAWN_KEYS) | set(OPTION_KEYS),
                     {"name"})
        name = _str(d, "name", path)
        kind = d.get("workload")
        if kind is not None and kind not in KINDS:
            raise ConfigError(_join(path, "workload"), f"unknown workload {kind!r} "
                                                       f"(known: {', '.join(KINDS)})")
        spawn = {}
        for key, typ in SPAWN_KEYS.items():
            if key in d:
                if typ == "size":
                    spawn[key] = _number(d, key, path)
                elif typ == "int":
                    spawn[key] = _int(d, key, path)
                elif not isinstance(d[key], bool):
                    raise ConfigError(_join(path, key), "expected true or false")
                else:
                    spawn[key] = d[key]
        options = {k: v for k, v in d.items() if k in OPTION_KEYS}
        if options and kind is None:
            raise ConfigError(path, f"{', '.join(options)} are workload options: give workload:")
        if kind is not None:
            try:
                parse_options(kind, KINDS[kind].options, options)
            except EngineError as e:
                raise ConfigError(path, e.reason) from None
        out.append(ProcessConfig(name, kind, spawn, options))
    return tuple(out)


def _parse_sysctl(raw) -> dict:
    """Initial sys/vm values, checked against each knob's bounds (the tunable table)."""
    # The table lives beside the code that reads each knob; imported lazily.
    from .sysctl import all_tunables
    tunables = {t.name: t for t in all_tunables()}
    d = _mapping(raw, "sysctl", set(tunables))
    out = {}
    for name, value in d.items():
        t = tunables[name]
        if t.length is not None:
            if not isinstance(value, list) or len(value) != t.length:
                raise ConfigError(f"sysctl.{name}", f"expected a list of {t.length} integers")
            value = tuple(value)
        try:
            out[name] = t.validate(value)
        except ValueError as e:
            raise ConfigError(f"sysctl.{name}", str(e)) from None
    return out


def _check_kernel_fits(cfg: MachineConfig) -> None:
    """RAM must hold the kernel's boot reserve with room left for the page allocator."""
    k = cfg.kernel
    image_end = k.image_base + k.image_size
    if not any(r.start <= k.image_base and image_end <= r.end for r in cfg.ram_regions):
        raise ConfigError("kernel.image_base", f"the kernel image "
                          f"{_fmt_range(k.image_base, image_end)} does not lie inside one RAM region")
    ram_pages = cfg.ram_bytes // PAGE_SIZE
    memmap = -(-ram_pages * k.struct_page_bytes // PAGE_SIZE) * PAGE_SIZE
    reserve = k.low_reserve + k.image_size + memmap
    floor = 4 * MiB                 # what the page allocator needs to be of any use
    if cfg.ram_bytes < reserve + floor:
        raise ConfigError("memory_map", f"{fmt_size(cfg.ram_bytes)} of RAM is smaller than the "
                          f"kernel's reserve ({fmt_size(k.low_reserve)} low memory + "
                          f"{fmt_size(k.image_size)} image + {memmap // 1024}K memmap) plus "
                          f"{fmt_size(floor)} for the page allocator")


def load(path: str | Path) -> MachineConfig:
    """Read and validate a machine description file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(str(path), f"cannot read: {e.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise ConfigError(str(path), f"not valid YAML{line}: {getattr(e, 'problem', e)}") from None
    return parse(raw, source=str(path))
