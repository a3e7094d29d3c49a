"""The driver's freed buffers go back to the operating system; malloc's figures (streaming.heap)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from streaming.heap import ARENAS, malloc_usage, release_free_memory

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


# Arrow's share of a micro-batch, in a process of its own (the memory pool is too): tables
# built, combined and turned into frames, as ``toPandas`` does, then dropped, with a small
# array of each kept; prints the MB still resident after the job's trim, the pool's name
# and the bytes Arrow still has live.
_ARROW = textwrap.dedent(
    """
    import sys

    import numpy as np
    import pyarrow as pa

    from streaming import heap
    from tests.unit.streaming.test_heap import resident_mb

    if sys.argv[1] == "settled":
        heap.settle()
    pa.table({"a": [1]}).to_pandas()  # pandas imported before the baseline
    before = resident_mb()
    kept = []
    for _ in range(40):
        table = pa.table({"a": np.arange(200_000), "b": np.arange(200_000) / 3})
        frame = pa.concat_tables([table, table]).combine_chunks().to_pandas()
        kept.append(pa.array(np.arange(1_000)))
        del table, frame
    heap.release_free_memory()
    print(resident_mb() - before, pa.default_memory_pool().backend_name,
          pa.total_allocated_bytes())
    """
)


def _run(script: str, mode: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", script, mode], capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def _left_resident_mb(mode: str) -> float:
    return float(_run(_BATCH, mode)[0])


def test_settled_heap_returns_freed_large_buffers_and_default_keeps_them() -> None:
    kept_mb = 200 * 2**16 / 2**20  # ~12.5 MB still held on purpose
    default = _left_resident_mb("default")
    settled = _left_resident_mb("settled")
    assert default > 150, default  # glibc's defaults keep the 200 MB as holes
    assert settled < kept_mb + 20, settled  # settled: only what is still held stays


def test_settled_arrow_gives_its_freed_buffers_back_with_the_trim() -> None:
    default_mb, default_pool, default_live = _run(_ARROW, "default")
    settled_mb, settled_pool, settled_live = _run(_ARROW, "settled")
    assert (default_pool, settled_pool) == ("mimalloc", "system")
    assert int(default_live) == int(settled_live) < 2**20  # the same little still live
    assert float(default_mb) > 8, default_mb  # mimalloc keeps its freed pages
    assert float(settled_mb) < 4, settled_mb  # on malloc, the trim gives them back


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


# Threads that each allocate and hold a little, as the job's micro-batch, build, py4j and
# Kafka threads do, in a process of its own; settled first or not; prints malloc's arenas.
_THREADS = textwrap.dedent(
    """
    import sys
    import threading

    import numpy as np

    from streaming import heap

    if sys.argv[1] == "settled":
        heap.settle()
    held, started, release = [], threading.Barrier(9), threading.Event()

    def work() -> None:
        held.append([np.ones(100) for _ in range(1_000)])
        started.wait()  # every thread allocates while the others are alive
        release.wait()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    started.wait()
    print(heap.malloc_usage().arenas)
    release.set()
    """
)


def test_settled_before_threads_start_they_share_the_capped_arenas() -> None:
    assert int(_run(_THREADS, "settled")[0]) <= ARENAS
    assert int(_run(_THREADS, "default")[0]) > ARENAS  # glibc's default: an arena a thread


_OBJECTS = (
    "from streaming import heap; heap.python_objects_on_malloc(); import sys, os; "
    "print(sys.getallocatedblocks(), os.environ['PYTHONMALLOC'], sys.argv[1:])"
)


@pytest.mark.parametrize(("given", "blocks_of_pymalloc"), [(None, False), ("pymalloc", True)])
def test_the_driver_restarts_itself_with_python_objects_on_malloc_unless_told(
    given: str | None, blocks_of_pymalloc: bool
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONMALLOC"}
    if given is not None:
        env["PYTHONMALLOC"] = given
    done = subprocess.run(
        [sys.executable, "-c", _OBJECTS, "run", "--rank", "8"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    blocks, allocator, *arguments = done.stdout.strip().split(maxsplit=2)
    assert (int(blocks) > 0) is blocks_of_pymalloc  # pymalloc counts its blocks; malloc: 0
    assert allocator == (given or "malloc")
    assert arguments == ["['run', '--rank', '8']"]  # the same arguments, once
