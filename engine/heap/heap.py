"""A process's heap: malloc, free, realloc and aligned allocation over pools.

The heap is the program's own allocator (the top of the three layers). It
never touches page tables: it asks its process's kernel interface (`sys`) for
address space (brk, mmap, munmap), hands pages back (madvise dontneed), and
writes its own bookkeeping into the memory it manages, which is what makes
pages resident. The model is glibc's ptmalloc, kept small:

- Chunks are 16-byte aligned, 32 bytes at least; the user pointer is 16 bytes
  past the chunk (prev_size and size words) and a chunk of size S serves up to
  S - 8 bytes (the next chunk's prev_size word is usable while in use).
  malloc writes the chunk's header word; free writes the free-list links at
  the start of the chunk and the boundary tag at its end.
- Pools: pool 0 ("main") grows by brk; other pools ("short" for short-lived
  objects, or pool=N) are arenas of mmap'd segments, as glibc's per-thread
  arenas. Requests of at least the mmap threshold get their own mapping.
- Free chunks sit in size-class bins: exact 16-byte classes below 1 KiB, four
  classes per power of two above. A free chunk merges with free neighbours in
  its segment; one next to the pool's top merges into the top.
- Giving back: when the top of the brk pool passes the trim threshold, free
  shrinks the break (systrim); an mmap pool unmaps a segment that is wholly
  free and trims the tail of its newest one. scavenge() (malloc_trim) hands
  the whole pages inside every free chunk back to "allocate on demand" with
  madvise, without shrinking anything.
- Errors are found without corrupting anything: the heap's bookkeeping lives
  outside the memory it manages. free/realloc of a pointer never given out,
  or given out and already freed (double free), is refused; with guard checks
  on, every chunk has a 16-byte red zone after the block, and a write into it
  (or into a freed block) is refused and reported.
"""
from __future__ import annotations

from collections import OrderedDict

from ..errors import InvalidArgument, OutOfMemory
from ..units import KiB, MiB

PAGE = 4096
ALIGN = 16
HDR = 16                         # prev_size + size
MINSIZE = 32
FREE_HDR = 48                    # header + fd/bk + fd_nextsize/bk_nextsize: what mtrim keeps
GUARD = 16                       # red zone after each block when guard checks are on
FENCE = 16                       # fencepost at the end of a segment that is no longer the top
MMAP_THRESHOLD = 128 * KiB       # M_MMAP_THRESHOLD
TRIM_THRESHOLD = 128 * KiB       # M_TRIM_THRESHOLD
TOP_PAD = 128 * KiB              # M_TOP_PAD: extra asked of the kernel when growing
SEGMENT = 1 * MiB                # an mmap pool grows by segments of at least this
MAX_POOLS = 8
MAX_REQUEST = 1 << 40
RECENT_FREES = 4096              # freed pointers remembered for double-free reports
NSMALL = 64                      # exact classes: 16-byte steps below 1024
NCLASSES = NSMALL + 4 * 40


def page_up(x: int) -> int:
    return (x + PAGE - 1) & ~(PAGE - 1)


def page_down(x: int) -> int:
    return x & ~(PAGE - 1)


def request_size(n: int, guard: bool) -> int:
    """Chunk size for an n-byte request (request2size), plus the red zone."""
    return max(MINSIZE, (n + 8 + (GUARD if guard else 0) + ALIGN - 1) & ~(ALIGN - 1))


def size_class(csz: int) -> int:
    if csz < 1024:
        return csz >> 4
    b = csz.bit_length() - 1                       # 1024 <= csz: b >= 10
    return NSMALL + 4 * (b - 10) + ((csz >> (b - 2)) & 3)


def class_floor(c: int) -> int:
    """Smallest chunk size in class c."""
    if c < NSMALL:
        return c << 4
    b, q = divmod(c - NSMALL, 4)
    return (4 + q) << (b + 8)


class Pool:
    __slots__ = ("id", "name", "kind", "segs", "top_start", "top_end", "free", "free_end",
                 "bins", "binmap", "used", "grows", "trims", "tails")

    def __init__(self, pid: int, name: str, kind: str):
        self.id = pid
        self.name = name
        self.kind = kind                   # "brk" or "mmap"
        self.segs: dict[int, int] = {}     # segment start -> end
        self.top_start = self.top_end = 0  # the wilderness: free space at the end of the top segment
        self.free: dict[int, int] = {}     # free chunk start -> size (the top excluded)
        self.free_end: dict[int, int] = {}  # free chunk end -> start
        self.bins: list[dict] = [dict() for _ in range(NCLASSES)]
        self.binmap = 0                    # bit c set: bins[c] not empty
        self.used: dict[int, int] = {}     # live chunk start -> size
        self.grows = 0                     # times the pool asked the kernel for more
        self.trims = 0                     # times it gave address space back
        # Segments that stopped being the top: where their chunks end. The bytes from
        # there to the segment's end are a fencepost (as glibc's sysmalloc leaves), so the
        # last chunk's usable bytes (its size - 8, the next prev_size word) stay inside.
        self.tails: dict[int, int] = {}

    def clone(self) -> "Pool":
        p = Pool(self.id, self.name, self.kind)
        p.segs = dict(self.segs)
        p.top_start, p.top_end = self.top_start, self.top_end
        p.free = dict(self.free)
        p.free_end = dict(self.free_end)
        p.bins = [dict(b) for b in self.bins]
        p.binmap = self.binmap
        p.used = dict(self.used)
        p.grows, p.trims = self.grows, self.trims
        p.tails = dict(self.tails)
        return p

    @property
    def mapped(self) -> int:
        return sum(e - s for s, e in self.segs.items())

    @property
    def top_size(self) -> int:
        return self.top_end - self.top_start

    def seg_of(self, addr: int) -> tuple[int, int] | None:
        for s, e in self.segs.items():
            if s <= addr < e:
                return s, e
        return None

    # free-list primitives ------------------------------------------------

    def add_free(self, start: int, size: int) -> None:
        self.free[start] = size
        self.free_end[start + size] = start
        c = size >> 4 if size < 1024 else size_class(size)     # size_class, small ones inline
        self.bins[c][start] = None
        self.binmap |= 1 << c

    def take_free(self, start: int) -> int:
        size = self.free.pop(start)
        del self.free_end[start + size]
        c = size >> 4 if size < 1024 else size_class(size)
        b = self.bins[c]
        del b[start]
        if not b:
            self.binmap &= ~(1 << c)
        return size

    def find_fit(self, csz: int) -> int | None:
        """Start of a free chunk of at least csz bytes: exact class first (newest freed),
        then the smallest non-empty class above."""
        c = csz >> 4 if csz < 1024 else size_class(csz)
        m = self.binmap >> c
        while m:
            low = (m & -m).bit_length() - 1
            cls = c + low
            b = self.bins[cls]
            if cls >= NSMALL and cls == c:          # a large class holds mixed sizes
                for start in reversed(b):
                    if self.free[start] >= csz:
                        return start
            else:
                return next(reversed(b))
            m &= ~(1 << low)
        return None


class Heap:
    """One process's allocator. `sys` is the process's kernel interface."""

    def __init__(self, sys, *, guard: bool = False):
        self.sys = sys
        self.guard = guard
        self.pools: list[Pool] = [Pool(0, "main", "brk")]
        self.live: dict[int, tuple] = {}          # ptr -> (request, chunk size, pool or -1, hint, tick)
        self.mmapped: dict[int, tuple[int, int]] = {}   # ptr -> (map start, map length)
        self.recent: OrderedDict[int, int] = OrderedDict()   # freed ptr -> tick
        self.clobbered: set[int] = set()          # ptrs whose red zone was written (reported)
        self.errors = 0                           # programmer errors caught
        self.nmalloc = self.nfree = 0
        self.scavenged_pages = 0                  # pages handed back by scavenge, ever
        self.max_mmapped = 0

    def clone(self, sys) -> "Heap":
        """The child's heap after fork: the same bookkeeping over the copied memory."""
        h = Heap(sys, guard=self.guard)
        h.pools = [p.clone() for p in self.pools]
        h.live = dict(self.live)
        h.mmapped = dict(self.mmapped)
        h.recent = OrderedDict(self.recent)
        h.clobbered = set(self.clobbered)
        h.nmalloc, h.nfree, h.errors = self.nmalloc, self.nfree, self.errors
        h.max_mmapped = self.max_mmapped
        return h

    # ------------------------------------------------------------------
    # pools
    # ------------------------------------------------------------------

    def pool(self, n: int, *, create: bool) -> Pool:
        if not 0 <= n < MAX_POOLS:
            raise InvalidArgument(f"pool={n}: pools are numbered 0 to {MAX_POOLS - 1}")
        while create and len(self.pools) <= n:
            k = len(self.pools)
            self.pools.append(Pool(k, "short" if k == 1 else f"arena {k}", "mmap"))
        if n >= len(self.pools):
            raise InvalidArgument(f"pool={n} does not exist")
        return self.pools[n]

    def _grow(self, pool: Pool, csz: int) -> None:
        """Get at least csz bytes of top from the kernel (sysmalloc)."""
        if pool.kind == "brk":
            want = page_up(csz - pool.top_size + TOP_PAD)
            if not pool.segs:
                base = (self.sys.brk_now() + ALIGN - 1) & ~(ALIGN - 1)
                try:
                    self.sys.set_brk(base + want)
                except OutOfMemory:
                    pass                               # no break to grow: mmap, as glibc
                else:
                    pool.segs[base] = base + want
                    pool.top_start, pool.top_end = base, base + want
                    pool.grows += 1
                    return
            seg_start = next(iter(pool.segs), None)
            if seg_start is not None and pool.segs[seg_start] == pool.top_end == self.sys.brk_now():
                try:
                    self.sys.set_brk(pool.top_end + want)
                except OutOfMemory:
                    pass                               # brk blocked: fall back to mmap, as glibc
                else:
                    pool.segs[seg_start] = pool.top_end = pool.top_end + want
                    pool.grows += 1
                    return
        size = max(SEGMENT, page_up(csz + TOP_PAD if pool.kind == "brk" else csz))
        addr = self.sys.mmap(size)
        if pool.segs:
            # The old top segment is the top no more: its top, less a fencepost, becomes an
            # ordinary free chunk (or, too small for one, part of the fencepost).
            old = next(s for s, e in pool.segs.items() if e == pool.top_end)
            tail = pool.top_start
            if pool.top_size >= MINSIZE + FENCE:
                tail = pool.top_end - FENCE
                pool.add_free(pool.top_start, tail - pool.top_start)
            pool.tails[old] = tail
        pool.segs[addr] = addr + size
        pool.top_start, pool.top_end = addr, addr + size
        pool.grows += 1

    def _carve(self, pool: Pool, start: int, size: int, csz: int) -> int:
        """Use the first csz bytes of the free block [start, start+size); the rest stays free."""
        rest = size - csz
        if rest >= MINSIZE:
            pool.add_free(start + csz, rest)
            self.sys.poke(start + csz + 8)             # set_head of the remainder
        else:
            csz = size
        pool.used[start] = csz
        return csz

    def _alloc_chunk(self, pool: Pool, csz: int) -> tuple[int, int]:
        start = pool.find_fit(csz)
        if start is not None:
            size = pool.take_free(start)
            return start, self._carve(pool, start, size, csz)
        if pool.top_size < csz + MINSIZE:
            self._grow(pool, csz + MINSIZE)
        start = pool.top_start
        pool.top_start += csz
        pool.used[start] = csz
        self.sys.poke(pool.top_start + 8)               # the new top's size word
        return start, csz

    # ------------------------------------------------------------------
    # malloc / free / realloc
    # ------------------------------------------------------------------

    def malloc(self, n: int, *, align: int = ALIGN, hint: str = "long", pool: int | None = None,
               tick: int = 0) -> int:
        if not 0 < n <= MAX_REQUEST:
            raise InvalidArgument(f"malloc: size {n} must be between 1 and {MAX_REQUEST}")
        if align < ALIGN or align & (align - 1) or align > 1 << 30:
            raise InvalidArgument(f"malloc: align={align} must be a power of two from "
                                  f"{ALIGN} to 1G")
        if hint not in ("short", "long"):
            raise InvalidArgument(f"malloc: hint={hint} must be short or long")
        if pool is None:
            pool = 1 if hint == "short" else 0
        pools = self.pools
        p = pools[pool] if 0 <= pool < len(pools) else self.pool(pool, create=True)
        if n + align >= MMAP_THRESHOLD:
            return self._malloc_mmap(n, align, hint, tick)
        csz = (n + (8 + GUARD + ALIGN - 1 if self.guard else 8 + ALIGN - 1)) & ~(ALIGN - 1)
        if csz < MINSIZE:                               # request_size, inline
            csz = MINSIZE
        if align == ALIGN:
            start, csz = self._alloc_chunk(p, csz)
        else:
            start, csz = self._alloc_aligned(p, csz, align)
        self.sys.poke(start + 8)                        # the chunk's size word
        ptr = start + HDR
        self.live[ptr] = (n, csz, p.id, hint, tick)
        self.recent.pop(ptr, None)
        self.clobbered.discard(ptr)
        self.nmalloc += 1
        return ptr

    def _alloc_aligned(self, p: Pool, csz: int, align: int) -> tuple[int, int]:
        """_int_memalign: take csz + align + MINSIZE, keep the aligned part, free the rest."""
        start, big = self._alloc_chunk(p, csz + align + MINSIZE)
        ptr = (start + HDR + align - 1) & ~(align - 1)
        if ptr - HDR - start and ptr - HDR - start < MINSIZE:
            ptr += align                                # the leading gap must be a whole chunk
        lead = ptr - HDR - start
        del p.used[start]
        if lead:
            p.add_free(start, lead)
        rest = big - lead
        start += lead
        if rest - csz >= MINSIZE:
            p.used[start] = csz
            self._release_chunk(p, start + csz, rest - csz, write=True)
        else:
            p.used[start] = rest
            csz = rest
        return start, csz

    def _malloc_mmap(self, n: int, align: int, hint: str, tick: int) -> int:
        length = page_up(n + HDR + (align - ALIGN) + (GUARD if self.guard else 0))
        addr = self.sys.mmap(length)
        ptr = (addr + HDR + align - 1) & ~(align - 1)
        self.sys.poke(ptr - 8)
        self.mmapped[ptr] = (addr, length)
        self.live[ptr] = (n, length - (ptr - addr) + HDR, -1, hint, tick)
        self.recent.pop(ptr, None)
        self.clobbered.discard(ptr)
        self.nmalloc += 1
        self.max_mmapped = max(self.max_mmapped, sum(ln for _, ln in self.mmapped.values()))
        return ptr

    def check_free(self, what: str, ptr: int) -> None:
        """Refuse a pointer this heap does not have live (before anything changes)."""
        if ptr in self.live:
            return
        self.errors += 1
        when = self.recent.get(ptr)
        if when is not None:
            raise InvalidArgument(f"{what}({ptr:#x}): double free (the block was freed at tick "
                                  f"{when}); the heap is unchanged")
        raise InvalidArgument(f"{what}({ptr:#x}): invalid pointer: malloc never returned it "
                              f"(or it was freed and reused); the heap is unchanged")

    def free(self, ptr: int, *, tick: int = 0) -> int:
        """Free a live block; returns the bytes the heap gave back to the kernel (trim/munmap)."""
        if ptr not in self.live:
            self.check_free("free", ptr)
        req, csz, pool, hint, _ = self.live.pop(ptr)
        self.recent[ptr] = tick
        if len(self.recent) > RECENT_FREES:
            self.recent.popitem(last=False)
        self.clobbered.discard(ptr)
        self.nfree += 1
        if pool < 0:
            addr, length = self.mmapped.pop(ptr)
            self.sys.munmap(addr, length)
            return length
        p = self.pools[pool]
        start = ptr - HDR
        del p.used[start]
        return self._release_chunk(p, start, csz, write=True)

    def _release_chunk(self, p: Pool, start: int, size: int, *, write: bool) -> int:
        """Put [start, start+size) back: merge with free neighbours or the top, then trim."""
        seg_s, seg_e = p.seg_of(start)
        prev = p.free_end.get(start)
        if prev is not None and start > seg_s:
            size += p.take_free(prev)
            start = prev
        end = start + size
        if end == p.top_start and seg_e == p.top_end:
            p.top_start = start
            if write:
                self.sys.poke(start + 8)                # the top's new size word
            return self._trim(p)
        if end < seg_e and end in p.free:
            size += p.take_free(end)
            end = start + size
        p.add_free(start, size)
        if write:
            self.sys.poke(start + HDR)                  # fd/bk links
            if end < seg_e:
                self.sys.poke(end)                      # the next chunk's prev_size
        if start == seg_s and end == p.tails.get(seg_s) and not self._is_brk_seg(p, seg_s):
            # a wholly free old segment goes back
            p.take_free(start)
            del p.segs[seg_s]
            del p.tails[seg_s]
            self.sys.munmap(seg_s, seg_e - seg_s)
            p.trims += 1
            return seg_e - seg_s
        return 0

    @staticmethod
    def _is_brk_seg(p: Pool, seg_s: int) -> bool:
        return p.kind == "brk" and seg_s == next(iter(p.segs))

    def _trim(self, p: Pool) -> int:
        """systrim / heap_trim: give back the top beyond the pad; returns bytes given back."""
        seg_s = next(s for s, e in p.segs.items() if e == p.top_end)
        if p.top_start == seg_s and len(p.segs) > 1 and not self._is_brk_seg(p, seg_s):
            # The newest segment is empty: unmap it; the previous segment's tail becomes the top.
            size = p.top_end - seg_s
            del p.segs[seg_s]
            self.sys.munmap(seg_s, size)
            p.trims += 1
            s = next(reversed(p.segs))                   # the newest segment left
            tail = p.tails.pop(s)
            p.top_start, p.top_end = tail, p.segs[s]
            last = p.free_end.get(tail)
            if last is not None:
                p.take_free(last)
                p.top_start = last
            return size
        if p.top_size < TRIM_THRESHOLD:
            return 0
        extra = page_down(p.top_size - TOP_PAD - MINSIZE - 1)
        if extra <= 0:
            return 0
        new_end = p.top_end - extra
        if self._is_brk_seg(p, seg_s):
            if p.top_end != self.sys.brk_now():
                return 0                                # the break moved under us: leave it
            self.sys.set_brk(new_end)
        else:
            self.sys.munmap(new_end, extra)
        p.segs[seg_s] = p.top_end = new_end
        p.trims += 1
        return extra

    def realloc(self, ptr: int, n: int, *, tick: int = 0) -> int:
        """realloc: grow or shrink in place when the neighbours allow, else move (copying)."""
        if ptr == 0:
            return self.malloc(n, tick=tick)
        self.check_free("realloc", ptr)
        if n == 0:
            self.free(ptr, tick=tick)
            return 0
        if not 0 < n <= MAX_REQUEST:
            raise InvalidArgument(f"realloc: size {n} must be between 1 and {MAX_REQUEST}")
        req, csz, pool, hint, born = self.live[ptr]
        if pool >= 0 and n + ALIGN < MMAP_THRESHOLD:
            p = self.pools[pool]
            start = ptr - HDR
            need = request_size(n, self.guard)
            if need <= csz:                              # shrink in place
                if csz - need >= MINSIZE:
                    p.used[start] = need
                    self._release_chunk(p, start + need, csz - need, write=True)
                    csz = need
                self.live[ptr] = (n, csz, pool, hint, born)
                return ptr
            end = start + csz
            seg_e = p.seg_of(start)[1]
            nxt = p.free.get(end) if end < seg_e else None
            if nxt is not None and csz + nxt >= need:    # grow into the free next chunk
                size = p.take_free(end)
                got = self._carve(p, end, size, need - csz)
                del p.used[end]
                p.used[start] = csz + got
                self.live[ptr] = (n, csz + got, pool, hint, born)
                return ptr
            if end == p.top_start and seg_e == p.top_end:   # grow into the top
                if p.top_size < need - csz + MINSIZE:
                    self._grow(p, need - csz + MINSIZE)
                if end == p.top_start:
                    p.top_start = start + need
                    p.used[start] = need
                    self.sys.poke(p.top_start + 8)
                    self.live[ptr] = (n, need, pool, hint, born)
                    return ptr
        new = self.malloc(n, hint=hint, pool=None if pool < 0 else pool, tick=tick)
        self.sys.write_range(new, min(req, n))           # memcpy writes the copy
        self.free(ptr, tick=tick)
        return new

    # ------------------------------------------------------------------
    # what the program writes: red-zone and use-after-free checks
    # ------------------------------------------------------------------

    def block_at(self, addr: int) -> tuple[int, int, int] | None:
        """(ptr, usable bytes, chunk end) of the live block whose chunk holds addr, if any."""
        for pool in self.pools:
            if pool.seg_of(addr) is None:
                continue
            # Chunks tile the segment: find the live chunk at or below addr.
            for start, csz in pool.used.items():
                if start <= addr < start + csz:
                    return start + HDR, self.live[start + HDR][0], start + csz
            return None
        for ptr, (s, ln) in self.mmapped.items():
            if s <= addr < s + ln:
                return ptr, self.live[ptr][0], s + ln
        return None

    def check_write(self, addr: int, length: int) -> str | None:
        """With guard checks on: why a program write of [addr, addr+length) is a heap error."""
        if not self.guard or length <= 0:
            return None
        blk = self.block_at(addr)
        if blk is not None:
            ptr, n, _ = blk
            if addr < ptr:
                return (f"heap-buffer-underflow: write at {addr:#x} is {ptr - addr} bytes before "
                        f"the {n}-byte block at {ptr:#x}")
            if addr + length > ptr + n:
                return (f"heap-buffer-overflow: write of {length} bytes at {addr:#x} runs "
                        f"{addr + length - ptr - n} bytes past the end of the {n}-byte block "
                        f"at {ptr:#x}")
            return None
        for pool in self.pools:
            if pool.seg_of(addr) is not None:
                return (f"heap-use-after-free: write at {addr:#x} lands in freed heap memory "
                        f"(pool {pool.id})")
        return None

    # ------------------------------------------------------------------
    # giving memory back
    # ------------------------------------------------------------------

    def releasable(self):
        """(start, end) of the whole pages inside each free chunk and top (what mtrim frees)."""
        for p in self.pools:
            areas = list(p.free.items())
            if p.top_size:
                areas.append((p.top_start, p.top_size))
            for start, size in areas:
                lo, hi = page_up(start + FREE_HDR), page_down(start + size)
                if hi > lo:
                    yield lo, hi

    def scavenge(self) -> tuple[int, int]:
        """malloc_trim(0): madvise(dontneed) every free area of at least one page.

        Returns (areas, pages of RSS given back)."""
        areas = pages = 0
        for lo, hi in sorted(self.releasable()):
            areas += 1
            pages += self.sys.madvise_dontneed(lo, hi - lo)
        self.scavenged_pages += pages
        return areas, pages

    # ------------------------------------------------------------------
    # what <pid>/heap shows
    # ------------------------------------------------------------------

    def stats(self) -> dict:
        out = {"pools": []}
        for p in self.pools:
            free_sizes = list(p.free.values())
            used = sum(p.used.values())
            free = sum(free_sizes) + p.top_size
            largest = max(free_sizes + [p.top_size]) if free else 0
            out["pools"].append({
                "id": p.id, "name": p.name, "kind": p.kind, "mapped": p.mapped,
                "segments": sorted(p.segs.items()), "used": used, "chunks": len(p.used),
                "free": free, "free_chunks": len(free_sizes), "top": p.top_size,
                "largest_free": largest, "grows": p.grows, "trims": p.trims,
                "bins": [(c, class_floor(c), len(b), sum(p.free[s] for s in b))
                         for c, b in enumerate(p.bins) if b]})
        out["mmapped"] = sum(ln for _, ln in self.mmapped.values())
        out["mmapped_count"] = len(self.mmapped)
        out["releasable"] = sum(hi - lo for lo, hi in self.releasable())
        return out
