"""A retrain beside the stream: started by a micro-batch, switched in when it is ready.

The micro-batch that finds a retrain due hands a ``RetrainRequest`` (the version
number, the batch whose stored ratings it fits on, and a copy of the short-term counts)
to a ``Retrainer`` and returns. The retrainer runs the build (fit, evaluate, save, write
the new version's lists beside the current ones) on an executor: a thread of the
driver in the job, so the following micro-batches keep validating, storing and folding
in against the current model meanwhile. Once the build is done, the next micro-batch
(or the job between batches) takes the outcome and switches to the version, after
folding into it the users who rated since the snapshot.

States: ``idle`` → ``running`` (``start``) → ``ready`` (the build finished, or failed)
→ ``idle`` again when the outcome is taken. One build at a time. Without an executor
the build runs inside ``start``, so the version is ready in the same micro-batch (the
foreground retrain, ``RECSTREAM_MODEL_RETRAIN_IN_BACKGROUND=false``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Executor, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from enum import StrEnum

from streaming.model.blend import ShortTerm
from streaming.model.versions import ModelVersion

__all__ = ["RetrainOutcome", "RetrainRequest", "RetrainState", "Retrainer"]

_log = logging.getLogger("recstream.streaming")


class RetrainState(StrEnum):
    """Where the retrainer is."""

    IDLE = "idle"
    RUNNING = "running"
    READY = "ready"


@dataclass(frozen=True)
class RetrainRequest:
    """What a build needs, fixed when the micro-batch starts it.

    The build fits on what the store held through ``batch_id`` (which later batches do
    not change); ``short_term`` is a copy of the transition counts as of then, ``current``
    the version in use then (its stars are carried by the new one until its own are
    fitted).
    """

    version: int
    batch_id: int
    reason: str
    short_term: ShortTerm | None = None
    current: ModelVersion | None = None
    started_at: float = 0.0


@dataclass(frozen=True)
class RetrainOutcome:
    """A finished build.

    ``model`` is None when the build failed (``error`` says why); ``staged`` is how many
    of its user lists are already written to the lists' store (None: none are, the switch
    publishes the version in full).
    """

    request: RetrainRequest
    model: ModelVersion | None
    staged: int | None
    seconds: float
    error: str | None = None


Build = Callable[[RetrainRequest], tuple[ModelVersion, int | None]]


class Retrainer:
    """Runs one build at a time on ``executor`` (inline without one); see the module."""

    def __init__(self, build: Build, executor: Executor | None = None) -> None:
        self._build = build
        self._executor = executor
        # The build started and not taken yet.
        self._started: tuple[RetrainRequest, Future[RetrainOutcome]] | None = None

    @property
    def state(self) -> RetrainState:
        """``idle``, ``running`` or ``ready``."""
        if self._started is None:
            return RetrainState.IDLE
        return RetrainState.READY if self._started[1].done() else RetrainState.RUNNING

    @property
    def busy(self) -> bool:
        """A build was started and its outcome not taken yet (running or ready)."""
        return self._started is not None

    @property
    def request(self) -> RetrainRequest | None:
        """The request of the build started and not taken yet."""
        return None if self._started is None else self._started[0]

    def start(self, request: RetrainRequest) -> None:
        """Start building ``request``'s version.

        Raises:
            RuntimeError: a build is running, or its outcome was not taken yet.
        """
        if self._started is not None:
            msg = f"version {self._started[0].version} is still building"
            raise RuntimeError(msg)
        if self._executor is None:
            future: Future[RetrainOutcome] = Future()
            future.set_result(self._run(request))
        else:
            future = self._executor.submit(self._run, request)
        self._started = (request, future)

    def take(self) -> RetrainOutcome | None:
        """The outcome of a finished build (once); None while idle or running."""
        if self._started is None or not self._started[1].done():
            return None
        request, future = self._started
        self._started = None
        try:
            return future.result()
        except CancelledError:  # the job stopped before the build began
            return RetrainOutcome(request, None, None, 0.0, "cancelled")

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a running build; True when none is running."""
        if self._started is None:
            return True
        try:
            self._started[1].exception(timeout=timeout_s)
        except FutureTimeout:
            return False
        except CancelledError:
            pass
        return True

    def _run(self, request: RetrainRequest) -> RetrainOutcome:
        began = time.perf_counter()
        try:
            model, staged = self._build(request)
        except Exception as exc:  # reported through the outcome, on the pipeline's thread
            _log.exception("building version %d failed", request.version)
            error = f"{type(exc).__name__}: {exc}"
            return RetrainOutcome(request, None, None, time.perf_counter() - began, error)
        return RetrainOutcome(request, model, staged, time.perf_counter() - began)
