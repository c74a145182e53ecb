"""Machine: the simulated computer — builds every subsystem, owns the one lock.

Locking: `Machine.mu` (an RLock) is the engine lock. Every public method of
Machine takes it, so engine users (tests, the FUSE adapter) never see a
half-done mutation; snapshot methods copy numbers under it and return frozen
data that is formatted outside it. Nothing blocks or waits while holding it.
Subsystems below (pmm, devices) assume the caller holds it.

Commands validate everything first and mutate after, so a rejected command
(EngineError) leaves the machine exactly as it was.
"""
from __future__ import annotations

import os
import random
import threading
import time

import numpy as np

from . import views
from .background import Background
from .clock import Clock, Ticker
from .commit import commit_limit_pages, default_reserves_kb, enough_memory
from .reclaim.swap import COUNT_MASK as SWAP_COUNT_MASK, MAX_SLOTS as SWAP_MAX_SLOTS
from .config import MachineConfig
from .devices.balloon import MAX_TARGET as BALLOON_MAX, Balloon
from .devices.hotplug import AUTO_ONLINE, ONLINE_TYPES, Hotplug
from .devices.iomem import PhysMap, Resource
from .devices.memfail import MemoryFailure
from .errors import Busy, EngineError, InvalidArgument, NotPermitted, OutOfMemory
from .kmsg import KernelLog
from .pmm import watermarks
from .pmm.allocator import PhysicalAllocator
from .pmm.boot import boot
from .pmm.frames import KOWNER_BALLOON, KOWNER_ZSWAP, TYPE_MASK, MigrateType, PageType
from .pmm.hugetlb import HPAGE_KB, MAX_COUNT as HUGETLB_MAX, HugetlbPool
from .pmm.zone import ZONE_MOVABLE, ZONE_NAMES, ZONE_NORMAL, Zone
from .stats import VmEvent, event_counters
from .vmm.pte import MAX_SWAPFILES as P_MAX_SWAPFILES
from .reclaim.compaction import Compactor
from .reclaim.oom import OomKiller
from .reclaim.pressure import Pressure
from .reclaim.psi import Psi
from .reclaim.swap import SwapSystem
from .reclaim.vmscan import Reclaimer
from .reclaim.zswap import Zswap
from .sysctl import all_tunables
from .trace import TraceLog
from .units import PAGE_SHIFT, PAGE_SIZE, fmt_size, is_power_of_two, runs_of
from .vmm import views as vmm_views
from .vmm.tasks import Tasks
from .vmm.thp import THP_MODES
from .vmm.vmm import Vmm


class Machine:
    def __init__(self, cfg: MachineConfig, *, paused: bool = False):
        self.mu = threading.RLock()
        self.config = cfg
        self.boot_time = int(time.time())           # wall-clock epoch of boot (stat btime)
        self.clock = Clock(cfg.clock.hz, cfg.clock.tick_ms, paused)
        self.kmsg = KernelLog()
        self.trace = TraceLog()
        self.rng = random.Random(cfg.seed)          # the one generator everything random draws from
        self.events = event_counters()
        layout = boot(cfg)
        self.ft = layout.ft
        self.node_zones: list[list[Zone]] = layout.node_zones
        self.node_ram = layout.node_ram
        self.reservations = layout.reservations
        self.memmap_pages = layout.memmap_pages
        self.cpu_node = {cpu: node.id for node in cfg.nodes for cpu in node.cpus}
        self.pmm = PhysicalAllocator(self.ft, self.node_zones, cfg.distance, self.cpu_node,
                                     self.events)
        self.physmap = PhysMap(cfg)
        self.direct_map_kb = views.direct_map_kb(cfg.ram_regions)   # (4k, 2M, 1G) kB
        self.swap = SwapSystem(self.events, self.ft)
        for s in cfg.swap:
            self.swap.add_area(s.name, s.size, s.priority, P_MAX_SWAPFILES)
        self.swap.zswap = Zswap(self.swap, self.pmm, self.events, self.total_ram_pages,
                                enabled=cfg.zswap.enabled,
                                max_pool_percent=cfg.zswap.max_pool_percent)
        self.tunables = {t.name: t for t in all_tunables()}
        self.sysctl = self._initial_sysctl(cfg)
        # The shared zero page lives in the kernel image, as Linux's empty_zero_page does.
        image = next(r for r in layout.reservations if r.what == "kernel image")
        self.vmm = Vmm(self.ft, self.pmm, self.events, zero_pfn=image.end_pfn - 1,
                       nr_zones=len(self.zones), nr_nodes=len(self.node_zones))
        self.vmm.commit_policy = self._commit_allowed
        self.vmm.trace = self.trace
        self.vmm.swap = self.swap
        self.swap.orphan = self.vmm.free_orphan_cache
        self.vmm.kowners[KOWNER_ZSWAP] = self.swap.zswap
        self.psi = Psi(cfg.clock.tick_ms * 1000)
        self.vmm.psi = self.psi
        self.oom = OomKiller(self)
        self.reclaim = Reclaimer(self)
        self.vmm.reclaim = self.reclaim
        self._apply_tunables()
        self._default_min_free = watermarks.default_min_free_kbytes(
            watermarks.lowmem_pages(self.zones))
        self.poisoned: set[int] = set()             # frames found faulty (HardwareCorrupted)
        self.hotplug = Hotplug(self)
        self.memfail = MemoryFailure(self)
        self.balloon = Balloon(self)
        self.compactor = Compactor(self)
        self.hugetlb = HugetlbPool(self)
        self.vmm.kowners[KOWNER_BALLOON] = self.balloon
        self._ticker: Ticker | None = None
        views.log_boot(self)
        self.tasks = Tasks(self)
        self.pressure_src = Pressure(self)
        self.background = Background(self)
        self._start_processes(cfg)
        self.publish_trace()

    def _start_processes(self, cfg: MachineConfig) -> None:
        """The config's processes list: spawned at boot, in order."""
        from .config import ConfigError
        from .errors import EngineError
        from .workloads import make
        for i, pc in enumerate(cfg.processes):
            try:
                w = make(pc.workload, pc.options) if pc.workload else None
                self.tasks.spawn(pc.name, workload=w, **pc.spawn)
            except EngineError as e:
                raise ConfigError(f"processes[{i}]", f"{pc.name}: {e.reason}") from None

    # ------------------------------------------------------------------
    # construction helpers
    # ------------------------------------------------------------------

    @property
    def zones(self) -> list[Zone]:
        return self.pmm.zones

    def _initial_sysctl(self, cfg: MachineConfig) -> dict:
        """Config values (already checked by config.parse), else each knob's default."""
        computed = {"min_free_kbytes":
                    watermarks.default_min_free_kbytes(watermarks.lowmem_pages(self.zones))}
        computed.update(default_reserves_kb(sum(z.free_pages for z in self.zones)))
        values = {}
        for name, t in self.tunables.items():
            if name in cfg.sysctl:
                values[name] = cfg.sysctl[name]
            elif t.default is None:
                values[name] = computed[name]
            else:
                values[name] = t.default
        return values

    def _apply_tunables(self) -> None:
        """Recompute everything the tunables feed: watermarks, protection, per-cpu stacks."""
        s = self.sysctl
        watermarks.setup_watermarks(self.zones, s["min_free_kbytes"], s["watermark_scale_factor"])
        watermarks.setup_lowmem_reserve(self.node_zones, s["lowmem_reserve_ratio"])
        for z in self.zones:
            watermarks.setup_pcp(z, s["percpu_pagelist_high_fraction"])
            for pcp in z.pcp.values():
                if pcp.count > pcp.high:
                    z._pcp_drain(pcp, pcp.count - pcp.high)
        self.vmm.max_map_count = s["max_map_count"]
        self.vmm.page_cluster = s["page-cluster"]

    def total_ram_pages(self) -> int:
        return sum(z.managed_pages for z in self.zones)

    def total_swap_pages(self) -> int:
        return self.swap.total_slots()

    def commit_limit(self) -> int:
        s = self.sysctl
        return commit_limit_pages(self.total_ram_pages(), self.total_swap_pages(),
                                  s["overcommit_ratio"], s["overcommit_kbytes"],
                                  self.hugetlb.total_pages())

    def _commit_allowed(self, pages: int, mm) -> bool:
        s = self.sysctl
        return enough_memory(pages, self.vmm.committed, mode=s["overcommit_memory"],
                             total_ram=self.total_ram_pages(), total_swap=self.total_swap_pages(),
                             limit=self.commit_limit(), admin_reserve_kb=s["admin_reserve_kbytes"],
                             user_reserve_kb=s["user_reserve_kbytes"],
                             is_admin=mm is not None and mm.uid == 0,
                             mm_total_vm=mm.total_vm() if mm is not None else None)

    # ------------------------------------------------------------------
    # time
    # ------------------------------------------------------------------

    def start(self) -> None:
        """Start the ticker thread (the mount does; engine tests step by hand)."""
        with self.mu:
            if self._ticker is None:
                self._ticker = Ticker(self)
                self._ticker.start()

    def shutdown(self) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker:
            ticker.stop()
        self.trace.close()

    def step(self, n: int = 1) -> None:
        """Advance n ticks. Each tick every process runs (its workload, a pending
        notification), then the background tasks due, by priority."""
        for _ in range(n):
            with self.mu:
                self.clock.tick += 1
                try:
                    ran = self.tasks.run_tick()
                    self.background.run(self.clock.tick, ran)
                    self.psi.tick(self.tasks.ran_pids)
                finally:
                    self.publish_trace()

    def publish_trace(self) -> None:
        """Hand the events recorded since the last call to trace readers (engine lock held)."""
        self.trace.publish(self.clock.tick)

    def notify(self, level: str) -> int:
        """A low-memory notification to every process (ctl `notify low|critical`)."""
        if level not in ("low", "critical"):
            raise InvalidArgument(f"notify: level {level!r} must be low or critical")
        with self.mu:
            n = self.tasks.notify_all(level)
            self.kmsg.log(self.clock.uptime_us, f"notify: {level} memory: {n} processes notified")
            self.publish_trace()
            return n

    def squeeze(self, size: int, ticks: int = 100) -> int:
        """ctl `pressure SIZE [ticks=N]`: notify every process, then take SIZE of RAM for N
        ticks (reclaim/pressure.py). Returns the pages asked for."""
        pages = size // PAGE_SIZE
        if pages < 1:
            raise InvalidArgument(f"pressure: {size} bytes is less than a page")
        if not 1 <= ticks <= 1 << 30:
            raise InvalidArgument(f"pressure: ticks={ticks} must be at least 1")
        with self.mu:
            if pages > self.total_ram_pages():
                raise InvalidArgument(f"pressure: {fmt_size(size)} is more than the machine's RAM "
                                      f"({fmt_size(self.total_ram_pages() * PAGE_SIZE)})")
            n = self.tasks.notify_all("low")
            self.pressure_src.add(pages, ticks)
            self.kmsg.log(self.clock.uptime_us, f"pressure: squeeze of {pages} pages for {ticks} "
                                                f"ticks; {n} processes notified")
            self.trace.emit(0, "pressure", f"pages={pages} ticks={ticks}")
            self.publish_trace()
            return pages

    # ------------------------------------------------------------------
    # swap areas
    # ------------------------------------------------------------------

    def swapon(self, name: str, size: int, priority: int | None = None) -> None:
        if not name or any(c.isspace() for c in name) or not name.startswith("/"):
            raise InvalidArgument(f"swapon: {name!r} must be an absolute path without spaces "
                                  f"(/dev/vdc or /swapfile)")
        if size % PAGE_SIZE or size < 2 * PAGE_SIZE:
            raise InvalidArgument(f"swapon: a swap area is a whole number of pages, at least two "
                                  f"(one is the header); {size} bytes is not")
        if size // PAGE_SIZE - 1 > SWAP_MAX_SLOTS:
            raise InvalidArgument(f"swapon: at most {fmt_size((SWAP_MAX_SLOTS + 1) * PAGE_SIZE)} "
                                  f"per area")
        if priority is not None and not 0 <= priority <= 32767:
            raise InvalidArgument(f"swapon: prio={priority} must be between 0 and 32767 "
                                  f"(leave it out for the next default, negative, priority)")
        with self.mu:
            if self.swap.by_name(name) is not None:
                raise Busy(f"swapon: {name} is already in use as swap")
            if len(self.swap.active()) >= P_MAX_SWAPFILES:
                raise InvalidArgument(f"swapon: {P_MAX_SWAPFILES} swap areas already (MAX_SWAPFILES)")
            a = self.swap.add_area(name, size, priority, P_MAX_SWAPFILES)
            self.kmsg.log(self.clock.uptime_us, f"Adding {a.size_kb}k swap on {a.name}.  "
                                                f"Priority:{a.priority} extents:1 across:{a.size_kb}k")

    def swapoff(self, name: str) -> int:
        """Bring every page of the area back into RAM and remove it; ENOMEM (nothing changed)
        if free RAM cannot hold them. Returns the pages brought in."""
        with self.mu:
            a = self.swap.by_name(name)
            if a is None:
                known = ", ".join(x.name for x in self.swap.active()) or "none"
                raise InvalidArgument(f"swapoff: {name} is not an active swap area (active: {known})")
            need = sum(1 for off in range(1, a.nr_slots + 1)
                       if a.count[off] & SWAP_COUNT_MASK and not a.cache[off])
            room = sum(max(0, z.free_pages - z.wmark_min) for z in self.zones)
            if need > room:
                raise OutOfMemory(f"swapoff: {name} holds {need} pages that are not in RAM, but "
                                  f"only {room} frames are free above the min watermarks; nothing "
                                  f"was changed")
            s = self.sysctl
            if s["overcommit_memory"] == 2:
                limit = commit_limit_pages(self.total_ram_pages(), self.total_swap_pages() - a.nr_slots,
                                           s["overcommit_ratio"], s["overcommit_kbytes"],
                                           self.hugetlb.total_pages())
                if self.vmm.committed > limit:
                    raise OutOfMemory(f"swapoff: without {name} the commit limit would be {limit} "
                                      f"pages, below Committed_AS ({self.vmm.committed}); nothing "
                                      f"was changed")
            brought = self.vmm.unuse(a)
            if brought is None:
                raise OutOfMemory(f"swapoff: ran out of free frames bringing {name} back in; "
                                  f"nothing was changed")
            self.swap.remove_area(a)
            self.kmsg.log(self.clock.uptime_us, f"swapoff: {name}: {brought} pages brought back "
                                                f"into RAM; area removed")
            self.publish_trace()
            return brought

    def clock_command(self, verb: str, arg: int | None = None) -> None:
        with self.mu:
            if verb == "pause":
                self.clock.paused = True
            elif verb == "resume":
                self.clock.paused = False
            elif verb == "hz":
                self.clock.hz = arg
            elif verb == "step":
                self.step(arg)
        if self._ticker:
            self._ticker.poke()

    def log(self, text: str) -> None:
        with self.mu:
            self.kmsg.log(self.clock.uptime_us, text)

    # ------------------------------------------------------------------
    # sysctl
    # ------------------------------------------------------------------

    def sysctl_read(self, name: str) -> str:
        with self.mu:
            t = self.tunables[name]
            if t.write_only:
                raise NotPermitted(f"sysctl: vm.{name} is write-only (an action, not a setting)")
            return t.format(self.sysctl[name])

    def sysctl_write(self, name: str, text: str) -> None:
        t = self.tunables[name]
        try:
            value = t.parse(text)
        except ValueError as e:
            raise InvalidArgument(str(e)) from None
        with self.mu:
            if t.write_only:
                self._sysctl_action(name, value)
                return
            if t.length and len(value) < t.length:       # like proc_dointvec: the rest stays
                value = value + tuple(self.sysctl[name][len(value):])
            self.sysctl[name] = value
            # Only one of the pair is in force: setting one disables the other (reads 0).
            other = {"overcommit_kbytes": "overcommit_ratio", "overcommit_ratio": "overcommit_kbytes"}
            if name in other:
                self.sysctl[other[name]] = 0
            self._apply_tunables()
            self.kmsg.log(self.clock.uptime_us, f"sysctl: vm.{name} = {t.format(value).strip()}")

    def _sysctl_action(self, name: str, value: int) -> None:
        """drop_caches: 1 drops clean page cache, 2 slab (none here), 3 both; 4 = quiet.
        compact_memory: 1 compacts every zone."""
        if name == "drop_caches":
            if not value & 3:
                raise InvalidArgument("drop_caches: write 1 (page cache), 2 (slab) or 3 (both)")
            dropped = 0
            if value & 1:
                dropped = self.reclaim.drop_pagecache()
                self.events[VmEvent.DROP_PAGECACHE] += 1
            if value & 2:
                self.events[VmEvent.DROP_SLAB] += 1
            if not value & 4:
                self.kmsg.log(self.clock.uptime_us, f"memfs ({os.getpid()}): drop_caches: "
                                                    f"{value} ({dropped} pages dropped)")
            self.publish_trace()
        elif name == "compact_memory":
            moved = self.compactor.compact_all()
            self.kmsg.log(self.clock.uptime_us, f"compact_memory: {moved} pages migrated")
            self.publish_trace()

    # ------------------------------------------------------------------
    # physical allocation commands (palloc / pfree)
    # ------------------------------------------------------------------

    def _cpu_for(self, node: int | None) -> int:
        if node is None:
            return 0
        cpus = self.config.nodes[node].cpus
        return cpus[0] if cpus else 0

    def _eligible(self, *, node: int | None, zone: str | None, below_pfn: int | None
                  ) -> tuple[tuple[Zone, ...], int]:
        """The zones a palloc may use, in fallback order, and the highest zone index."""
        if node is not None and not 0 <= node < len(self.node_zones):
            raise InvalidArgument(f"palloc: node={node}: this machine has nodes 0-{len(self.node_zones) - 1}")
        highest = ZONE_NORMAL
        if zone is not None:
            names = {n.lower(): i for i, n in enumerate(ZONE_NAMES)}
            if zone.lower() not in names:
                raise InvalidArgument(f"palloc: zone={zone}: unknown zone (known: {', '.join(ZONE_NAMES)})")
            highest = names[zone.lower()]
            if highest >= ZONE_MOVABLE:
                raise InvalidArgument(f"palloc: zone={zone}: a kernel allocation is unmovable, and "
                                      f"{ZONE_NAMES[highest]} holds only movable pages")
        zonelist = self.pmm.zonelist(node if node is not None else self.cpu_node[0], highest)
        if node is not None:
            zonelist = tuple(z for z in zonelist if z.node_id == node)
        if zone is not None:
            zonelist = tuple(z for z in zonelist if z.idx == highest)
        if below_pfn is not None:
            zonelist = tuple(z for z in zonelist if z.start_pfn < below_pfn)
            if zonelist:
                highest = max(z.idx for z in zonelist)
        if not zonelist:
            where = " ".join(x for x in (f"node={node}" if node is not None else "",
                                         f"zone={zone}" if zone else "",
                                         f"below={below_pfn << PAGE_SHIFT:#x}" if below_pfn is not None else "")
                             if x)
            raise InvalidArgument(f"palloc: no zone with memory matches {where}")
        return zonelist, highest

    def palloc(self, *, count: int = 1, zone: str | None = None, node: int | None = None,
               contiguous: bool = False, below: int | None = None, align: int | None = None,
               boundary: int | None = None) -> list[tuple[int, int]]:
        """Allocate frames for a kernel user (a driver). Returns runs (first pfn, nr frames).

        With contiguous, align, boundary or below, the constrained allocator
        finds one physically contiguous buffer; otherwise frames come one by
        one from the per-cpu free-page stacks, wherever they are.
        """
        if count < 1:
            raise InvalidArgument("palloc: count must be at least 1")
        for key, size in (("align", align), ("boundary", boundary)):
            if size is not None and (not is_power_of_two(size) or size < PAGE_SIZE):
                raise InvalidArgument(f"palloc: {key}={fmt_size(size)} must be a power of two, at least 4K")
        if count > 1 and not contiguous and (align or boundary):
            raise InvalidArgument("palloc: align= and boundary= describe one contiguous buffer: "
                                  "add contiguous")
        if boundary is not None and count * PAGE_SIZE > boundary:
            raise InvalidArgument(f"palloc: {count} pages ({fmt_size(count * PAGE_SIZE)}) cannot fit "
                                  f"inside one {fmt_size(boundary)} boundary")
        if below is not None and below < PAGE_SIZE:
            raise InvalidArgument(f"palloc: below={below:#x} leaves no frame below it")
        below_pfn = None if below is None else below >> PAGE_SHIFT
        with self.mu:
            zonelist, highest = self._eligible(node=node, zone=zone, below_pfn=below_pfn)
            cpu = self._cpu_for(node)
            constrained = contiguous or align or boundary or below is not None
            if constrained and (contiguous or count == 1):
                runs = self._palloc_contig(count, zonelist, highest, below_pfn, align, boundary, cpu)
            elif constrained:
                runs = self._palloc_below(count, zonelist, highest, below_pfn, cpu)
            else:
                runs = self._palloc_pages(count, zonelist, highest, cpu)
            desc = ", ".join(f"{p:#x}" if n == 1 else f"{p:#x}-{p + n - 1:#x}" for p, n in runs[:8])
            more = f" and {len(runs) - 8} more runs" if len(runs) > 8 else ""
            self.kmsg.log(self.clock.uptime_us, f"palloc: {count} page{'s' * (count > 1)} "
                                                f"at pfn {desc}{more}")
            return runs

    def _palloc_contig(self, count, zonelist, highest, below_pfn, align, boundary, cpu):
        align_pages = (align or PAGE_SIZE) >> PAGE_SHIFT
        boundary_pages = None if boundary is None else boundary >> PAGE_SHIFT
        found = self.pmm.find_contig(count, zonelist, highest=highest, below_pfn=below_pfn,
                                     align_pages=align_pages, boundary_pages=boundary_pages)
        if found is None:
            raise OutOfMemory(f"palloc: no run of {count} free contiguous frames meets the "
                              f"constraints in {_zone_names(zonelist)} (above min watermarks)")
        z, start = found
        self.pmm.take_contig(z, start, count, cpu=cpu)
        return [(start, count)]

    def _palloc_pages(self, count, zonelist, highest, cpu):
        avail = self.pmm.available_pages(zonelist, highest)
        if avail < count:
            raise OutOfMemory(f"palloc: {count} pages asked, {avail} free above the min "
                              f"watermarks of {_zone_names(zonelist)}")
        pfns = []
        for _ in range(count):
            pfn = self.pmm.try_alloc_page(node=zonelist[0].node_id, cpu=cpu, highest=highest,
                                          mt=MigrateType.UNMOVABLE, zones=zonelist)
            if pfn is None:       # cannot happen after the check above; undo rather than leak
                for p in pfns:
                    self.pmm.free_page(p, cpu=cpu)
                raise OutOfMemory("palloc: ran out of frames half-way; nothing was allocated")
            pfns.append(pfn)
        return runs_of(pfns)

    def _palloc_below(self, count, zonelist, highest, below_pfn, cpu):
        free = 0
        flags = self.ft.flags_np()
        for z in zonelist:
            hi = min(z.end_pfn, below_pfn)
            below_here = int(np.count_nonzero((flags[z.start_pfn:hi] & TYPE_MASK) == PageType.FREE))
            free += min(below_here, max(0, z.free_pages - z.wmark_min - z.lowmem_reserve[highest]))
        if free < count:
            raise OutOfMemory(f"palloc: {count} pages asked, {free} free below "
                              f"{below_pfn << PAGE_SHIFT:#x} above the min watermarks")
        pfns = []
        for _ in range(count):
            z, pfn = self.pmm.find_contig(1, zonelist, highest=highest, below_pfn=below_pfn,
                                          align_pages=1, boundary_pages=None)
            self.pmm.take_contig(z, pfn, 1, cpu=cpu)
            pfns.append(pfn)
        return runs_of(pfns)

    def pfree(self, runs: list[tuple[int, int]]) -> int:
        """Free frames that palloc handed out. All named frames must be palloc'd, or nothing is freed."""
        with self.mu:
            flags = self.ft.flags_np()
            seen = set()
            for start, n in runs:
                if n < 1:
                    raise InvalidArgument("pfree: count must be at least 1")
                if start < 0:       # a negative index would wrap to the last frames
                    raise InvalidArgument(f"pfree: pfn {start} is negative; frame numbers start at 0")
                if start + n > self.ft.max_pfn:
                    raise InvalidArgument(f"pfree: pfn {max(start, self.ft.max_pfn):#x} is beyond the "
                                          f"last frame of RAM ({self.ft.max_pfn - 1:#x})")
                types = flags[start:start + n] & TYPE_MASK
                bad = np.flatnonzero(types != PageType.KERNEL)
                if bad.size:
                    pfn = start + int(bad[0])
                    raise InvalidArgument(f"pfree: frame {pfn:#x} {_describe(int(types[bad[0]]))}; "
                                          f"pfree takes only frames that palloc handed out")
                for p in range(start, start + n):
                    if p in seen:
                        raise InvalidArgument(f"pfree: frame {p:#x} is named twice")
                    seen.add(p)
            for start, n in runs:
                for p in range(start, start + n):
                    self.pmm.free_page(p, cpu=0)
            self.kmsg.log(self.clock.uptime_us, f"pfree: {len(seen)} page{'s' * (len(seen) > 1)}")
            return len(seen)

    # ------------------------------------------------------------------
    # devices
    # ------------------------------------------------------------------

    def place_bar(self, size: int, *, name: str | None = None, wide: bool = False,
                  prefetch: bool = False) -> Resource:
        with self.mu:
            bar = self.physmap.place_bar(size, name=name, wide=wide, prefetch=prefetch)
            self.kmsg.log(self.clock.uptime_us,
                          f"pci {bar.name}: BAR 0 [mem {bar.start:#018x}-{bar.end - 1:#018x}"
                          f"{' 64bit' if wide else ''}{' pref' if prefetch else ''}]: assigned")
            return bar

    # ------------------------------------------------------------------
    # memory hot-plug (devices/system/memory, dimm add/remove)
    # ------------------------------------------------------------------

    def memory_changed(self) -> None:
        """Memory went online or offline: min_free_kbytes (unless set by hand), watermarks,
        lowmem protection, per-cpu stacks and zonelists are worked out again
        (init_per_zone_wmark_min, build_all_zonelists)."""
        default = watermarks.default_min_free_kbytes(watermarks.lowmem_pages(self.zones))
        if self.sysctl["min_free_kbytes"] == self._default_min_free:
            self.sysctl["min_free_kbytes"] = default
        self._default_min_free = default
        self.pmm.build_zonelists()
        self._apply_tunables()

    def memory_probe(self, addr: int) -> int:
        """probe: add the memory block at physical address addr. Returns its index."""
        with self.mu:
            hp = self.hotplug
            hp.check_range(addr, hp.block_size, "probe")
            node = hp.node_of_address(addr)
            hp.check_online(addr, hp.block_size, node, hp.auto_online, "probe")
            [index] = hp.add_memory(addr, hp.block_size, node, None)
            self._auto_online([index])
            self.kmsg.log(self.clock.uptime_us, f"memory: probe [mem {addr:#018x}-"
                                                f"{addr + hp.block_size - 1:#018x}] node {node}")
            return index

    def _auto_online(self, indexes: list[int], how: str | None = None) -> None:
        """Online just-added blocks as auto_online_blocks (or how) says; if one cannot be,
        the added memory goes again and the error goes to the caller (nothing changed)."""
        hp = self.hotplug
        how = how or hp.auto_online
        if how == "offline":
            return
        done = []
        try:
            for i in indexes:
                hp.online(hp.blocks[i], how)
                done.append(i)
        except EngineError:
            for i in done:
                hp.offline(hp.blocks[i])        # nothing is in them yet: nothing to migrate
            hp.remove_memory(indexes)
            raise

    def memory_block_set(self, index: int, how: str) -> None:
        """Write to memoryN/state (online, online_kernel, online_movable, offline) or, with
        how "1"/"0", memoryN/online (the current state is no error there)."""
        with self.mu:
            hp = self.hotplug
            b = hp.block(index)
            if how in ("1", "0"):
                if b.online == (how == "1"):
                    return
                how = "online" if how == "1" else "offline"
            if how == "offline":
                hp.offline(b)
            elif how in ONLINE_TYPES:
                hp.online(b, how)
            else:
                raise InvalidArgument(f"memory{index}: state takes online, online_kernel, "
                                      f"online_movable or offline, not {how!r}")
            self.publish_trace()

    def set_auto_online(self, how: str) -> None:
        if how not in AUTO_ONLINE:
            raise InvalidArgument(f"auto_online_blocks: {how!r} is not one of "
                                  f"{', '.join(AUTO_ONLINE)}")
        with self.mu:
            self.hotplug.auto_online = how

    def dimm_add(self, size: int, node: int = 0, online: str | None = None) -> int:
        """Plug in a DIMM of size bytes on node: its blocks appear (and are onlined as
        auto_online_blocks or online= says). Returns the DIMM's id."""
        if node not in range(len(self.node_zones)):
            raise InvalidArgument(f"dimm add: node={node}: the machine has nodes 0-"
                                  f"{len(self.node_zones) - 1}")
        if online is not None and online not in AUTO_ONLINE:
            raise InvalidArgument(f"dimm add: online={online} is not one of {', '.join(AUTO_ONLINE)}")
        with self.mu:
            hp = self.hotplug
            if size <= 0 or size % hp.block_size:
                raise InvalidArgument(f"dimm add: a DIMM is a whole number of memory blocks "
                                      f"({fmt_size(hp.block_size)}); {fmt_size(size)} is not")
            addr = hp.free_dimm_address(size)
            dimm = hp.next_dimm
            hp.check_online(addr, size, node, online or hp.auto_online, "dimm add")
            indexes = hp.add_memory(addr, size, node, dimm)
            self._auto_online(indexes, online)
            hp.next_dimm += 1
            hp.dimms[dimm] = indexes
            self.kmsg.log(self.clock.uptime_us, f"memory: dimm{dimm} hot-added [mem {addr:#018x}-"
                                                f"{addr + size - 1:#018x}] node {node}, memory"
                                                f"{indexes[0]}-memory{indexes[-1]}")
            self.publish_trace()
            return dimm

    def dimm_remove(self, dimm: int) -> int:
        """Unplug a DIMM: its online blocks are offlined (every page migrated), then it goes.
        Busy, with every block back as it was, if one cannot go offline. Returns the pages
        migrated."""
        with self.mu:
            hp = self.hotplug
            indexes = hp.dimms.get(dimm)
            if indexes is None:
                known = ", ".join(str(d) for d in sorted(hp.dimms)) or "none"
                raise InvalidArgument(f"dimm remove: no DIMM {dimm} (present: {known})")
            # All the online blocks at once: none may take another's pages (each page moves
            # once), and the checks (movable, room) cover the whole DIMM before anything moves.
            try:
                moved = hp.offline_blocks([hp.blocks[i] for i in indexes if hp.blocks[i].online])
            except EngineError as e:
                raise Busy(f"dimm remove: dimm{dimm} stays: {e.reason}") from None
            hp.remove_memory(indexes)
            del hp.dimms[dimm]
            self.kmsg.log(self.clock.uptime_us, f"memory: dimm{dimm} removed (memory{indexes[0]}-"
                                                f"memory{indexes[-1]}, {moved} pages migrated)")
            self.publish_trace()
            return moved

    def ram_changed(self) -> None:
        """RAM was added or removed: the direct map covers what is there now."""
        merged: list[list[int]] = []
        for s, e in sorted(r for rs in self.node_ram for r in rs):
            if merged and merged[-1][1] == s:
                merged[-1][1] = e
            else:
                merged.append([s, e])
        self.direct_map_kb = views.direct_map_kb(
            [Resource(s << PAGE_SHIFT, e << PAGE_SHIFT, "", "ram", "wb") for s, e in merged])

    # ------------------------------------------------------------------
    # faulty RAM (devices/system/memory/{hard,soft}_offline_page, hwpoison)
    # ------------------------------------------------------------------

    def offline_page(self, addr: int, *, hard: bool) -> None:
        """hard_offline_page / soft_offline_page: addr is a physical address."""
        with self.mu:
            pfn = addr >> PAGE_SHIFT
            if hard:
                self.memfail.hard_offline(pfn)
            else:
                self.memfail.soft_offline(pfn)
            self.publish_trace()

    def inject_faults(self, rate: int, soft: bool = False) -> None:
        if rate < 0:
            raise InvalidArgument(f"hwpoison: rate={rate} must be 0 (stop) or more frames a second")
        with self.mu:
            self.memfail.rate, self.memfail.soft = rate, soft
            self.kmsg.log(self.clock.uptime_us,
                          f"hwpoison: injecting {'soft' if soft else 'hard'} failures at {rate} "
                          f"frames a second" if rate else "hwpoison: injection stopped")

    # ------------------------------------------------------------------
    # the virtio balloon (devices/virtio/balloon)
    # ------------------------------------------------------------------

    def balloon_set_target(self, pages: int) -> None:
        if not 0 <= pages <= BALLOON_MAX:
            raise InvalidArgument(f"balloon: target {pages} is not a page count from 0 to "
                                  f"{BALLOON_MAX} (num_pages is a u32)")
        with self.mu:
            self.balloon.set_target(pages)
            self.kmsg.log(self.clock.uptime_us, f"virtio_balloon virtio0: target {pages} pages "
                                                f"({pages * PAGE_SIZE // 1024} kB), actual "
                                                f"{self.balloon.actual}")

    def thp_enabled(self) -> str:
        return self.vmm.thp_mode

    def thp_set_enabled(self, mode: str) -> None:
        """kernel/mm/transparent_hugepage/enabled: always, madvise or never. Huge pages
        already mapped stay; the mode decides new faults."""
        if mode not in THP_MODES:
            raise InvalidArgument(f"transparent_hugepage/enabled: {mode!r} is not one of "
                                  f"{', '.join(THP_MODES)}")
        with self.mu:
            self.vmm.thp_mode = mode

    def balloon_view(self) -> dict:
        with self.mu:
            b = self.balloon
            return {"target": b.target, "actual": b.actual, "stats": b.stats(),
                    "reported": b.reported}

    # ------------------------------------------------------------------
    # the hugetlb pool (sys/vm/nr_hugepages, kernel/mm/hugepages, nodeN/hugepages)
    # ------------------------------------------------------------------

    def _hugetlb_count(self, nr, what: str) -> int:
        if isinstance(nr, bool) or not isinstance(nr, int):
            raise InvalidArgument(f"{what}: {nr!r} is not a whole number of {HPAGE_KB} kB pages")
        if not 0 <= nr <= HUGETLB_MAX:
            raise InvalidArgument(f"{what}: {nr} is not a page count from 0 to {HUGETLB_MAX}")
        return nr

    def hugetlb_set(self, nr: int, node: int | None = None) -> int:
        """nr_hugepages := nr (the machine's pool, or node's share of it with node): the
        pool grows as far as memory allows (no error if it falls short; kmsg says so) or
        shrinks. Returns the resulting count (the node's, with node)."""
        what = "nr_hugepages" if node is None else f"node{node} nr_hugepages"
        self._hugetlb_count(nr, what)
        if node is not None and (isinstance(node, bool) or not isinstance(node, int)
                                 or node not in range(len(self.node_zones))):
            raise InvalidArgument(f"{what}: the machine has nodes 0-{len(self.node_zones) - 1}")
        with self.mu:
            pool = self.hugetlb
            before = pool.nr_on(node)
            added, freed = pool.set_count(nr, node)
            now = pool.nr_on(node)
            if added or freed:
                self.kmsg.log(self.clock.uptime_us,
                              f"HugeTLB: {what} {before} -> {now} ({added} allocated, "
                              f"{freed} freed; pool {pool.nr} pages, "
                              f"{pool.total_pages() * 4} kB)")
            if now < nr:
                where = "" if node is None else f" node{node}"
                self.kmsg.log(self.clock.uptime_us,
                              f"HugeTLB: allocating {nr} of page size {HPAGE_KB // 1024}.00 MiB "
                              f"failed{where}.  Only allocated {now} hugepages.")
            self.publish_trace()
            return now

    def hugetlb_set_overcommit(self, nr: int) -> None:
        """nr_overcommit_hugepages: kept and shown (no surplus page is ever allocated)."""
        self._hugetlb_count(nr, "nr_overcommit_hugepages")
        with self.mu:
            self.hugetlb.overcommit = nr
            self.kmsg.log(self.clock.uptime_us, f"HugeTLB: nr_overcommit_hugepages = {nr}")

    def hugetlb_view(self) -> dict:
        """The default hstate's counts: machine-wide, and per node under "nodes"."""
        with self.mu:
            pool = self.hugetlb
            return {"page_kb": HPAGE_KB, "nr": pool.nr, "free": pool.free, "resv": 0,
                    "surplus": 0, "overcommit": pool.overcommit,
                    "nodes": [{"nr": pool.nr_on(n), "free": pool.free_on(n), "surplus": 0}
                              for n in range(len(self.node_zones))]}

    def hotplug_view(self) -> dict:
        with self.mu:
            hp = self.hotplug
            return {"block_size": hp.block_size, "auto_online": hp.auto_online,
                    "blocks": sorted(hp.blocks),
                    "nodes": {i: b.node for i, b in hp.blocks.items()}}

    def memory_block_view(self, index: int) -> dict | None:
        """online, node and valid_zones of block index (None if there is no such block)."""
        with self.mu:
            b = self.hotplug.blocks.get(index)
            if b is None:
                return None
            return {"online": b.online, "node": b.node, "dimm": b.dimm,
                    "valid_zones": self.hotplug.valid_zones(b)}

    # ------------------------------------------------------------------
    # snapshots (gathered under the lock, formatted by the caller)
    # ------------------------------------------------------------------

    def meminfo(self, node: int | None = None) -> views.MemInfo:
        with self.mu:
            return views.meminfo(self, node)

    def zoneinfo(self) -> list[views.ZoneView]:
        with self.mu:
            return [views.zone_view(self, z) for z in self.zones]

    def vmstat(self) -> list[tuple[str, int]]:
        with self.mu:
            return views.vmstat(self)

    def node_stats(self, node: int) -> list[tuple[str, int]]:
        with self.mu:
            return views.node_counters(self, node)

    def iomem(self) -> list[tuple[int, int, int, str]]:
        with self.mu:
            return self.physmap.iomem_lines()

    def physmap_rows(self) -> list[tuple[int, Resource]]:
        with self.mu:
            return [(d, Resource(r.start, r.end, r.name, r.kind, r.cache, r.flags))
                    for d, r in self.physmap.physmap_rows()]

    def swaps(self) -> list[views.SwapView]:
        with self.mu:
            return [views.SwapView(d.name, d.kind, d.size_kb, d.used_kb, d.priority)
                    for d in self.swap.active()]

    def pressure(self) -> tuple:
        """PSI for memory: ((avg10, avg60, avg300, total_us) for some, then for full)."""
        with self.mu:
            return self.psi.lines()

    def cpu_stat(self) -> views.CpuStat:
        with self.mu:
            return views.cpu_stat(self)

    def clock_state(self) -> dict:
        with self.mu:
            c = self.clock
            return {"tick": c.tick, "state": "paused" if c.paused else "running", "hz": c.hz,
                    "tick_ms": c.tick_ms, "uptime_us": c.uptime_us}

    # --- processes

    def has_pid(self, pid: int) -> bool:
        return pid in self.tasks.procs          # one dict probe: atomic, no lock needed

    def pids(self) -> list[int]:
        with self.mu:
            return sorted(self.tasks.procs)

    def proc_names(self) -> dict[str, int]:
        """name -> pid of the oldest process of that name (by-name/)."""
        with self.mu:
            out: dict[str, int] = {}
            for pid in sorted(self.tasks.procs):
                out.setdefault(self.tasks.procs[pid].comm, pid)
            return out

    def proc_view(self, pid: int, *, vmas: bool = False, stats: bool = False) -> vmm_views.ProcView:
        with self.mu:
            return vmm_views.proc_view(self, self.tasks.get(pid), vmas=vmas, stats=stats)

    def numa_maps(self, pid: int) -> list[vmm_views.NumaView]:
        with self.mu:
            return vmm_views.numa_maps(self, self.tasks.get(pid))

    def pte_dump(self, pid: int) -> vmm_views.PteDump:
        with self.mu:
            p = self.tasks.get(pid)
            if p.mm is None:
                raise InvalidArgument(f"{pid} ({p.comm}) is a kernel thread: no page tables")
            return vmm_views.pte_dump(self, p)

    def heap_view(self, pid: int) -> dict:
        """A copy of the process's heap bookkeeping and stack pointer (formatted outside the lock)."""
        with self.mu:
            p = self.tasks.get(pid)
            h = p.heap
            view = {"pid": pid, "comm": p.comm, "guard": p.guard, "sp": p.sp, "heap": None,
                    "mm": p.mm is not None}
            if p.mm is not None:
                vma = self.tasks._stack_vma(p)
                view["stack"] = (vma.start, vma.end) if vma else None
            if h is not None:
                view["heap"] = {**h.stats(), "live": sorted(h.live.items()),
                                "nmalloc": h.nmalloc, "nfree": h.nfree, "errors": h.errors,
                                "scavenged_pages": h.scavenged_pages,
                                "max_mmapped": h.max_mmapped}
            return view

    def pagemap(self, pid: int, first_vpn: int, count: int) -> bytes:
        with self.mu:
            return vmm_views.pagemap(self, self.tasks.get(pid), first_vpn, count)

    def kpagecount(self, first_pfn: int, count: int) -> bytes:
        with self.mu:
            return vmm_views.kpagecount(self, first_pfn, count)

    def kpageflags(self, first_pfn: int, count: int) -> bytes:
        with self.mu:
            return vmm_views.kpageflags(self, first_pfn, count)

    def files(self) -> list[tuple[str, int, int, int, int]]:
        """(path, size bytes, cached pages, dirty pages, mappings) of every simulated file."""
        with self.mu:
            return [(f.path, f.size, f.nr_cached, f.nr_dirty, f.maps)
                    for f in sorted(self.vmm.files.values(), key=lambda f: f.path)]

    def kmsg_lines(self) -> list[str]:
        with self.mu:
            return [KernelLog.format(t, s) for t, s in self.kmsg.lines()]


def _zone_names(zonelist) -> str:
    return ", ".join(f"node {z.node_id} {z.name}" for z in zonelist)


def _describe(ptype: int) -> str:
    return {PageType.NOPAGE: "is not RAM (a hole in the physical map)",
            PageType.RESERVED: "is reserved by the kernel",
            PageType.FREE: "is free (not allocated)"}.get(ptype, "belongs to someone else")
