"""Retrain policy decisions, evaluation figures with known answers, and a planted model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession

from serving.layout import ModelMeta
from streaming.ingest.history import RatingHistory
from streaming.model.holdout import evaluate, holdout_cutoff, popularity
from streaming.model.lists import lists_for
from streaming.model.policy import RetrainPolicy
from streaming.model.topn import ItemIndex
from streaming.model.versions import (
    ModelVersion,
    load_latest_model,
    load_model,
    popularity_prior,
    save_model,
    train_model,
)
from streaming.settings import ModelSettings

POLICY = RetrainPolicy(every_ratings=100, every_s=60.0, min_ratings=50)


@pytest.mark.parametrize(
    ("stored", "new", "seconds", "has_model", "due"),
    [
        (49, 49, None, False, None),  # below M: never
        (50, 50, None, False, "first model"),
        (500, 99, 59.0, True, None),
        (500, 100, 1.0, True, "100 new ratings"),
        (500, 1, 60.0, True, "60 s since"),
        (500, 0, 3600.0, True, None),  # time alone, with nothing new, is not a reason
    ],
)
def test_retrain_policy(
    stored: int, new: int, seconds: float | None, has_model: bool, due: str | None
) -> None:
    reason = POLICY.reason(stored=stored, new_since=new, seconds_since=seconds, has_model=has_model)
    assert (reason is None) == (due is None)
    if due is not None:
        assert reason is not None
        assert reason.startswith(due)


def test_holdout_cutoff_keeps_the_newest_share_out() -> None:
    stamps = np.arange(100, dtype=np.int64)
    assert holdout_cutoff(stamps, 0.1) == 90
    assert holdout_cutoff(stamps, 0.0) is None
    assert holdout_cutoff(np.full(10, 5, dtype=np.int64), 0.5) is None  # one instant


def test_ranking_figures_on_a_hand_checked_case() -> None:
    items = ItemIndex([1, 2, 3, 4, 5], np.array([[5.0], [4.0], [3.0], [2.0], [1.0]]))
    users = (np.array([7]), np.array([[1.0]]))
    train = pd.DataFrame({"user_id": [7, 8, 8, 9], "movie_id": [1, 4, 5, 5], "rating": 4.0})
    # User 7 rated movie 1, so the model lists 2, 3, 4, 5; movies 3 and 5 are relevant.
    held = pd.DataFrame({"user_id": [7, 7, 7], "movie_id": [3, 5, 2], "rating": [5.0, 4.0, 1.0]})
    result = evaluate(train, held, users, items, relevant_rating=4.0)
    assert result.ranked_users == 1
    assert result.model is not None
    assert result.popular is not None
    assert result.model.precision == pytest.approx(0.2)
    assert result.model.recall == pytest.approx(1.0)
    ideal = 1 + 1 / np.log2(3)
    assert result.model.ndcg == pytest.approx((1 / np.log2(3) + 1 / np.log2(5)) / ideal, abs=1e-6)
    assert result.model.map == pytest.approx((1 / 2 + 2 / 4) / 2, abs=1e-6)  # hits at 2 and 4
    # Popularity from training: 5 (2 ratings), then 4, then 1 (rated, excluded).
    assert result.popular.recall == pytest.approx(0.5)
    # RMSE over the three held-out pairs: predictions 3, 1 and 4.
    assert result.rmse == pytest.approx(np.sqrt(((3 - 5) ** 2 + (1 - 4) ** 2 + (4 - 1) ** 2) / 3))
    assert popularity(train).index.tolist() == [5, 1, 4]
    implicit = evaluate(train, held, users, items, relevant_rating=4.0, predicts_ratings=False)
    assert implicit.rmse is None  # preference scores are not ratings
    assert implicit.model == result.model


def test_popularity_with_a_half_life_counts_recent_ratings_more() -> None:
    day = 86_400
    ratings = pd.DataFrame(
        {"movie_id": [1, 1, 1, 2, 2], "timestamp": [0, 0, 0, 20 * day, 20 * day]}
    )
    assert popularity(ratings).tolist() == [3, 2]  # all-time counts: 1 first
    recent = popularity(ratings, half_life_days=10.0)
    assert recent.index.tolist() == [2, 1]  # movie 1's ratings are two half-lives old
    assert recent.tolist() == pytest.approx([2.0, 0.75])


def test_popularity_prior_is_standardised_log_counts_times_the_weight() -> None:
    counts = pd.Series({10: np.e**2 - 1, 20: np.e**0 - 1})  # log1p: 2 and 0; 30 unrated
    prior = popularity_prior(counts, np.array([10, 20, 30]), weight=0.5)
    raw = np.array([2.0, 0.0, 0.0])
    assert prior == pytest.approx(0.5 * (raw - raw.mean()) / raw.std())
    assert popularity_prior(counts, np.array([10, 20]), weight=0.0).tolist() == [0.0, 0.0]


def test_planted_low_rank_model_brings_a_withheld_favourite_back(
    spark: SparkSession, tmp_path: Path
) -> None:
    rng = np.random.default_rng(7)
    users, movies, rank = 120, 80, 3
    user_taste = rng.normal(size=(users, rank))
    movie_traits = rng.normal(size=(movies, rank))
    truth = user_taste @ movie_traits.T
    rows = []
    for user in range(users):
        for movie in rng.choice(movies, size=40, replace=False):
            rows.append((user + 1, int(movie) + 1, float(truth[user, movie]), 0))
    stamps = rng.permutation(len(rows))  # held-out ratings spread over every user
    rows = [(u, m, r, 1_000 + int(t)) for (u, m, r, _), t in zip(rows, stamps, strict=True)]
    probe = 1  # user 1's favourite movie overall is withheld from every rating
    favourite = int(np.argmax(truth[probe - 1])) + 1
    rows = [row for row in rows if not (row[0] == probe and row[1] == favourite)]
    frame = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])
    history = RatingHistory()
    history.add(frame.assign(batch_id=0, offset=range(len(frame))))
    # rating_samples=0: this checks ALS's own RMSE (the planted ratings are not 1-5 stars)
    settings = ModelSettings(rank=rank, max_iter=15, reg_param=0.01, holdout_fraction=0.1,
                             implicit_prefs=False, popularity_weight=0.0,
                             rating_samples=0)  # fmt: skip
    model = train_model(
        spark.createDataFrame(frame), settings, version=3, batch_id=2, reason="test"
    )
    lists = lists_for(history.of_users([probe]), model.fold_in(settings), k=10)
    assert favourite in [movie for movie, _ in lists.pairs(0)]
    evaluation = model.meta.evaluation
    assert evaluation is not None
    assert evaluation["rmse"] < 0.5  # the planted ratings are exactly low rank
    assert evaluation["held_out"] == len(frame) - int(len(frame) * 0.9)

    save_model(tmp_path, model)
    loaded = load_latest_model(tmp_path)
    assert loaded is not None
    assert loaded.version == 3
    assert np.array_equal(loaded.items.factors, model.items.factors)
    assert np.array_equal(loaded.items.prior, model.items.prior)
    assert loaded.popular == model.popular
    assert loaded.meta == model.meta
    assert loaded.stars is None  # switched off in these settings


def test_a_rating_model_is_fitted_scored_saved_and_loaded_with_its_version(
    spark: SparkSession, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    taste = rng.normal(0, 0.8, (60, 2)) @ rng.normal(0, 0.8, (2, 40))
    rows = [(u + 1, m + 1, float(np.clip(np.round(3.2 + taste[u, m]), 1, 5)))
            for u in range(60) for m in rng.choice(40, 20, replace=False)]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating"])
    frame["timestamp"] = rng.permutation(len(frame))  # held-out ratings of every user
    history = RatingHistory()
    history.add(frame.assign(batch_id=0, offset=range(len(frame))))
    settings = ModelSettings(rank=3, max_iter=5, rating_rank=3, rating_sweeps=40,
                             rating_burn_in=10, rating_samples=6)  # fmt: skip
    model = train_model(spark.createDataFrame(frame), settings, version=5, batch_id=4,
                        reason="test")  # fmt: skip
    assert model.stars is not None and model.stars.draws == 6
    evaluation = model.meta.evaluation
    assert evaluation is not None and model.meta.holdout_from_timestamp is not None
    held = frame[frame["timestamp"] >= model.meta.holdout_from_timestamp]
    spread = float(np.sqrt(np.mean((held["rating"] - frame["rating"].mean()) ** 2)))
    assert evaluation["rmse_model"] == "rating-model"
    assert 0 < evaluation["rmse"] < spread  # stars beat the mean on ratings it never saw
    assert model.meta.timings_s["rating_model"] > 0
    loaded = load_model(save_model(tmp_path, model))
    assert loaded.stars is not None
    for name, array in model.stars.arrays().items():
        assert np.array_equal(getattr(loaded.stars, name), array), name
    popular = loaded.popular_stars()
    assert popular is not None and len(popular) == len(loaded.popular)
    assert all(1 <= star <= 5 for star in popular)


def test_a_saved_prior_comes_back_and_older_files_load_without_one(tmp_path: Path) -> None:
    items = ItemIndex([2, 1], np.ones((2, 3)), prior=[0.5, -0.5])
    model = ModelVersion(4, items, [(2, 9.0)], ModelMeta(version=4, trained_at=0.0))
    loaded = load_model(save_model(tmp_path, model))
    assert loaded.items.prior.tolist() == [-0.5, 0.5]
    older = tmp_path / "v3.npz"  # written before models had a prior
    np.savez(older, movie_ids=np.array([1, 2]), factors=np.ones((2, 3)),
             popular=np.zeros((0, 2)),
             meta=np.array('{"version": 3, "trained_at": 0}'))  # fmt: skip
    assert load_model(older).items.prior.tolist() == [0.0, 0.0]


def test_a_model_file_holding_pickled_objects_is_refused(tmp_path: Path) -> None:
    # A planted .npz whose "meta" is a pickled object: loading must not unpickle it.
    planted = tmp_path / "v1.npz"
    np.savez(planted, meta=np.array([{"version": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        load_model(planted)
