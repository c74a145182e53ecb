"""Swap areas, their slots, and the swap cache (mm/swapfile.c, mm/swap_state.c).

A swap area (a partition or a file) is an array of page-sized slots. Slot 0
is the header, as in Linux, so an area of N pages offers slots 1..N-1 and
`swaps` shows N-1 pages (a 1 GiB area reads 1048572 kB). Per slot, in arrays:

    count[off]  u16   references to the slot: not-present PTEs holding its swap
                      entry (swap_map); bit 15, HAS_CACHE, says a frame in the
                      swap cache holds the slot's page as well
    data[off]   u64   the page's content as written to the slot
    cache[off]  u32   that swap-cache frame + 1 (0: none)
    age[off]    u32   the node's eviction clock when the page was written (the
                      shadow entry: a refault's distance is measured from it)
    zsize[off]  u16   zswap: compressed size + 1 while the page sits in the
                      compressed pool instead of on the device (0: on the device)
    zpos[off]   u64   zswap: where the slot was queued on the pool's LRU

Free slots sit on a stack (lowest on top, so a fresh area fills in order):
allocation and release are O(1). A swap entry is (type, offset), type being
the area's index in `areas`; the PTE of a swapped-out page holds it (pte.py).

The swap cache holds the pages whose slot and frame are both valid: a page
just read in (kept, clean, so that evicting it again costs no write), pages
read ahead, and pages being written out. Every frame in it has SWAPCACHE in
its flags and its slot in the frame table's swp column.
"""
from __future__ import annotations

from array import array

from ..errors import bug_on
from ..units import KiB, PAGE_SIZE

HAS_CACHE = 0x8000
COUNT_MASK = 0x7FFF
SWP_OFFSET_BITS = 27                     # frames' swp column: type << 27 | offset
MAX_SLOTS = (1 << SWP_OFFSET_BITS) - 1   # slots per area (512 GiB of swap)
DEFAULT_PRIO_START = -2                  # areas without a priority count down from -2


def pack(swp_type: int, off: int) -> int:
    return (swp_type << SWP_OFFSET_BITS) | off


def unpack(word: int) -> tuple[int, int]:
    return word >> SWP_OFFSET_BITS, word & MAX_SLOTS


class SwapArea:
    """One swap area (swap_info_struct)."""

    def __init__(self, name: str, size: int, priority: int, swp_type: int):
        pages = size // PAGE_SIZE
        self.name = name
        self.type = swp_type
        self.nr_slots = pages - 1               # usable pages, the header excluded
        self.priority = priority
        n = pages
        self.count = array("H", bytes(2 * n))
        self.data = array("Q", bytes(8 * n))
        self.cache = array("I", bytes(4 * n))
        self.age = array("I", bytes(4 * n))
        self.zsize = array("H", bytes(2 * n))
        self.zpos = array("Q", bytes(8 * n))
        self.free = array("I", range(n - 1, 0, -1))      # slots n-1 .. 1; pop() gives 1 first
        self.in_zswap = 0                       # slots whose page is in the compressed pool

    @property
    def kind(self) -> str:
        return "partition" if self.name.startswith("/dev/") else "file"

    @property
    def used_slots(self) -> int:
        return self.nr_slots - len(self.free)

    @property
    def size_kb(self) -> int:
        return self.nr_slots * (PAGE_SIZE // KiB)

    @property
    def used_kb(self) -> int:
        return self.used_slots * (PAGE_SIZE // KiB)

    def alloc(self) -> int | None:
        """A free slot (its count becomes HAS_CACHE: the page being written is in the cache)."""
        if not self.free:
            return None
        off = self.free.pop()
        self.count[off] = HAS_CACHE
        return off

    def release(self, off: int) -> None:
        """The slot holds nothing any more: back on the free stack."""
        bug_on(self.count[off] != 0 or self.cache[off], "swap",
               f"slot {off} of {self.name} freed while in use")
        self.data[off] = 0
        self.free.append(off)


class SwapSystem:
    """Every swap area, by type, and the operations on swap entries."""

    def __init__(self, events, ft):
        self.areas: list[SwapArea | None] = []
        self.events = events
        self.ft = ft
        self.zswap = None                       # the Zswap in front of the areas, set by Machine
        # orphan(area, off): the last entry holding a slot went while its page is in the
        # swap cache; the VMM frees the page if no one maps it (free_swap_and_cache).
        self.orphan = None
        self._rr = 0                            # round robin among equal priorities
        self._next_prio = DEFAULT_PRIO_START

    # --- areas -----------------------------------------------------------

    def active(self) -> list[SwapArea]:
        return [a for a in self.areas if a is not None]

    def by_name(self, name: str) -> SwapArea | None:
        return next((a for a in self.active() if a.name == name), None)

    def add_area(self, name: str, size: int, priority: int | None, max_types: int) -> SwapArea:
        """swapon: the lowest free type; priority counts down from -2 when not given."""
        if priority is None:
            priority, self._next_prio = self._next_prio, self._next_prio - 1
        for t, a in enumerate(self.areas):
            if a is None:
                area = SwapArea(name, size, priority, t)
                self.areas[t] = area
                return area
        bug_on(len(self.areas) >= max_types, "swapon", "no swap type left")
        area = SwapArea(name, size, priority, len(self.areas))
        self.areas.append(area)
        return area

    def remove_area(self, area: SwapArea) -> None:
        """swapoff: a default (negative) priority is given back, as Linux's least_priority:
        the areas numbered after it move up by one."""
        self.areas[area.type] = None
        if area.priority < 0:
            for a in self.active():
                if a.priority < area.priority:
                    a.priority += 1
            self._next_prio += 1
        while self.areas and self.areas[-1] is None:
            self.areas.pop()

    def total_slots(self) -> int:
        return sum(a.nr_slots for a in self.active())

    def free_slots(self) -> int:
        return sum(len(a.free) for a in self.active())

    def full(self) -> bool:
        """vm_swap_full: more than half of all swap in use (then swap-ins free their slot)."""
        total = self.total_slots()
        return total > 0 and self.free_slots() * 2 < total

    # --- slots -----------------------------------------------------------

    def get_slot(self) -> tuple[SwapArea, int] | None:
        """get_swap_pages: a free slot from the highest-priority area with room;
        areas of equal priority take turns."""
        best = None
        for a in self.active():
            if a.free and (best is None or a.priority > best):
                best = a.priority
        if best is None:
            return None
        tied = [a for a in self.active() if a.free and a.priority == best]
        a = tied[self._rr % len(tied)]
        self._rr += 1
        return a, a.alloc()

    def area(self, swp_type: int) -> SwapArea:
        return self.areas[swp_type]

    def dup(self, swp_type: int, off: int, n: int = 1) -> None:
        """n more PTEs hold the entry (fork copies it, unmap writes it: swap_duplicate)."""
        a = self.areas[swp_type]
        c = a.count[off]
        bug_on((c & COUNT_MASK) + n > COUNT_MASK, "swap", f"slot {off} of {a.name}: count overflow")
        a.count[off] = c + n

    def put(self, swp_type: int, off: int, n: int = 1) -> None:
        """n PTEs holding the entry went away (swap_free); the slot goes when nothing holds it."""
        a = self.areas[swp_type]
        c = a.count[off]
        bug_on((c & COUNT_MASK) < n, "swap", f"slot {off} of {a.name}: count {c & COUNT_MASK} < {n}")
        c -= n
        a.count[off] = c
        if c == 0:
            self.discard(a, off)
        elif c == HAS_CACHE and self.orphan is not None:
            self.orphan(a, off)               # only the swap cache holds it now

    def discard(self, a: SwapArea, off: int) -> None:
        """Nothing references the slot: drop its zswap copy and free it."""
        if a.zsize[off]:
            self.zswap.invalidate(a, off)
        a.release(off)
