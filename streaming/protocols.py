"""Offline evaluation protocols of recstream's lists (``python -m streaming.evaluate``).

Every protocol measures what the streaming job would publish: a model trained by
``streaming.model.train_model`` (the retrain code, with no held-out share), each user's
factor folded in from their own ratings (the ALS user step the job runs), lists of
movies they have not rated, ties by ascending movie id. Users the model cannot fold in
get the model's popular list, as serving gives them. Beside it:

- ``spark-default``: ``pyspark.ml.recommendation.ALS()`` with every setting left at its
  default, its own user factors, the same exclusion of rated movies;
- ``popular``: the most-rated movies of the training data the user has not rated.

Protocols:

1. ``rating``: RMSE and MAE on ML-100K's official splits u1..u5 (train ``uN.base``,
   test ``uN.test``), predictions clipped to the 1-5 scale; a pair whose user or movie
   the training data lacks gets the training mean (counted as ``cold``).
2. ``ranking``: one time split: train on the ratings before the timestamp that leaves
   ``train_share`` of them before it, test on the later ones; a test rating of at least
   ``relevant_rating`` is relevant. Precision, recall, NDCG and MAP at 10, over every
   user with a relevant test rating and over those of them who also rated before the
   cutoff (on ML-100K, two users in three of the test period are new: every list maker
   can only give them the popular list).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from pyspark.ml.recommendation import ALS
from pyspark.sql import SparkSession

from streaming.errors import StreamingError
from streaming.history import RatingHistory
from streaming.lists import fold_in_users, lists_for
from streaming.metrics import RankingFigures, mae, rank_figures, rmse
from streaming.model import ModelVersion, train_model
from streaming.settings import ModelSettings
from streaming.topn import ItemIndex, top_k

__all__ = [
    "FoldFigures",
    "RankingReport",
    "RatingReport",
    "load_split",
    "ranking_protocol",
    "rating_protocol",
]

CUTOFF = 10
SCALE = (1.0, 5.0)
_COLUMNS = ["user_id", "movie_id", "rating", "timestamp"]


class EvaluationInputError(StreamingError):
    """The evaluation data is missing or not in the expected layout."""


def load_split(path: Path) -> pd.DataFrame:
    """One ML-100K ratings file (``u.data``, ``uN.base``, ``uN.test``): tab-separated."""
    if not path.is_file():
        msg = (
            f"{path} not found: point --data at an ML-100K folder holding u.data and the "
            "official splits u1.base/u1.test … u5.base/u5.test"
        )
        raise EvaluationInputError(msg)
    frame = pd.read_csv(path, sep="\t", names=_COLUMNS, dtype="int64")
    frame["rating"] = frame["rating"].astype("float64")
    return frame


def _settings_for_evaluation(settings: ModelSettings) -> ModelSettings:
    return settings.model_copy(update={"holdout_fraction": 0.0})


def _history(frame: pd.DataFrame) -> RatingHistory:
    return RatingHistory.from_arrays(
        frame["user_id"].to_numpy(), frame["movie_id"].to_numpy(),
        frame["rating"].to_numpy(), frame["timestamp"].to_numpy(),
    )  # fmt: skip


def _train(
    spark: SparkSession, train: pd.DataFrame, settings: ModelSettings
) -> tuple[ModelVersion, RatingHistory]:
    history = _history(train)
    frame = spark.createDataFrame(history.frame()).cache()
    try:
        model = train_model(frame, history, _settings_for_evaluation(settings),
                            version=1, batch_id=0, reason="evaluation")  # fmt: skip
    finally:
        frame.unpersist()
    return model, history


def _spark_default(spark: SparkSession, train: pd.DataFrame) -> tuple[ItemIndex, ItemIndex]:
    """Spark's ALS with its defaults: (users as an index of factors, items)."""
    frame = spark.createDataFrame(train[["user_id", "movie_id", "rating"]])
    model = ALS(userCol="user_id", itemCol="movie_id", ratingCol="rating").fit(frame)
    users = pd.DataFrame(model.userFactors.toPandas())
    items = pd.DataFrame(model.itemFactors.toPandas())
    return (
        ItemIndex(users["id"].to_numpy(), np.vstack(users["features"].to_numpy())),
        ItemIndex(items["id"].to_numpy(), np.vstack(items["features"].to_numpy())),
    )


def _predict(
    users: ItemIndex, items: ItemIndex, test: pd.DataFrame, fallback: float
) -> tuple[npt.NDArray[np.float64], int]:
    user_rows, known_user = users.lookup(test["user_id"].to_numpy())
    item_rows, known_item = items.lookup(test["movie_id"].to_numpy())
    both = known_user & known_item
    predicted = np.full(len(test), fallback)
    predicted[both] = np.einsum(
        "ij,ij->i", users.factors[user_rows[both]], items.factors[item_rows[both]]
    )
    return np.clip(predicted, *SCALE), int((~both).sum())


@dataclass(frozen=True)
class FoldFigures:
    fold: str
    rmse: float
    mae: float
    pairs: int
    cold: int


@dataclass
class RatingReport:
    """Per fold and mean/std of RMSE and MAE, per model."""

    folds: dict[str, list[FoldFigures]] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, rows in self.folds.items():
            errors = np.array([row.rmse for row in rows])
            absolute = np.array([row.mae for row in rows])
            out[name] = {
                "rmse_mean": round(float(errors.mean()), 4),
                "rmse_std": round(float(errors.std()), 4),
                "mae_mean": round(float(absolute.mean()), 4),
                "mae_std": round(float(absolute.std()), 4),
            }
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "protocol": "rating",
            "summary": self.summary(),
            "folds": {name: [asdict(r) for r in rows] for name, rows in self.folds.items()},
        }


def rating_protocol(
    spark: SparkSession, folder: Path, settings: ModelSettings, folds: int = 5
) -> RatingReport:
    """RMSE/MAE of the configured model and of Spark's default ALS on u1..u``folds``."""
    report = RatingReport({"recstream": [], "spark-default": []})
    for number in range(1, folds + 1):
        train = load_split(folder / f"u{number}.base")
        test = load_split(folder / f"u{number}.test")
        mean = float(train["rating"].mean())
        model, history = _train(spark, train, settings)
        test_users = np.unique(test["user_id"].to_numpy())
        factors, personal = fold_in_users(history.of_users(test_users),
                                          model.fold_in(settings))  # fmt: skip
        users = ItemIndex(test_users[personal], factors[personal])
        for name, (user_index, items) in (
            ("recstream", (users, model.items)),
            ("spark-default", _spark_default(spark, train)),
        ):
            predicted, cold = _predict(user_index, items, test, mean)
            actual = test["rating"].to_numpy()
            report.folds[name].append(
                FoldFigures(f"u{number}", round(rmse(predicted, actual), 6),
                            round(mae(predicted, actual), 6), len(test), cold)
            )  # fmt: skip
    return report


@dataclass
class RankingReport:
    """Ranking figures at 10 on one time split, per list maker."""

    cutoff_timestamp: int
    train_ratings: int
    test_ratings: int
    relevant_rating: float
    figures: dict[str, RankingFigures]
    known_figures: dict[str, RankingFigures]  # users with ratings before the cutoff
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "protocol": "ranking",
            **{k: v for k, v in asdict(self).items() if not k.endswith("figures")},
            "figures": {name: asdict(f) for name, f in self.figures.items()},
            "known_user_figures": {name: asdict(f) for name, f in self.known_figures.items()},
        }


def time_split(ratings: pd.DataFrame, train_share: float) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(train, test, cutoff): train holds the ratings strictly before the cutoff."""
    if not 0 < train_share < 1:
        msg = f"train_share must be between 0 and 1, got {train_share}"
        raise ValueError(msg)
    stamps = np.sort(ratings["timestamp"].to_numpy())
    cutoff = int(stamps[int(len(stamps) * train_share)])
    before = ratings["timestamp"] < cutoff
    return ratings[before], ratings[~before], cutoff


def ranking_protocol(
    spark: SparkSession,
    ratings: pd.DataFrame,
    settings: ModelSettings,
    *,
    train_share: float = 0.8,
) -> RankingReport:
    """P/R/NDCG/MAP at 10 of recstream's lists, Spark's default ALS and popularity."""
    began = time.perf_counter()
    train, test, cutoff = time_split(ratings, train_share)
    relevant = test[test["rating"] >= settings.relevant_rating]
    wanted = relevant.groupby("user_id")["movie_id"].apply(lambda m: set(m.tolist()))
    targets = wanted.index.to_numpy()
    sets = [wanted[user] for user in targets.tolist()]
    model, history = _train(spark, train, settings)
    seen = history.of_users(targets)
    ours = lists_for(seen, model.fold_in(settings), CUTOFF)
    popular_ids = [movie for movie, _ in model.popular]
    rated = [set(seen.of(position)[0].tolist()) for position in range(len(targets))]

    def popular_for(position: int) -> list[int]:
        return [m for m in popular_ids if m not in rated[position]][:CUTOFF]

    recstream_lists = [
        ours.movies[p].tolist() if ours.personal[p] else popular_ids[:CUTOFF]
        for p in range(len(targets))
    ]
    users, items = _spark_default(spark, train)
    rows, known = users.lookup(targets)
    factors = np.where(known[:, None], users.factors[rows], 0.0)
    excluded = [items.rows(seen.of(position)[0]) for position in range(len(targets))]
    spark_lists, _ = top_k(factors, items, excluded, CUTOFF)
    default_lists = [
        spark_lists[p].tolist() if known[p] else popular_ids[:CUTOFF] for p in range(len(targets))
    ]
    makers = {
        "recstream": recstream_lists,
        "spark-default": default_lists,
        "popular": [popular_for(p) for p in range(len(targets))],
    }
    known_users = [p for p in range(len(targets)) if rated[p]]
    figures = {name: rank_figures(lists, sets, CUTOFF) for name, lists in makers.items()}
    known_figures = {
        name: rank_figures([lists[p] for p in known_users], [sets[p] for p in known_users], CUTOFF)
        for name, lists in makers.items()
    }
    return RankingReport(
        cutoff_timestamp=cutoff,
        train_ratings=len(train),
        test_ratings=len(test),
        relevant_rating=settings.relevant_rating,
        figures=figures,
        known_figures=known_figures,
        seconds=round(time.perf_counter() - began, 1),
    )
