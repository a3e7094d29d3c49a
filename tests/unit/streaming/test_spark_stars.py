"""Stars at scale: Spark's explicit ALS behind the rating model's interface, on planted data."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession

from serving.layout import ModelMeta
from streaming.ingest.history import compressed_rows, whole_user_frames
from streaming.model.topn import ItemIndex
from streaming.model.versions import ModelVersion, load_model, save_model
from streaming.rating.fitter import StarsFitter, StarsInput, held_out_stars, stars_rmse
from streaming.rating.fm import RatingModel
from streaming.rating.spark_stars import fit_spark_stars, held_out_rmse
from tests.conftest import model_settings
from tests.unit.streaming.test_fm import _planted

RANK = {"rating_rank": 2, "rating_spark_iter": 8, "rating_spark_regs": (0.1,)}


def _split(seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Planted ratings with timestamps; the newest fifth is held out."""
    users, movies, ratings, _ = _planted(users=120, movies=50, per_user=25, seed=seed)
    order = np.random.default_rng(seed).permutation(len(users))
    frame = pd.DataFrame({"user_id": users, "movie_id": movies, "rating": ratings,
                          "timestamp": order.astype(np.int64)})  # fmt: skip
    cutoff = int(len(frame) * 0.8)
    return frame[frame["timestamp"] < cutoff], frame[frame["timestamp"] >= cutoff]


def test_the_stars_explain_the_planted_taste_far_better_than_offsets(spark: SparkSession) -> None:
    training, held_out = _split()
    model = fit_spark_stars(spark.createDataFrame(training), model_settings(**RANK))
    assert model.draws == 1 and model.movie_factors.shape == (1, 50, 2)
    assert (np.diff(model.movie_ids) > 0).all()
    predicted = held_out_stars(model, training, held_out)
    actual = held_out["rating"].to_numpy()
    error, pairs = stars_rmse(predicted, actual)
    assert pairs == len(held_out) and error is not None
    mean = np.sqrt(np.mean((training["rating"].mean() - actual) ** 2))
    assert error < 0.6 * mean  # the planted rank-2 taste, which offsets alone cannot fit
    # the fold-in's penalties are estimated from the fit: positive and finite
    assert (model.prior_precision > 0).all() and np.isfinite(model.prior_precision).all()
    assert 0 < model.noise_precision[0] < np.inf


def test_the_regularisation_is_chosen_on_the_training_ratings(spark: SparkSession) -> None:
    training, held_out = _split(seed=8)
    frame = spark.createDataFrame(training)
    settings = model_settings(**{**RANK, "rating_spark_regs": (0.05, 500.0)})
    chosen = fit_spark_stars(frame, settings)
    alone = fit_spark_stars(frame, model_settings(**{**RANK, "rating_spark_regs": (0.05,)}))
    for name, array in alone.arrays().items():  # 500 flattens every factor: 0.05 wins
        np.testing.assert_allclose(getattr(chosen, name), array, rtol=1e-6, atol=1e-9)
    flattened = fit_spark_stars(frame, model_settings(**{**RANK, "rating_spark_regs": (500.0,)}))
    actual = held_out["rating"].to_numpy()
    errors = [stars_rmse(held_out_stars(model, training, held_out), actual)[0]
              for model in (chosen, flattened)]  # fmt: skip
    assert errors[0] is not None and errors[1] is not None and errors[0] < errors[1]


def test_the_held_out_rmse_on_the_executors_equals_the_driver_s(spark: SparkSession) -> None:
    training, held_out = _split(seed=4)
    stranger = pd.DataFrame({"user_id": [999], "movie_id": [1], "rating": [4.0],
                             "timestamp": [10**6]})  # fmt: skip
    held_out = pd.concat([held_out, stranger], ignore_index=True)  # a user with no training
    model = fit_spark_stars(spark.createDataFrame(training), model_settings(**RANK))
    expected = stars_rmse(held_out_stars(model, training, held_out), held_out["rating"].to_numpy())
    got = held_out_rmse(model, spark.createDataFrame(training),
                        spark.createDataFrame(held_out), partitions=3)  # fmt: skip
    assert got[1] == expected[1] == len(held_out)
    assert got[0] is not None and expected[0] is not None
    assert abs(got[0] - expected[0]) < 1e-9


def test_past_the_threshold_the_fitter_fits_in_spark_not_a_process(spark: SparkSession) -> None:
    training, held_out = _split(seed=5)
    everything = pd.concat([training, held_out], ignore_index=True)
    cutoff = int(held_out["timestamp"].min())
    settings = model_settings(**RANK, rating_spark_above=len(everything) - 1)
    stored = spark.createDataFrame(everything)
    fitter = StarsFitter(settings, distributed=lambda _through: stored, blocks=2)

    def never() -> tuple[pd.DataFrame, pd.DataFrame]:
        msg = "past the threshold nothing is loaded into the driver"
        raise AssertionError(msg)

    try:
        fitter.request(6, StarsInput(4, cutoff, len(everything), never))
        assert not multiprocessing.active_children()  # no sampler process
        assert fitter.wait(120)
        fitted = fitter.take()
    finally:
        fitter.close()
    assert fitted is not None and fitted.error is None and fitted.model is not None
    assert fitted.version == 6 and fitted.model.draws == 1
    expected = held_out_rmse(fitted.model, spark.createDataFrame(training),
                             spark.createDataFrame(held_out), partitions=2)  # fmt: skip
    assert fitted.rmse == expected[0] and fitted.rmse_pairs == expected[1] == len(held_out)


def test_below_the_threshold_the_sampler_fits(spark: SparkSession) -> None:
    training, held_out = _split(seed=6)
    settings = model_settings(rating_spark_above=10**9)
    fitter = StarsFitter(settings, distributed=lambda _through: spark.range(0).toDF("x"))
    try:
        fitter.request(2, StarsInput(1, None, len(training), lambda: (training, held_out)))
        assert fitter.wait(120)
        fitted = fitter.take()
    finally:
        fitter.close()
    assert fitted is not None and fitted.model is not None
    assert fitted.model.draws == settings.rating_samples  # the factorization machine's draws


def test_a_version_with_spark_stars_is_saved_and_read_back(
    spark: SparkSession, tmp_path: Path
) -> None:
    training, _ = _split(seed=7)
    stars = fit_spark_stars(spark.createDataFrame(training), model_settings(**RANK))
    items = ItemIndex(np.array([1, 2]), np.ones((2, 3)))
    version = ModelVersion(3, items, [(1, 2.0)], ModelMeta(version=3, trained_at=1.0), stars)
    save_model(tmp_path, version)
    loaded = load_model(tmp_path / "v3.npz").stars
    assert isinstance(loaded, RatingModel)
    for name, array in stars.arrays().items():
        np.testing.assert_array_equal(getattr(loaded, name), array)


def test_users_are_aligned_with_empty_rows_for_strangers() -> None:
    rows = compressed_rows([5, 5, 9], [1, 2, 3], [4.0, 3.0, 5.0])
    aligned = rows.for_users([2, 5, 7, 9, 11])
    assert aligned.users.tolist() == [2, 5, 7, 9, 11]
    assert aligned.start.tolist() == [0, 0, 2, 2, 3, 3]
    assert aligned.movies.tolist() == [1, 2, 3]
    assert aligned.ratings.tolist() == [4.0, 3.0, 5.0]
    assert compressed_rows([], [], []).for_users([1]).start.tolist() == [0, 0]


def test_sorted_frames_are_recut_at_user_bounds() -> None:
    frames = [pd.DataFrame({"user_id": [1, 1, 2], "held": [0, 1, 0]}),
              pd.DataFrame({"user_id": [2, 3], "held": [1, 0]}),
              pd.DataFrame({"user_id": [3, 4], "held": [1, 1]})]  # fmt: skip
    chunks = list(whole_user_frames(iter(frames), chunk_rows=3))
    assert [chunk["user_id"].tolist() for chunk in chunks] == [[1, 1], [2, 2], [3, 3], [4]]
    assert [chunk["held"].tolist() for chunk in chunks] == [[0, 1], [0, 1], [0, 1], [1]]
    assert sum(len(chunk) for chunk in chunks) == 7
