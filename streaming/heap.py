"""Giving the driver's freed heap back to the operating system after each micro-batch.

A batch of a large backlog briefly holds its users' whole histories and their score
blocks in the driver. glibc keeps much of what is freed in its arenas for reuse, so
without help the process stays near its largest batch's size for good: after the
ML-1M-shaped feed, 355 MB resident of which ``malloc_trim`` handed back 88 MB. ``trim``
asks glibc to return it (a few milliseconds, then well under one); on a C library
without ``malloc_trim`` (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from functools import cache

__all__ = ["trim"]


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """The C library's ``malloc_trim`` (glibc), or None where it has none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        function = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]  # the padding to keep at the heap's top
    function.restype = ctypes.c_int
    found: Callable[[int], int] = function
    return found


def trim() -> bool:
    """Return the free heap to the operating system; whether the C library could."""
    function = _malloc_trim()
    if function is None:
        return False
    function(0)
    return True
