"""The driver's freed heap goes back to the operating system between micro-batches."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pytest

from streaming.heap import trim

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="malloc_trim is glibc's; elsewhere trim() does nothing",
)


def _resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    msg = "no VmRSS in /proc/self/status"
    raise AssertionError(msg)


def test_trim_returns_the_holes_a_batch_left_in_the_heap() -> None:
    trim()
    # 64 KB blocks come from the heap (below glibc's mmap threshold); keeping every tenth
    # leaves the freed ones as holes the allocator would keep without a trim.
    blocks = [np.ones(8_000) for _ in range(3_000)]
    kept = blocks[::10]
    del blocks
    before = _resident_mb()
    assert trim()
    after = _resident_mb()
    assert before - after > 50, (before, after)  # about 170 MB were freed
    assert all(block[0] == 1.0 for block in kept)  # what is still held is untouched
