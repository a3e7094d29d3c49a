"""The C allocator's side of a long-running process: what it holds, and giving back what is free.

A driver that builds a model version every few minutes allocates and frees hundreds of
megabytes of numpy arrays from several threads. glibc's malloc keeps much of what was
freed (in the arena of each thread that freed it) for reuse instead of returning it to
the system, so the process's RSS climbs towards the sum of its peaks per thread while
what it really holds stays level. ``release_free_memory`` asks malloc to return those
free pages (``malloc_trim``); ``malloc_usage`` says how much malloc hands out and how
much it keeps free, which tells a leak (in use grows) from retention (free grows).

Both are glibc's: elsewhere (musl, macOS) they do nothing and return None. No
maintained Python package offers them (the registry has tracers of Python's own
allocations only), hence these few lines of ctypes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from functools import cache

__all__ = ["MallocUsage", "malloc_usage", "release_free_memory"]


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (2.33 and later), every field a ``size_t``."""

    _FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(name, ctypes.c_size_t) for name in _FIELDS.split()]


@dataclass(frozen=True)
class MallocUsage:
    """What malloc hands out (``in_use``) and keeps free for reuse (``free``), in bytes.

    ``free`` counts the free blocks whether or not ``malloc_trim`` gave their pages
    back, so it is what malloc could reuse, not what the process's RSS holds.
    """

    in_use: int
    free: int


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def release_free_memory() -> bool | None:
    """Return malloc's free pages to the system: True if some were, None without glibc."""
    libc = _libc()
    if libc is None:
        return None
    return bool(libc.malloc_trim(0))


def malloc_usage() -> MallocUsage | None:
    """Bytes malloc has handed out (small blocks and mmapped ones) and keeps free."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return MallocUsage(in_use=int(info.uordblks + info.hblkhd), free=int(info.fordblks))
