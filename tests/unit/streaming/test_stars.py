"""The rating model fitted beside the stream: one fit at a time, newest first, cancellable."""

from __future__ import annotations

import multiprocessing
import time

import numpy as np
import pandas as pd

from serving.layout import ModelMeta
from streaming.model.topn import ItemIndex
from streaming.model.versions import ModelVersion, stars_version
from streaming.pipeline import with_stars
from streaming.rating.fitter import (
    FittedStars,
    StarsFitter,
    StarsInput,
    held_out_stars,
    rating_model,
)
from tests.conftest import model_settings
from tests.unit.streaming.test_fm import _planted


def _frames(seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    users, movies, ratings, _ = _planted(users=80, movies=40, per_user=20, seed=seed)
    frame = pd.DataFrame({"user_id": users, "movie_id": movies, "rating": ratings,
                          "timestamp": np.arange(len(users), dtype=np.int64)})  # fmt: skip
    held = np.random.default_rng(seed).random(len(frame)) < 0.1
    return frame[~held], frame[held]


def _input(training: pd.DataFrame, held_out: pd.DataFrame) -> StarsInput:
    """The fitter's input for frames already split (the sampler's path: no Spark)."""
    return StarsInput(None, None, len(training) + len(held_out), lambda: (training, held_out))


def test_a_fit_in_the_background_equals_the_same_fit_in_the_retrain() -> None:
    settings = model_settings()
    training, held_out = _frames()
    fitter = StarsFitter(settings)
    try:
        fitter.request(7, _input(training, held_out))
        assert fitter.wait(60)
        fitted = fitter.take()
    finally:
        fitter.close()
    assert fitted is not None and fitted.model is not None and fitted.error is None
    assert fitted.version == 7 and fitted.seconds > 0
    direct = rating_model(training, settings)
    assert direct is not None
    for name, array in direct.arrays().items():  # same seed, same draws, in either process
        np.testing.assert_array_equal(getattr(fitted.model, name), array)
    expected = held_out_stars(direct, training, held_out)
    rmse = np.sqrt(np.mean((expected - held_out["rating"].to_numpy()) ** 2))
    assert fitted.rmse is not None and abs(fitted.rmse - rmse) < 1e-12
    assert fitted.rmse_pairs == len(held_out)
    assert fitter.take() is None  # taken once


def test_requests_during_a_fit_queue_and_only_the_newest_runs_next() -> None:
    slow = model_settings(rating_sweeps=400, rating_burn_in=10, rating_samples=4)
    training, held_out = _frames()
    fitter = StarsFitter(slow)
    try:
        fitter.request(1, _input(training, held_out))
        deadline = time.monotonic() + 30
        while not multiprocessing.active_children():  # version 1 is fitting
            assert time.monotonic() < deadline, "the fit of version 1 did not start"
            time.sleep(0.01)
        fitter.request(2, _input(training, held_out))
        fitter.request(3, _input(training, held_out))  # replaces 2 in the queue
        assert fitter.busy
        seen: list[int] = []
        deadline = time.monotonic() + 120
        while (not seen or seen[-1] != 3) and time.monotonic() < deadline:
            fitted = fitter.take()
            if fitted is not None:
                seen.append(fitted.version)
            time.sleep(0.01)
    finally:
        fitter.close()
    assert 2 not in seen
    assert seen[-1] == 3
    assert not fitter.busy


def test_the_fit_runs_in_its_own_process_and_close_ends_it() -> None:
    endless = model_settings(rating_sweeps=10_000, rating_burn_in=10, rating_samples=4)
    training, held_out = _frames()
    fitter = StarsFitter(endless)
    fitter.request(1, _input(training, held_out))
    deadline = time.monotonic() + 30
    while not multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.01)
    names = [child.name for child in multiprocessing.active_children()]
    assert names == ["recstream-rating-model"]  # not a thread holding the job's GIL
    time.sleep(1.0)
    began = time.monotonic()
    fitter.close()
    assert time.monotonic() - began < 5  # 10,000 sweeps would take far longer
    assert not multiprocessing.active_children()
    assert not fitter.busy
    assert fitter.take() is None  # a cancelled fit delivers nothing
    fitter.request(2, _input(training, held_out))  # a closed fitter takes no more work
    assert not fitter.busy


def test_a_failing_fit_is_reported_not_lost() -> None:
    training, held_out = _frames()
    fitter = StarsFitter(model_settings())
    try:
        fitter.request(4, _input(training.drop(columns="rating"), held_out))
        assert fitter.wait(30)
        failed = fitter.take()
        fitter.request(5, _input(training, held_out))  # the thread lives on
        assert fitter.wait(60)
        good = fitter.take()
    finally:
        fitter.close()
    assert failed is not None and failed.model is None
    assert failed.error is not None and "rating" in failed.error
    assert good is not None and good.version == 5 and good.model is not None


def test_adopted_stars_score_the_version_only_when_fitted_on_its_own_ratings() -> None:
    training, _ = _frames()
    stars = rating_model(training, model_settings())
    assert stars is not None
    items = ItemIndex(np.array([1, 2]), np.ones((2, 3)))
    meta = ModelMeta(version=6, trained_at=0.0, timings_s={"fit": 1.0},
                     evaluation={"rmse": None, "rmse_pairs": 0, "rmse_model": None,
                                 "held_out": 9})  # fmt: skip
    model = ModelVersion(6, items, [(1, 2.0)], meta)
    assert stars_version(model) is None
    own = with_stars(model, FittedStars(6, stars, 0.91, 9, 2.5))
    older = with_stars(model, FittedStars(4, stars, 0.88, 7, 2.0))
    assert (stars_version(own), stars_version(older)) == (6, 4)
    assert own.meta.evaluation == {
        "rmse": 0.91, "rmse_pairs": 9, "rmse_model": "rating-model", "held_out": 9}  # fmt: skip
    assert older.meta.evaluation == meta.evaluation  # not this version's fit
    assert own.meta.timings_s == {"fit": 1.0, "rating_model": 2.5}
    assert model.stars is None and model.meta is meta  # the published version is untouched
    legacy = ModelVersion(
        3, items, [(1, 2.0)], ModelMeta(version=3, trained_at=0.0), stars
    )  # saved before the field existed
    assert stars_version(legacy) == 3
