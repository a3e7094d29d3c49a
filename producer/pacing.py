"""How fast a replay goes: as fast as possible, N events per second, or X times real time.

Pacers take the clock and the sleep function as arguments, so tests drive them with
a fake clock and never sleep. A pacer sleeps only once it is a millisecond ahead of
schedule, so fast paces do not pay for one tiny sleep per event.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["MaxPace", "Pacer", "RatePace", "SpeedPace"]

_MIN_SLEEP_S = 0.001


class Pacer(Protocol):
    """Called before each event is sent, with the event's dataset timestamp."""

    def wait(self, timestamp: int) -> None:
        """Return when the event is due."""


class MaxPace:
    """No waiting: as fast as the broker takes the events."""

    def wait(self, timestamp: int) -> None:
        """Never waits."""


class _Scheduled:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._started: float | None = None

    def _offset_s(self, timestamp: int) -> float:
        raise NotImplementedError

    def wait(self, timestamp: int) -> None:
        """Sleep until ``start + offset(timestamp)``."""
        now = self._clock()
        if self._started is None:
            self._started = now
        ahead = self._started + self._offset_s(timestamp) - now
        if ahead >= _MIN_SLEEP_S:
            self._sleep(ahead)


class RatePace(_Scheduled):
    """``rate`` events per second, evenly spaced."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(clock, sleep)
        self._interval = 1.0 / rate
        self._count = 0

    def _offset_s(self, timestamp: int) -> float:
        offset = self._count * self._interval
        self._count += 1
        return offset


class SpeedPace(_Scheduled):
    """Dataset time compressed ``speed`` times: a day of ratings at speed 86400 takes a second."""

    def __init__(
        self,
        speed: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(clock, sleep)
        self._speed = speed
        self._first: int | None = None

    def _offset_s(self, timestamp: int) -> float:
        if self._first is None:
            self._first = timestamp
        return (timestamp - self._first) / self._speed
