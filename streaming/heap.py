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
caps the arenas that threads share. It also has Arrow (``toPandas`` of every micro-batch
and build) take its buffers from malloc: its own default, mimalloc, kept 19-36 MB of
pages with nothing live in them through the soak, which no trim reaches. It is called
once, when the job starts; on a C library without ``mallopt`` (musl, macOS) it only
moves Arrow.

Blocks below the threshold still come from the arenas, and a retrain's build (its list
blocks, the counts it copies) frees tens of MB of them every few minutes while newer
ones live on around the holes. ``release_free_memory`` (``malloc_trim``) gives the pages
of those holes back; the job calls it after each version switch and every 30 s between
(``streaming.pipeline.batch.TRIM_EVERY_S``). ``malloc_usage`` says how much malloc hands out
and how much it keeps free, which tells a leak (in use grows) from retention (free pages
stay resident).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from xml.etree import ElementTree

import pyarrow as pa

__all__ = [
    "ARENAS",
    "MMAP_THRESHOLD",
    "MallocUsage",
    "malloc_usage",
    "python_objects_on_malloc",
    "release_free_memory",
    "settle",
]

MMAP_THRESHOLD = 128 * 1024  # glibc's starting value, kept from being raised
ARENAS = 2
# glibc's <malloc.h> parameter numbers.
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


@cache
def _libc() -> ctypes.CDLL | None:
    """The C library, or None where it cannot be loaded."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


@cache
def _mallopt() -> Callable[[int, int], int] | None:
    """The C library's ``mallopt`` (glibc), or None where it has none."""
    function = getattr(_libc(), "mallopt", None)
    if function is None:
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int]
    function.restype = ctypes.c_int  # 1 when the parameter was taken
    found: Callable[[int, int], int] = function
    return found


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
    arenas: int = 0  # 0 where the C library does not say


def release_free_memory() -> bool | None:
    """Give malloc's free pages back to the system: True if some were, None without glibc."""
    trim = getattr(_libc(), "malloc_trim", None)
    return None if trim is None else bool(trim(0))


def malloc_usage() -> MallocUsage | None:
    """Bytes malloc has handed out (arena blocks and mmapped ones) and keeps free.

    Over every arena (glibc's ``malloc_info``): ``mallinfo2`` counts the main arena only,
    and the job's threads also allocate from a second one. ``mallinfo2``'s figures where
    ``malloc_info`` cannot be read; None without glibc.
    """
    every = _malloc_info_totals()
    if every is not None:
        return every
    info = getattr(_libc(), "mallinfo2", None)
    if info is None:
        return None
    info.restype = _MallInfo2
    got = info()
    return MallocUsage(in_use=int(got.uordblks + got.hblkhd), free=int(got.fordblks))


@cache
def _report_libc() -> ctypes.CDLL | None:
    """The C library with ``malloc_info``'s and ``open_memstream``'s signatures, or None."""
    libc = _libc()
    if libc is None or not all(
        hasattr(libc, name) for name in ("malloc_info", "open_memstream", "fclose", "free")
    ):
        return None
    libc.open_memstream.restype = ctypes.c_void_p
    libc.open_memstream.argtypes = [
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    libc.fclose.argtypes = [ctypes.c_void_p]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    return libc


def _malloc_info_totals() -> MallocUsage | None:
    """The totals of glibc's ``malloc_info`` report (its XML, written to memory)."""
    libc = _report_libc()
    if libc is None:
        return None
    buffer, size = ctypes.c_void_p(), ctypes.c_size_t()
    stream = libc.open_memstream(ctypes.byref(buffer), ctypes.byref(size))
    if not stream:
        return None
    try:
        libc.malloc_info(0, stream)
    finally:
        libc.fclose(stream)  # flushes the buffer and its size
    try:
        text = ctypes.string_at(buffer.value, size.value) if buffer.value else b""
    finally:
        libc.free(buffer)
    try:
        root = ElementTree.fromstring(text)  # noqa: S314 - glibc's own report of this process
    except ElementTree.ParseError:
        return None
    totals = {node.get("type"): int(node.get("size", "0")) for node in root.findall("total")}
    system = {node.get("type"): int(node.get("size", "0")) for node in root.findall("system")}
    free = totals.get("fast", 0) + totals.get("rest", 0)
    in_use = system.get("current", 0) - free + totals.get("mmap", 0)
    return MallocUsage(in_use=in_use, free=free, arenas=len(root.findall("heap")))


def settle(mmap_threshold: int = MMAP_THRESHOLD, arenas: int = ARENAS) -> bool:
    """Fix glibc's mmap threshold, cap its arenas and put Arrow on malloc.

    Call it before the process starts threads: the cap only stops new arenas, and glibc
    keeps those its threads already made (the soak's driver, settled after Spark's session
    and Kafka's clients had started their threads, had eight).
    Returns whether the C library took both malloc settings.
    """
    pa.set_memory_pool(pa.system_memory_pool())
    function = _mallopt()
    if function is None:
        return False
    taken = function(_M_MMAP_THRESHOLD, mmap_threshold) == 1
    return function(_M_ARENA_MAX, arenas) == 1 and taken


def python_objects_on_malloc() -> None:
    """Start this program again with Python's objects on malloc, unless PYTHONMALLOC is set.

    Python's own small-object allocator (pymalloc) hands a 1 MB arena back only when
    every object in it is free. In a driver that runs for hours, each micro-batch's
    short-lived objects land among long-lived ones, so arenas pile up with their live
    bytes flat (the soak: 100 -> 108 arenas in 17 minutes, 74.5 -> 75.1 MB live). On malloc
    they share glibc's arenas, whose free pages ``release_free_memory`` gives back.

    The allocator is chosen when the interpreter starts, so this replaces the process
    (``os.execve``: the same pid, interpreter, arguments and environment, plus
    ``PYTHONMALLOC=malloc``); call it first, before anything is printed or started.
    It returns at once, doing nothing, when PYTHONMALLOC is already set (``pymalloc``
    keeps Python's own allocator) or the C library is not glibc.
    """
    if os.environ.get("PYTHONMALLOC") or _mallopt() is None or not sys.executable:
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.execve(  # noqa: S606 - this same interpreter with the arguments it was given
        sys.executable,
        [sys.executable, *sys.orig_argv[1:]],
        {**os.environ, "PYTHONMALLOC": "malloc"},
    )
