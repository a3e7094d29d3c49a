"""Offline protocols on small generated data with planted taste, through the real retrain code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession

from producer.synthetic import synthetic_dataset
from streaming.evaluation.prequential import (
    LIST_MAKERS,
    PrequentialReport,
    batch_bounds,
    prequential_protocol,
)
from streaming.evaluation.protocols import (
    EvaluationInputError,
    cold_start_ceiling,
    fit_for_evaluation,
    load_split,
    ranking_protocol,
    rating_folds,
    rating_protocol,
    search_grid,
    time_split,
)
from streaming.model.metrics import RankingFigures
from streaming.settings import ModelSettings

SETTINGS = ModelSettings(rank=4, max_iter=5, top_k=20, rating_spark_regs=(0.1,))


def _planted(events: int = 12_000, movies: int = 120) -> pd.DataFrame:
    table = synthetic_dataset(events, users=150, movies=movies, seed=3).ratings
    return pd.DataFrame({
        "user_id": table.user_ids, "movie_id": table.movie_ids,
        "rating": table.ratings.astype(np.float64), "timestamp": table.timestamps,
    })  # fmt: skip


def test_time_split_keeps_the_cutoff_out_of_training() -> None:
    ratings = pd.DataFrame({"user_id": [1] * 5, "movie_id": range(5), "rating": [3.0] * 5,
                            "timestamp": [10, 20, 30, 40, 50]})  # fmt: skip
    train, test, cutoff = time_split(ratings, 0.6)
    assert cutoff == 40
    assert train["timestamp"].tolist() == [10, 20, 30]
    assert test["timestamp"].tolist() == [40, 50]
    with pytest.raises(ValueError, match="train_share must be between 0 and 1"):
        time_split(ratings, 1.0)


def test_a_missing_split_names_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(EvaluationInputError, match=r"u1.base not found: .*u1.base/u1.test"):
        load_split(tmp_path / "u1.base")


def _write_split(frame: pd.DataFrame, path: Path) -> None:
    frame[["user_id", "movie_id", "rating", "timestamp"]].astype({"rating": "int64"}).to_csv(
        path, sep="\t", header=False, index=False
    )


@pytest.mark.slow
def test_rating_protocol_figures_are_well_formed_and_beat_the_mean(
    spark: SparkSession, tmp_path: Path
) -> None:
    ratings = _planted()
    rng = np.random.default_rng(0)
    for fold in (1, 2):
        test_rows = rng.random(len(ratings)) < 0.2
        _write_split(ratings[~test_rows], tmp_path / f"u{fold}.base")
        _write_split(ratings[test_rows], tmp_path / f"u{fold}.test")
    report = rating_protocol(spark, rating_folds(ratings, tmp_path, folds=2), SETTINGS)
    summary = report.summary()
    assert set(summary) == {"recstream", "stars-at-scale", "als-explicit", "spark-default",
                            "biases"}  # fmt: skip
    for figures in (*report.folds["recstream"], *report.folds["als-explicit"],
                    *report.folds["stars-at-scale"], *report.folds["biases"]):  # fmt: skip
        test = load_split(tmp_path / f"{figures.fold}.test")
        spread = float(np.sqrt(np.mean((test["rating"] - test["rating"].mean()) ** 2)))
        assert 0 < figures.rmse < spread  # better than predicting the mean
        assert 0 < figures.mae <= figures.rmse
    again = rating_protocol(spark, rating_folds(ratings, tmp_path, folds=2), SETTINGS)
    assert again.summary()["recstream"] == summary["recstream"]  # same seed, same figures


@pytest.mark.slow
def test_ranking_protocol_figures_are_well_formed(spark: SparkSession) -> None:
    ratings = _planted()
    report = ranking_protocol(spark, ratings, SETTINGS, train_share=0.7)
    assert report.train_ratings + report.test_ratings == 12_000
    assert set(report.figures) == {"recstream", "spark-default", "popular"}
    for figures in (*report.figures.values(), *report.known_figures.values()):
        assert figures.users > 0
        for value in (figures.precision, figures.recall, figures.ndcg, figures.map):
            assert 0.0 <= value <= 1.0
    # better than a random list of unrated movies, whose expected precision is the share
    # of relevant movies among each user's candidates
    train, test, _ = time_split(ratings, 0.7)
    relevant = test[test["rating"] >= 4].groupby("user_id")["movie_id"].apply(set)
    rated = train.groupby("user_id")["movie_id"].apply(set)
    chance = np.mean([len(relevant[u] - rated[u]) / (120 - len(rated[u]))
                      for u in relevant.index if u in rated.index])  # fmt: skip
    assert report.known_figures["recstream"].precision > chance
    bound = report.ceiling
    assert bound["new_users"] + bound["known_users"] == report.figures["popular"].users
    assert bound["known_users"] == report.known_figures["popular"].users


def test_the_ceiling_is_the_best_single_list_for_new_users() -> None:
    # three new users: movie 2 is relevant to all of them, 1 and 3 to one each, so the
    # best list for them finds 5 relevant movies in 3 lists of 10
    popular = RankingFigures(users=5, skipped=0, precision=0.2, recall=0, ndcg=0, map=0)
    known = RankingFigures(users=2, skipped=0, precision=0.1, recall=0, ndcg=0, map=0)
    bound = cold_start_ceiling([{1, 2}, {2, 3}, {2}], popular, known)
    assert bound["new_users"] == 3 and bound["known_users"] == 2
    assert bound["new_user_best_list_precision"] == pytest.approx(5 / 30, abs=1e-6)
    # 1.5 × 0.2 over 5 users = 1.5 hits of precision; the new users bring 0.5 at best
    assert bound["known_user_precision_needed_for_1_5x"] == pytest.approx(0.5, abs=1e-6)


@pytest.mark.slow
def test_prequential_replay_is_well_formed_and_beats_random_lists(spark: SparkSession) -> None:
    ratings = _planted(movies=600)  # users rate a small share of the catalog, as in MovieLens
    report = prequential_protocol(ratings, SETTINGS, fit_for_evaluation(spark, SETTINGS),
                                  batch_size=500, retrain_every=3_000)  # fmt: skip
    assert report.ratings == len(ratings)
    assert set(report.hit_rate) == set(LIST_MAKERS) == set(report.ndcg)
    assert [half["ratings"] for half in report.halves] == [6_000, 6_000]
    assert report.retrains == 4  # the first model at 1,000 ratings, then every 3,000
    assert 0.0 < report.fit_seconds < report.seconds
    assert sum(day["ratings"] for day in report.days) == len(ratings)
    for day in report.days:
        for name in ("hit_rate", "ndcg", "popular_hit_rate", "popular_ndcg"):
            assert 0.0 <= day[name] <= 1.0
    for name in LIST_MAKERS:
        assert 0.0 < report.ndcg[name] <= report.hit_rate[name] <= 1.0
    # a random list of 10 movies the user had not rated before the batch hits the next
    # rating with chance 10 / (movies not yet rated)
    assert report.hit_rate["recstream"] > _random_hit_rate(ratings, batch_size=500)
    assert report.hit_rate["popular"] > _random_hit_rate(ratings, batch_size=500)
    # new users: those whose first rating is in the batch being checked
    ordered = ratings.sort_values(["timestamp", "user_id", "movie_id"], kind="stable")
    batch = np.arange(len(ordered)) // 500
    first_batch = pd.Series(batch).groupby(ordered["user_id"].to_numpy()).transform("min")
    groups = {group["users"]: group for group in report.users}
    assert groups["new"]["ratings"] == int((first_batch.to_numpy() == batch).sum())
    assert groups["new"]["ratings"] + groups["returning"]["ratings"] == len(ratings)
    for name in LIST_MAKERS:  # the two groups' figures average to the overall one
        pooled = sum(group["ratings"] * group["hit_rate"][name] for group in report.users)
        assert pooled / len(ratings) == pytest.approx(report.hit_rate[name], abs=1e-5)


def test_needed_on_returning_users_solves_the_mix_for_the_target() -> None:
    # 40 % new users' ratings at 0.05 (the lists recstream could give them), popular 0.1
    # overall: 2x popular = 0.2 needs 0.4 * 0.05 + 0.6 * x = 0.2, x = 0.3
    group: dict[str, object] = {"ndcg": {}}
    report = PrequentialReport(
        ratings=1_000, batching="100 ratings", batches=10, retrain_every=100, retrains=1,
        hit_rate={"recstream": 0.15, "popular": 0.1}, ndcg={}, halves=[], days=[], seconds=1.0,
        users=[{**group, "users": "returning", "ratings": 600, "hit_rate": {"recstream": 0.2}},
               {**group, "users": "new", "ratings": 400, "hit_rate": {"recstream": 0.05}}],
    )  # fmt: skip
    assert report.needed_on_returning(2.0) == pytest.approx(0.3)
    assert np.isnan(PrequentialReport(**{**report.__dict__, "users": []}).needed_on_returning(2.0))


def _random_hit_rate(ratings: pd.DataFrame, batch_size: int) -> float:
    ordered = ratings.sort_values(["timestamp", "user_id", "movie_id"], kind="stable")
    ordered = ordered.reset_index(drop=True).assign(batch=lambda f: f.index // batch_size)
    ordered["first"] = ~ordered.duplicated(["user_id", "movie_id"])
    new = ordered.groupby(["user_id", "batch"])["first"].sum().rename("new").reset_index()
    new["before"] = new.groupby("user_id")["new"].cumsum() - new["new"]
    before = ordered.merge(new, on=["user_id", "batch"], how="left")["before"].to_numpy()
    unrated = np.maximum(ratings["movie_id"].nunique() - before, 1)
    return float(np.mean(np.minimum(1.0, 10 / unrated)))


def test_without_official_splits_the_folds_are_a_seeded_partition() -> None:
    ratings = _planted(events=1_000)
    folds = rating_folds(ratings, None, folds=5, seed=7)
    assert [name for name, _, _ in folds] == ["fold1", "fold2", "fold3", "fold4", "fold5"]
    tests = pd.concat([test for _, _, test in folds])
    assert len(tests) == len(ratings)  # each rating is tested exactly once
    assert not tests.duplicated().any()
    for _, train, test in folds:
        assert len(train) + len(test) == len(ratings)
        assert 190 <= len(test) <= 210
    again = rating_folds(ratings, None, folds=5, seed=7)
    assert all(a[2].equals(b[2]) for a, b in zip(folds, again, strict=True))
    with pytest.raises(EvaluationInputError, match="5-fold split needs at least 5 ratings"):
        rating_folds(ratings.head(3), None)


def test_search_grid_builds_every_combination_over_the_base() -> None:
    combos = search_grid({"rank": ["5", "20"], "implicit_prefs": ["true"],
                          "alpha": ["1", "10"]}, SETTINGS)  # fmt: skip
    assert [(c.rank, c.alpha, c.implicit_prefs) for c in combos] == [
        (5, 1.0, True), (20, 1.0, True), (5, 10.0, True), (20, 10.0, True)
    ]  # fmt: skip
    assert all(c.max_iter == SETTINGS.max_iter for c in combos)  # the rest from the base


def test_search_grid_names_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="not model settings: rnk"):
        search_grid({"rnk": ["3"]}, SETTINGS)
    with pytest.raises(ValueError, match="rank"):
        search_grid({"rank": ["0"]}, SETTINGS)


def test_micro_batches_by_count_or_by_seconds_of_dataset_time() -> None:
    stamps = np.array([0, 0, 1, 5, 5, 6, 9], dtype=np.int64)
    assert batch_bounds(stamps, 3, None).tolist() == [0, 3, 6, 7]
    assert batch_bounds(stamps, None, 1.0).tolist() == [0, 2, 3, 5, 6, 7]  # one per second
    assert batch_bounds(stamps, None, 5.0).tolist() == [0, 3, 7]  # [0, 5), [5, 10)
    with pytest.raises(ValueError, match="exactly one"):
        batch_bounds(stamps, 3, 1.0)
    with pytest.raises(ValueError, match="exactly one"):
        batch_bounds(stamps, None, None)
    with pytest.raises(ValueError, match="window_s"):
        batch_bounds(stamps, None, 0.0)


def test_search_refuses_an_unknown_protocol_before_loading_anything(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from streaming.evaluation.cli import app

    result = CliRunner().invoke(
        app, ["search", "--protocol", "fancy", "--set", "rank=5", "--source", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "choose ranking or prequential" in result.output
