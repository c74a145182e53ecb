"""Simulated files and their page cache.

A MemFile is what an inode and its address_space are to Linux: a size, the
file's content on its (simulated) disk, and the page cache, the frames that
hold its pages in RAM. Both are arrays indexed by page: `disk[i]` is page i's
value on disk, `cache[i]` the frame caching it (NO_FRAME when not cached).
Every process that maps the file maps the same cached frames.

Shared anonymous memory is a MemFile with `shmem` set and no disk (Linux backs
it with an unlinked tmpfs file, which is why it counts in Cached and Shmem).
"""
from __future__ import annotations

import numpy as np

NO_FRAME = -1


class MemFile:
    __slots__ = ("ino", "path", "nr_pages", "size", "shmem", "disk", "cache", "nr_cached",
                 "nr_dirty", "maps", "charged", "shadow")

    def __init__(self, ino: int, path: str, size: int, *, shmem: bool = False):
        self.ino = ino
        self.path = path
        self.size = size                                  # bytes
        self.nr_pages = -(-size // 4096)
        self.shmem = shmem
        self.disk = None if shmem else np.zeros(self.nr_pages, dtype=np.uint64)
        self.cache = np.full(self.nr_pages, NO_FRAME, dtype=np.int64)
        self.nr_cached = 0
        self.nr_dirty = 0
        self.maps = 0                 # VMAs mapping it (shmem dies with its last mapping)
        self.charged = 0              # shmem: pages charged to Committed_AS for the object
        self.shadow = None            # eviction clock of pages reclaim evicted (-1: none), lazily

    def grow(self, size: int) -> None:
        """Extend the file to size bytes (new pages read as zero)."""
        if size <= self.size:
            return
        nr = -(-size // 4096)
        extra = nr - self.nr_pages
        if self.disk is not None:
            self.disk = np.concatenate((self.disk, np.zeros(extra, dtype=np.uint64)))
        self.cache = np.concatenate((self.cache, np.full(extra, NO_FRAME, dtype=np.int64)))
        if self.shadow is not None:
            self.shadow = np.concatenate((self.shadow, np.full(extra, -1, dtype=np.int64)))
        self.size, self.nr_pages = size, nr

    def set_evicted(self, index: int, clock: int) -> None:
        """Reclaim evicted page index: remember when (the shadow entry left in the cache)."""
        if self.shadow is None:
            self.shadow = np.full(self.nr_pages, -1, dtype=np.int64)
        self.shadow[index] = clock

    def evicted_at(self, index: int) -> int | None:
        """When page index was evicted, if it was (the shadow is consumed by the refault)."""
        if self.shadow is None or self.shadow[index] < 0:
            return None
        clock = int(self.shadow[index])
        self.shadow[index] = -1
        return clock

    def cached(self, index: int) -> int:
        return int(self.cache[index])

    def __repr__(self) -> str:
        return f"<MemFile {self.path} {self.nr_pages} pages, {self.nr_cached} cached>"
