"""How long each stage took: one helper for every timed stage of the job."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["timed"]


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Add the seconds the ``with`` block takes to ``timings[stage]``, even if it raises.

    Example:
        >>> timings: dict[str, float] = {}
        >>> with timed(timings, "fit"):
        ...     pass
        >>> list(timings)
        ['fit']
    """
    began = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - began
