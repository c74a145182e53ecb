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
                 "nr_dirty", "maps", "charged")

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

    def grow(self, size: int) -> None:
        """Extend the file to size bytes (new pages read as zero)."""
        if size <= self.size:
            return
        nr = -(-size // 4096)
        extra = nr - self.nr_pages
        if self.disk is not None:
            self.disk = np.concatenate((self.disk, np.zeros(extra, dtype=np.uint64)))
        self.cache = np.concatenate((self.cache, np.full(extra, NO_FRAME, dtype=np.int64)))
        self.size, self.nr_pages = size, nr

    def cached(self, index: int) -> int:
        return int(self.cache[index])

    def __repr__(self) -> str:
        return f"<MemFile {self.path} {self.nr_pages} pages, {self.nr_cached} cached>"
