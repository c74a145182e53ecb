"""Error types of the engine.

Three kinds, kept apart on purpose (STYLE: "ran out" is not "impossible"):
- hot paths return None when memory runs out (try_alloc_page);
- commands raise an EngineError subclass carrying an errno and a one-line
  reason for the kernel log (the adapter turns it into a failed write);
- a broken invariant raises InternalError, naming the function, like BUG_ON.
"""
import errno as _errno


class EngineError(Exception):
    """A rejected command. `reason` is one line: what was wrong, what would be right."""
    errno = _errno.EINVAL

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class InvalidArgument(EngineError):
    errno = _errno.EINVAL


class OutOfMemory(EngineError):
    errno = _errno.ENOMEM


class NoSuchProcess(EngineError):
    errno = _errno.ESRCH


class Busy(EngineError):
    errno = _errno.EBUSY


class NotPermitted(EngineError):
    errno = _errno.EPERM


class Exists(EngineError):
    errno = _errno.EEXIST


class NoDevice(EngineError):
    errno = _errno.ENXIO


class IoError(EngineError):
    errno = _errno.EIO


class TooBig(EngineError):
    errno = _errno.E2BIG


class Fault(EngineError):
    """The simulated process made an access it may not make and was killed for it.

    Unlike other rejections this one changes the machine: the process is gone,
    exactly as a real program dies of SIGSEGV. The write that drove the access
    fails with EFAULT so that a script notices.
    """
    errno = _errno.EFAULT


class InternalError(Exception):
    """A broken invariant of the engine (a bug, never a user error)."""


def bug_on(condition: bool, where: str, what: str) -> None:
    if condition:
        raise InternalError(f"{where}: {what}")
