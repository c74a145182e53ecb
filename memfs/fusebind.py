"""The one module that imports the FUSE binding.

memfs uses fusepy (libfuse 2). Its maintained drop-in fork, mfusepy (libfuse
2 and 3), can replace it by changing the import below: everything else in
memfs goes through these names.
"""
import ctypes

import fuse as _binding
from fuse import FUSE, FuseOSError, fuse_get_context  # noqa: F401  (re-exported)

_binding._libfuse.fuse_interrupted.restype = ctypes.c_int


def interrupted() -> bool:
    """True when the request being served was interrupted (the reader got a signal)."""
    return bool(_binding._libfuse.fuse_interrupted())
