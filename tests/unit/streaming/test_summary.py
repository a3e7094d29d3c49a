"""A build's summary of the store, read by Spark, against the driver-side figures it replaces."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession

from streaming.model.holdout import evaluate, holdout_cutoff, popularity
from streaming.model.summary import StoreSummary, kth_smallest, sample_users, summarise
from streaming.model.topn import ItemIndex
from streaming.model.versions import training_split


def _ratings(rows: int, seed: int) -> pd.DataFrame:
    """Distinct (user, movie) pairs with many tied timestamps."""
    rng = np.random.default_rng(seed)
    pairs = rng.choice(400 * 300, size=rows, replace=False)
    return pd.DataFrame({
        "user_id": pairs // 300 + 1,
        "movie_id": pairs % 300 + 1,
        "rating": rng.integers(1, 6, rows).astype(np.float64),
        "timestamp": 1_000_000 + rng.integers(0, rows // 3, rows) * 60,
    })  # fmt: skip


def _summarised(
    spark: SparkSession, seed: int, **options: Any
) -> tuple[pd.DataFrame, DataFrame, StoreSummary]:
    """A generated store in the driver and in Spark (cached), and its summary by Spark."""
    frame = _ratings(20_000, seed=seed)
    ratings = spark.createDataFrame(frame).cache()
    return frame, ratings, summarise(ratings, seed=seed + 1, in_driver_up_to=0, **options)


def test_the_kth_smallest_value_is_exact_past_the_sketch_accuracy(spark: SparkSession) -> None:
    values = np.random.default_rng(1).integers(0, 5_000, 60_000)  # ties everywhere
    frame = spark.createDataFrame(pd.DataFrame({"v": values})).cache()
    ordered = np.sort(values)
    for k in (0, 1, 29_999, 53_999, 59_999):
        assert kth_smallest(frame, "v", k, len(values)) == ordered[k], k
    with pytest.raises(ValueError, match="outside the 60000 values"):
        kth_smallest(frame, "v", 60_000, len(values))
    frame.unpersist()


def test_a_sample_of_users_is_seeded_sorted_and_drawn_from_them() -> None:
    users = [9, 3, 3, 7, 1, 12, 5]
    assert sample_users(users, 10, seed=1).tolist() == [1, 3, 5, 7, 9, 12]
    drawn = sample_users(users, 3, seed=1)
    assert len(drawn) == 3 and set(drawn) <= set(users)
    assert drawn.tolist() == sorted(drawn.tolist())
    assert drawn.tolist() == sample_users(users, 3, seed=1).tolist()


def test_the_summary_matches_the_driver_side_holdout_and_popularity(
    spark: SparkSession,
) -> None:
    frame, ratings, summary = _summarised(spark, 2, holdout_fraction=0.1, half_life_days=30.0,
                                          evaluation_users=10_000)  # fmt: skip
    cutoff = holdout_cutoff(frame["timestamp"].to_numpy(), 0.1)
    assert summary.cutoff == cutoff
    train, held_out = training_split(frame, cutoff)
    assert summary.ratings == len(frame)
    assert summary.users == frame["user_id"].nunique()
    assert summary.movies == frame["movie_id"].nunique()
    assert summary.held_out == len(held_out)
    expected = popularity(frame, half_life_days=30.0)
    assert summary.popular.index.tolist() == expected.index.tolist()
    assert np.allclose(summary.popular.to_numpy(), expected.to_numpy(), rtol=1e-12)
    trained = popularity(train)
    assert summary.train_popular.index.tolist() == trained.index.tolist()
    assert summary.train_popular.tolist() == trained.tolist()
    # Every held-out user is evaluated: their training and held-out ratings, nobody else's.
    assert summary.evaluated_users.tolist() == sorted(held_out["user_id"].unique().tolist())
    theirs = train[train["user_id"].isin(summary.evaluated_users)]
    assert len(summary.train) == len(theirs)
    assert set(map(tuple, summary.train[["user_id", "movie_id"]].to_numpy().tolist())) == set(
        map(tuple, theirs[["user_id", "movie_id"]].to_numpy().tolist())
    )
    assert len(summary.held_out_sample) == len(held_out)

    # The evaluation on the summary gives the figures of the evaluation on everything.
    rng = np.random.default_rng(4)
    movies = np.arange(1, 301)
    items = ItemIndex(movies, rng.normal(size=(300, 4)))
    users = np.arange(1, 401)
    factors = (users, rng.normal(size=(400, 4)))
    whole = evaluate(train, held_out, factors, items, 4.0)
    sampled = evaluate(summary.train, summary.held_out_sample, factors, items, 4.0,
                       popular=summary.train_popular, held_out_total=summary.held_out)  # fmt: skip
    assert sampled.ranked_users == whole.ranked_users > 0
    assert sampled.model == whole.model
    assert sampled.popular == whole.popular
    assert sampled.rmse == pytest.approx(whole.rmse)
    assert sampled.held_out == whole.held_out
    ratings.unpersist()


def test_a_capped_evaluation_reads_only_its_sample_and_nothing_without_a_holdout(
    spark: SparkSession,
) -> None:
    frame, ratings, summary = _summarised(spark, 5, holdout_fraction=0.2, half_life_days=0.0,
                                          evaluation_users=25)  # fmt: skip
    assert summary.cutoff is not None
    held_out_users = set(frame.loc[frame["timestamp"] >= summary.cutoff, "user_id"].tolist())
    assert len(summary.evaluated_users) == 25
    assert set(summary.evaluated_users.tolist()) <= held_out_users
    mine = frame[frame["user_id"].isin(summary.evaluated_users)]
    assert len(summary.train) + len(summary.held_out_sample) == len(mine)
    assert (summary.held_out_sample["timestamp"] >= summary.cutoff).all()
    assert (summary.train["timestamp"] < summary.cutoff).all()
    assert summary.held_out == int((frame["timestamp"] >= summary.cutoff).sum())

    nothing = summarise(ratings, holdout_fraction=0.0, half_life_days=0.0,
                        evaluation_users=25, seed=6, in_driver_up_to=0)  # fmt: skip
    assert nothing.cutoff is None and nothing.held_out == 0
    assert nothing.train.empty and nothing.held_out_sample.empty
    assert nothing.train_popular.sum() == len(frame)  # every rating is a training one
    ratings.unpersist()


@pytest.mark.parametrize(("fraction", "cap"), [(0.1, 10_000), (0.2, 25), (0.0, 25)])
def test_a_small_store_summarised_in_the_driver_gives_the_same_summary(
    spark: SparkSession, fraction: float, cap: int
) -> None:
    options: dict[str, Any] = {"holdout_fraction": fraction, "half_life_days": 30.0,
                               "evaluation_users": cap}  # fmt: skip
    _, ratings, by_spark = _summarised(spark, 8, **options)
    in_driver = summarise(ratings, seed=9, **options)  # 20,000 ratings: below the bound
    for name in ("ratings", "users", "movies", "cutoff", "held_out"):
        assert getattr(in_driver, name) == getattr(by_spark, name), name
    assert in_driver.evaluated_users.tolist() == by_spark.evaluated_users.tolist()
    for name in ("popular", "train_popular"):
        mine, theirs = getattr(in_driver, name), getattr(by_spark, name)
        assert mine.index.tolist() == theirs.index.tolist(), name
        assert np.allclose(mine.to_numpy(dtype=float), theirs.to_numpy(dtype=float)), name
    for name in ("train", "held_out_sample"):
        pd.testing.assert_frame_equal(getattr(in_driver, name), getattr(by_spark, name),
                                      check_dtype=False)  # fmt: skip
    ratings.unpersist()
