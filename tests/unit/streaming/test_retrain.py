"""The retrainer's states, with builds run inline, on a held executor and on a thread."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import pytest

from streaming.model.retrain import Retrainer, RetrainRequest, RetrainState
from streaming.model.versions import ModelVersion
from tests.memory import ManualExecutor


def _request(version: int) -> RetrainRequest:
    return RetrainRequest(version, version - 1, "due")


def _model(version: int) -> ModelVersion:
    """A stand-in the retrainer only passes along."""
    return cast(ModelVersion, f"model {version}")


def _built(request: RetrainRequest) -> tuple[ModelVersion, int | None]:
    return _model(request.version), 7


def _state(retrainer: Retrainer) -> RetrainState:
    return retrainer.state  # read afresh each time (mypy would keep the first answer)


def test_idle_running_ready_idle_and_one_build_at_a_time() -> None:
    builds = ManualExecutor()
    retrainer = Retrainer(_built, builds)
    assert _state(retrainer) is RetrainState.IDLE and retrainer.take() is None
    retrainer.start(_request(3))
    assert _state(retrainer) is RetrainState.RUNNING and retrainer.busy
    assert retrainer.take() is None  # not done: nothing to take
    with pytest.raises(RuntimeError, match="version 3 is still building"):
        retrainer.start(_request(5))
    builds.finish()
    assert _state(retrainer) is RetrainState.READY
    with pytest.raises(RuntimeError, match="version 3"):
        retrainer.start(_request(5))  # ready but not taken is still busy
    outcome = retrainer.take()
    assert outcome is not None
    assert (outcome.request.version, outcome.model, outcome.staged) == (3, _model(3), 7)
    assert _state(retrainer) is RetrainState.IDLE and retrainer.take() is None


def test_inline_builds_are_ready_at_once_and_failures_come_back_as_outcomes() -> None:
    def failing(request: RetrainRequest) -> tuple[ModelVersion, int | None]:
        msg = f"no ratings for version {request.version}"
        raise ValueError(msg)

    retrainer = Retrainer(failing)
    retrainer.start(_request(2))
    assert _state(retrainer) is RetrainState.READY
    outcome = retrainer.take()
    assert outcome is not None and outcome.model is None
    assert outcome.error == "ValueError: no ratings for version 2"


def test_wait_returns_when_a_threaded_build_ends_or_times_out() -> None:
    release = threading.Event()

    def slow(request: RetrainRequest) -> tuple[ModelVersion, int | None]:
        release.wait(10)
        return _built(request)

    with ThreadPoolExecutor(max_workers=1) as executor:
        retrainer = Retrainer(slow, executor)
        assert retrainer.wait(0.01)  # idle
        retrainer.start(_request(4))
        assert not retrainer.wait(0.05)
        release.set()
        assert retrainer.wait(10) and _state(retrainer) is RetrainState.READY
        outcome = retrainer.take()
        assert outcome is not None and outcome.model == _model(4) and outcome.seconds >= 0
