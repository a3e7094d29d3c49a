"""The driver's C heap: large buffers straight from the operating system, few arenas.

A micro-batch of a backlog holds its users' histories, their score blocks and the
batch's columns in the driver for a moment. With glibc's defaults those buffers soon come
from the heap instead of their own mappings (its mmap threshold rises to the largest
buffer freed, up to 32 MB), and each thread that allocates gets an arena of its own
(the micro-batch's, the build's, py4j's), so what a batch frees stays in the process
as holes between what lives on: on the ML-10M-shaped feed's first 2.5M ratings, 734 MB
resident of which glibc had 355 MB free.

``settle`` fixes the mmap threshold (which also stops its adjustment), so buffers of
``mmap_threshold`` bytes or more are mapped for themselves and unmapped when freed, and
caps the arenas that threads share. It is called once, when the job starts; on a C library
without ``mallopt`` (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from functools import cache

__all__ = ["ARENAS", "MMAP_THRESHOLD", "settle"]

MMAP_THRESHOLD = 128 * 1024  # glibc's starting value, kept from being raised
ARENAS = 2
# glibc's <malloc.h> parameter numbers.
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


@cache
def _mallopt() -> Callable[[int, int], int] | None:
    """The C library's ``mallopt`` (glibc), or None where it has none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        function = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int]
    function.restype = ctypes.c_int  # 1 when the parameter was taken
    found: Callable[[int, int], int] = function
    return found


def settle(mmap_threshold: int = MMAP_THRESHOLD, arenas: int = ARENAS) -> bool:
    """Fix glibc's mmap threshold and cap its arenas; whether the C library took both."""
    function = _mallopt()
    if function is None:
        return False
    taken = function(_M_MMAP_THRESHOLD, mmap_threshold) == 1
    return function(_M_ARENA_MAX, arenas) == 1 and taken
