"""MemFs: the FUSE operations, and nothing else.

Each operation finds the node, calls the engine or a renderer, and turns
errors into errnos: EngineError -> its errno plus a kmsg line; anything
unexpected -> a traceback in the daemon's log and EIO, and the mount lives on.

Only the operations defined here are registered with libfuse (this class
does not inherit fusepy's Operations, whose every default would cost a round
trip per open and close). Every file is opened with direct_io: content is
rendered into a per-open snapshot whenever a read starts at offset 0 and
reads at other offsets are served from it; a transaction file's read returns
the result of this handle's last write, whatever the offset.
"""
from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import stat
import threading
import time

from engine.errors import EngineError
from .fusebind import FuseOSError, fuse_get_context, interrupted
from .tree import Dir, File, Link, lookup

log = logging.getLogger("memfs")


class Handle:
    __slots__ = ("path", "node", "snapshot", "result", "reader")

    def __init__(self, path: str, node: File):
        self.path = path
        self.node = node
        self.snapshot = b""          # rendered content (read at offset 0 refreshes it)
        self.result = b""            # transaction: what the next read returns
        self.reader = None           # stream: this open file's place in the trace


def _op(func):
    """Translate errors for one FUSE operation (the mount must survive anything)."""
    @functools.wraps(func)
    def wrapper(self, path, *args):
        try:
            return func(self, path, *args)
        except FuseOSError:
            raise
        except EngineError as e:
            self.reject(path, e.reason)
            raise FuseOSError(e.errno) from None
        except Exception:
            log.exception("memfs: %s %s failed", func.__name__, path)
            raise FuseOSError(errno.EIO) from None
    return wrapper


class MemFs:
    use_ns = True

    def __init__(self, machine, root: Dir, on_init=None):
        self.machine = machine
        self.root = root
        self._on_init = on_init
        self._handles: dict[int, Handle] = {}
        self._handles_mu = threading.Lock()       # guards _handles (never the engine lock)
        self._next_fh = itertools.count(1)
        self._uid, self._gid = os.getuid(), os.getgid()
        self._mounted_at = time.time()

    def __call__(self, op, *args):
        return getattr(self, op)(*args)

    def reject(self, path: str, reason: str) -> None:
        self.machine.log(f"memfs: {path}: {reason}")

    def _node(self, path: str):
        node = lookup(self.root, self.machine, path)
        if node is None:
            raise FuseOSError(errno.ENOENT)
        return node

    # ------------------------------------------------------------------
    # lifecycle
    # ------------------------------------------------------------------

    def init(self, path):
        self.machine.start()
        if self._on_init:
            self._on_init()

    def destroy(self, path):
        self.machine.shutdown()

    # ------------------------------------------------------------------
    # metadata
    # ------------------------------------------------------------------

    @_op
    def getattr(self, path, fh=None):
        node = self._node(path)
        now_ns = time.time_ns()
        attrs = dict(st_uid=self._uid, st_gid=self._gid, st_atime=now_ns, st_mtime=now_ns,
                     st_ctime=int(self._mounted_at * 1e9))
        if isinstance(node, Dir):
            attrs.update(st_mode=stat.S_IFDIR | node.mode, st_nlink=2, st_size=0)
        elif isinstance(node, Link):
            target = node.target(self.machine)
            if target is None:
                raise FuseOSError(errno.ENOENT)
            attrs.update(st_mode=stat.S_IFLNK | 0o777, st_nlink=1, st_size=len(target))
        elif node.stream:
            # The stream's size is its length so far: tail -f polls it to see new events.
            attrs.update(st_mode=stat.S_IFREG | node.mode, st_nlink=1,
                         st_size=self.machine.trace.end)
        else:
            # Size 0 like procfs: every file is opened with direct_io, so readers read to EOF.
            attrs.update(st_mode=stat.S_IFREG | node.mode, st_nlink=1, st_size=0)
        return attrs

    @_op
    def readdir(self, path, fh):
        node = self._node(path)
        if not isinstance(node, Dir):
            raise FuseOSError(errno.ENOTDIR)
        return [".", ".."] + list(node.children(self.machine))

    @_op
    def readlink(self, path):
        node = self._node(path)
        if not isinstance(node, Link):
            raise FuseOSError(errno.EINVAL)
        target = node.target(self.machine)
        if target is None:
            raise FuseOSError(errno.ENOENT)
        return target

    @_op
    def statfs(self, path):
        return dict(f_bsize=4096, f_frsize=4096, f_namemax=255)

    # ------------------------------------------------------------------
    # files
    # ------------------------------------------------------------------

    @_op
    def open(self, path, fi):
        node = self._node(path)
        if isinstance(node, Dir):
            raise FuseOSError(errno.EISDIR)
        if isinstance(node, Link):
            raise FuseOSError(errno.ELOOP)
        acc = fi.flags & os.O_ACCMODE
        # The mode bits are enforced here, for root too (the kernel would let root
        # write a 0444 file). The mount does not use default_permissions: with it the
        # kernel would fetch attributes before every open, and attributes are never
        # cached (attr_timeout 0) so that a killed process's folder vanishes at once.
        if acc in (os.O_WRONLY, os.O_RDWR) and not node.writable:
            self.reject(path, "is read-only")
            raise FuseOSError(errno.EACCES)
        if acc in (os.O_RDONLY, os.O_RDWR) and not node.readable:
            raise FuseOSError(errno.EACCES)
        uid = fuse_get_context()[0]
        if uid != 0:
            shift = 6 if uid == self._uid else 0          # owner bits, else other bits
            want = (4 if acc in (os.O_RDONLY, os.O_RDWR) else 0) | (2 if acc != os.O_RDONLY else 0)
            if (node.mode >> shift) & want != want:
                raise FuseOSError(errno.EACCES)
        fh = next(self._next_fh)
        h = Handle(path, node)
        if node.stream:
            h.reader = self.machine.trace.reader()
        with self._handles_mu:
            self._handles[fh] = h
        fi.fh = fh
        fi.direct_io = 1
        fi.keep_cache = 0
        return 0

    def _handle(self, fi) -> Handle:
        h = self._handles.get(fi.fh)
        if h is None:
            raise FuseOSError(errno.EBADF)
        return h

    @_op
    def read(self, path, size, offset, fi):
        h = self._handle(fi)
        if h.node.transaction:
            out, h.result = h.result[:size], h.result[size:]
            return out
        if h.node.read_range is not None:
            return h.node.read_range(self.machine, offset, size)
        if h.reader is not None:
            # Blocks at the end of the stream (a libfuse worker thread waits, not the engine);
            # O_NONBLOCK (tail -f sets it) gets EAGAIN, a signal to the reader EINTR.
            try:
                data = self.machine.trace.read(h.reader, offset, size,
                                               block=not fi.flags & os.O_NONBLOCK,
                                               interrupted=interrupted)
            except InterruptedError:
                raise FuseOSError(errno.EINTR) from None
            if data is None:
                raise FuseOSError(errno.EAGAIN)
            return data
        if offset == 0:
            content = h.node.show(self.machine)
            h.snapshot = content.encode() if isinstance(content, str) else content
        return h.snapshot[offset:offset + size]

    @_op
    def write(self, path, data, offset, fi):
        h = self._handle(fi)
        if not h.node.writable:
            raise FuseOSError(errno.EACCES)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            h.result = b"error: not UTF-8 text\n"
            self.reject(path, "write is not UTF-8 text")
            raise FuseOSError(errno.EINVAL) from None
        try:
            result = h.node.store(self.machine, text)
        except EngineError as e:
            h.result = f"error: {e.reason}\n".encode()
            raise
        h.result = f"{result}\n".encode() if result is not None else b""
        return len(data)

    @_op
    def truncate(self, path, length, fh=None):
        # `echo x > file` truncates before writing (libfuse 2): harmless on writable files.
        node = self._node(path)
        if not isinstance(node, File) or not node.writable:
            raise FuseOSError(errno.EACCES)
        return 0

    # The tree's shape is the machine's: nothing is created, removed or renamed from outside.

    def create(self, path, mode, fi=None):
        self.reject(path, "files cannot be created here")
        raise FuseOSError(errno.EACCES)

    def mkdir(self, path, mode):
        self.reject(path, "directories cannot be created here")
        raise FuseOSError(errno.EACCES)

    def mknod(self, path, mode, dev):
        raise FuseOSError(errno.EACCES)

    def symlink(self, target, source):
        raise FuseOSError(errno.EACCES)

    def link(self, target, source):
        raise FuseOSError(errno.EACCES)

    def unlink(self, path):
        self.reject(path, "files cannot be removed (kill a process with `kill PID` on ctl)")
        raise FuseOSError(errno.EPERM)

    def rmdir(self, path):
        self.reject(path, "directories cannot be removed (kill a process with `kill PID` on ctl)")
        raise FuseOSError(errno.EPERM)

    def rename(self, old, new):
        raise FuseOSError(errno.EPERM)

    def chmod(self, path, mode):
        raise FuseOSError(errno.EPERM)

    def chown(self, path, uid, gid):
        raise FuseOSError(errno.EPERM)

    def release(self, path, fi):
        with self._handles_mu:
            self._handles.pop(fi.fh, None)
        return 0
