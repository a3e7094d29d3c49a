"""The driver's freed buffers go back to the operating system; malloc's figures (streaming.heap)."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from streaming.heap import malloc_usage, release_free_memory

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's; elsewhere settle() does nothing",
)


def resident_mb() -> float:
    """This process's RSS in MB (also imported by the script below, in its own process)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    msg = "no VmRSS line in /proc/self/status"
    raise AssertionError(msg)


# A micro-batch in miniature, in a process of its own (mallopt is process-wide): a large
# buffer freed first (what raises glibc's mmap threshold by default), then 1 MB buffers
# interleaved with 64 KB ones that outlive them, as a batch's columns and the state they
# leave; prints how many MB stay resident once the large buffers are freed.
_BATCH = textwrap.dedent(
    """
    import sys

    import numpy as np

    from streaming import heap
    from tests.unit.streaming.test_heap import resident_mb

    if sys.argv[1] == "settled":
        assert heap.settle()
    first = np.ones(4 * 2**20 // 8)
    del first
    before = resident_mb()
    large, kept = [], []
    for _ in range(200):
        large.append(np.ones(2**20 // 8))
        kept.append(np.ones(2**16 // 8))
    del large
    print(resident_mb() - before)
    """
)


def _left_resident_mb(mode: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _BATCH, mode], capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip())


def test_settled_heap_returns_freed_large_buffers_and_default_keeps_them() -> None:
    kept_mb = 200 * 2**16 / 2**20  # ~12.5 MB still held on purpose
    default = _left_resident_mb("default")
    settled = _left_resident_mb("settled")
    assert default > 150, default  # glibc's defaults keep the 200 MB as holes
    assert settled < kept_mb + 20, settled  # settled: only what is still held stays


def test_usage_follows_what_is_allocated_and_freed() -> None:
    before = malloc_usage()
    assert before is not None
    held = [np.ones(1_000 + i) for i in range(4_000)]  # ~40 MB in blocks below mmap's threshold
    during = malloc_usage()
    assert during is not None
    assert during.in_use - before.in_use > 30 * 2**20
    del held
    after = malloc_usage()
    assert after is not None
    assert during.in_use - after.in_use > 30 * 2**20


def test_freed_pages_kept_by_malloc_go_back_to_the_system() -> None:
    # Every other block freed: the free ones sit between live ones, so malloc cannot
    # shrink its heap and keeps their pages until asked to give them back.
    blocks = [np.ones(1_000 + i) for i in range(8_000)]
    del blocks[::2]
    kept = resident_mb()
    assert release_free_memory() is True
    assert kept - resident_mb() > 20
    assert len(blocks) == 4_000
