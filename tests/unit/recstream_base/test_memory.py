"""glibc's malloc as the driver sees it: what it hands out, and the free pages it gives back."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pytest

from recstream_base.memory import malloc_usage, release_free_memory

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="malloc_trim and mallinfo2 are glibc's"
)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


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
    kept = _rss_mb()
    assert release_free_memory() is True
    assert kept - _rss_mb() > 20
    assert len(blocks) == 4_000
