"""Offline evaluation protocols of recstream's lists (``python -m streaming.evaluation``).

Every protocol measures what the streaming job would publish: a model trained by
``streaming.model.versions.train_model`` (the retrain code, with no held-out share), each user's
factor folded in from their own ratings (the ALS user step the job runs), blended with
the short-term transitions of the ratings so far (``streaming.model.blend``), lists of
movies they have not rated, ties by ascending movie id. Users the model cannot fold in
get the model's popular list, as serving gives them (recency-weighted when
``popularity_half_life_days`` is set). Beside it:

- ``spark-default``: ``pyspark.ml.recommendation.ALS()`` with every setting left at its
  default, its own user factors, the same exclusion of rated movies;
- ``popular``: the most-rated movies of the training data (all-time counts) the user
  has not rated.

Protocols:

1. ``rating``: RMSE and MAE on ML-100K's official splits u1..u5 (train ``uN.base``,
   test ``uN.test``), predictions clipped to the 1-5 scale; a pair whose user or movie
   the training data lacks gets the training mean (counted as ``cold``). ``recstream``
   is the rating model behind the served stars (``streaming.rating.fm``, each test user
   folded in from their training ratings); ``als-explicit`` is the explicit-feedback
   twin of the list model (same ALS settings, ratings as ratings); ``stars-at-scale``
   the model the stars come from past ``rating_spark_above`` ratings
   (``streaming.rating.spark_stars``); ``biases`` the mean + movie + user offsets.
2. ``ranking``: one time split: train on the ratings before the timestamp that leaves
   ``train_share`` of them before it, test on the later ones; a test rating of at least
   ``relevant_rating`` is relevant. Precision, recall, NDCG and MAP at 10, over every
   user with a relevant test rating and over those of them who also rated before the
   cutoff (on ML-100K, two users in three of the test period are new: every list maker
   can only give them a popular list).
3. ``prequential``: test-then-learn over the whole feed in timestamp order, in
   ``streaming.evaluation.prequential`` beside the popular, recency-weighted popular and
   transition lists.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from pyspark.ml.recommendation import ALS
from pyspark.sql import SparkSession

from streaming.errors import StreamingError
from streaming.ingest.history import RatingHistory
from streaming.model.blend import ShortTerm, transition_counts
from streaming.model.holdout import CUTOFF, popularity
from streaming.model.lists import fold_in_users
from streaming.model.metrics import RankingFigures, mae, rank_figures, rmse
from streaming.model.topn import ItemIndex, top_k
from streaming.model.versions import ModelVersion, train_model
from streaming.rating.fitter import held_out_stars, rating_model
from streaming.rating.fm import SCALE
from streaming.rating.spark_stars import fit_spark_stars
from streaming.settings import ModelSettings

__all__ = [
    "FoldFigures",
    "RankingReport",
    "RatingReport",
    "bias_baseline",
    "cold_start_ceiling",
    "fit_for_evaluation",
    "load_split",
    "ranking_protocol",
    "rating_folds",
    "rating_protocol",
    "search_grid",
]

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
    """No held-out share, and no rating model: the lists these protocols rank ignore it."""
    return settings.model_copy(update={"holdout_fraction": 0.0, "rating_samples": 0})


def _train(
    spark: SparkSession, train: pd.DataFrame, settings: ModelSettings
) -> tuple[ModelVersion, RatingHistory]:
    history = RatingHistory.from_frame(train)
    frame = spark.createDataFrame(history.frame()).cache()
    try:
        model = train_model(frame, _settings_for_evaluation(settings), version=1, batch_id=0,
                            reason="evaluation")  # fmt: skip
    finally:
        frame.unpersist()
    return model, history


def fit_for_evaluation(
    spark: SparkSession, settings: ModelSettings
) -> Callable[[pd.DataFrame], ModelVersion]:
    """The job's retrain as a function of the ratings so far (for the prequential replay)."""

    def fit(ratings: pd.DataFrame) -> ModelVersion:
        return _train(spark, ratings, settings)[0]

    return fit


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
    users: ItemIndex,
    items: ItemIndex,
    test: pd.DataFrame,
    fallback: float,
    scale: tuple[float, float] = SCALE,
) -> tuple[npt.NDArray[np.float64], int]:
    user_rows, known_user = users.lookup(test["user_id"].to_numpy())
    item_rows, known_item = items.lookup(test["movie_id"].to_numpy())
    both = known_user & known_item
    predicted = np.full(len(test), fallback)
    predicted[both] = np.einsum(
        "ij,ij->i", users.factors[user_rows[both]], items.factors[item_rows[both]]
    )
    return np.clip(predicted, *scale), int((~both).sum())


def bias_baseline(
    train: pd.DataFrame,
    test: pd.DataFrame,
    scale: tuple[float, float] = SCALE,
    shrink: tuple[float, float] = (25.0, 10.0),
) -> npt.NDArray[np.float64]:
    """The strongest simple rating baseline: mean + movie offset + user offset.

    Offsets are damped means of what is left, movie first (``shrink`` pseudo-ratings
    each, the textbook 25 and 10, untuned); an unknown user or movie has offset 0.
    """
    mean = float(train["rating"].mean())
    left = train["rating"] - mean
    movie = left.groupby(train["movie_id"]).sum() / (train.groupby("movie_id").size() + shrink[0])
    left = left - train["movie_id"].map(movie)
    user = left.groupby(train["user_id"]).sum() / (train.groupby("user_id").size() + shrink[1])
    predicted = (
        mean
        + test["movie_id"].map(movie).fillna(0.0).to_numpy()
        + test["user_id"].map(user).fillna(0.0).to_numpy()
    )
    return np.asarray(np.clip(predicted, *scale), dtype=np.float64)


@dataclass(frozen=True)
class FoldFigures:
    """One model's errors on one fold: RMSE, MAE, pairs scored, and cold pairs."""

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
        """Mean and standard deviation of RMSE and MAE over the folds, per model."""
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
        """The report as JSON-ready values: the summary and every fold."""
        return {
            "protocol": "rating",
            "summary": self.summary(),
            "folds": {name: [asdict(r) for r in rows] for name, rows in self.folds.items()},
        }


def rating_folds(
    ratings: pd.DataFrame, folder: Path | None = None, folds: int = 5, seed: int = 42
) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """(name, train, test) of each fold.

    The official ``uN.base``/``uN.test`` splits when ``folder`` holds them (ML-100K), else a
    seeded split of ``ratings`` into ``folds`` equal parts, each the test set once.
    """
    if folder is not None and (folder / "u1.base").is_file():
        return [
            (f"u{n}", load_split(folder / f"u{n}.base"), load_split(folder / f"u{n}.test"))
            for n in range(1, folds + 1)
        ]
    if folds < 2 or len(ratings) < folds:
        msg = f"a {folds}-fold split needs at least {max(folds, 2)} ratings, got {len(ratings)}"
        raise EvaluationInputError(msg)
    part = np.random.default_rng(seed).permutation(len(ratings)) % folds
    return [
        (f"fold{n + 1}", ratings[part != n].reset_index(drop=True),
         ratings[part == n].reset_index(drop=True))
        for n in range(folds)
    ]  # fmt: skip


def rating_protocol(
    spark: SparkSession,
    folds: list[tuple[str, pd.DataFrame, pd.DataFrame]],
    settings: ModelSettings,
) -> RatingReport:
    """RMSE/MAE of the rating model, the explicit ALS twin and Spark's default ALS.

    The lists' implicit-feedback ALS scores preferences, not ratings: the stars come
    from the rating model, so that is ``recstream`` here (left out when
    ``rating_samples`` is 0). Its explicit twin (the same ALS settings with
    ``implicit_prefs`` off) is measured beside it. ``folds`` come from ``rating_folds``.
    """
    twin = settings.model_copy(update={"implicit_prefs": False, "rating_samples": 0})
    names = ["recstream", "stars-at-scale"] if settings.rating_samples else []
    names += ["als-explicit", "spark-default", "biases"]
    report = RatingReport({name: [] for name in names})
    scale = (
        float(min(fold[1]["rating"].min() for fold in folds)),
        float(max(fold[1]["rating"].max() for fold in folds)),
    )
    for fold_name, train, test in folds:
        mean = float(train["rating"].mean())
        actual = test["rating"].to_numpy()
        model, history = _train(spark, train, twin)
        test_users = np.unique(test["user_id"].to_numpy())
        factors, personal = fold_in_users(history.of_users(test_users),
                                          model.fold_in(twin))  # fmt: skip
        users = ItemIndex(test_users[personal], factors[personal])
        predictions = {
            name: _predict(user_index, items, test, mean, scale)
            for name, (user_index, items) in (
                ("als-explicit", (users, model.items)),
                ("spark-default", _spark_default(spark, train)),
            )
        }
        predictions["biases"] = (bias_baseline(train, test, scale), 0)
        if settings.rating_samples:
            for name, stars in (
                ("recstream", rating_model(train, settings)),
                ("stars-at-scale", fit_spark_stars(spark.createDataFrame(train), settings)),
            ):
                assert stars is not None  # noqa: S101 - rating_samples is above 0
                predicted = held_out_stars(stars, train, test)
                unknown = np.isnan(predicted)
                predictions[name] = (np.where(unknown, mean, predicted), int(unknown.sum()))
        for name, (predicted, cold) in predictions.items():
            report.folds[name].append(
                FoldFigures(fold_name, round(rmse(predicted, actual), 6),
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
    ceiling: dict[str, float | int]  # what new users allow at best: ``cold_start_ceiling``
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values: the split, the figures per list maker."""
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
    spark_default: bool = True,
) -> RankingReport:
    """P/R/NDCG/MAP at 10 of recstream's lists, Spark's default ALS and popularity.

    ``spark_default=False`` leaves Spark's default ALS out (one fit less, for searches).
    """
    began = time.perf_counter()
    train, test, cutoff = time_split(ratings, train_share)
    relevant = test[test["rating"] >= settings.relevant_rating]
    wanted = relevant.groupby("user_id")["movie_id"].apply(lambda m: set(m.tolist()))
    targets = wanted.index.to_numpy()
    sets = [wanted[user] for user in targets.tolist()]
    model, history = _train(spark, train, settings)
    seen = history.of_users(targets)
    all_time = popularity(train).index.tolist()  # the baseline: all-time counts
    rated = [set(seen.of(position)[0].tolist()) for position in range(len(targets))]

    def popular_for(position: int) -> list[int]:
        return [m for m in all_time if m not in rated[position]][:CUTOFF]

    counts = transition_counts(settings)  # the short-term part as of the cutoff
    in_order = train.sort_values(["timestamp", "user_id", "movie_id"], kind="stable")
    first = ~in_order.duplicated(["user_id", "movie_id"])
    counts.observe(in_order["user_id"][first], in_order["movie_id"][first])
    short_term = ShortTerm.of(counts, settings)
    makers = {"recstream": model.served_lists(seen, settings, CUTOFF, short_term)}
    if spark_default:
        users, items = _spark_default(spark, train)
        rows, known = users.lookup(targets)
        factors = np.where(known[:, None], users.factors[rows], 0.0)
        excluded = [items.rows(seen.of(position)[0]) for position in range(len(targets))]
        spark_lists, _ = top_k(factors, items, excluded, CUTOFF)
        makers["spark-default"] = [
            spark_lists[p].tolist() if known[p] else all_time[:CUTOFF] for p in range(len(targets))
        ]
    makers["popular"] = [popular_for(p) for p in range(len(targets))]
    known_users = [p for p in range(len(targets)) if rated[p]]
    figures = {name: rank_figures(lists, sets, CUTOFF) for name, lists in makers.items()}
    known_figures = {
        name: rank_figures([lists[p] for p in known_users], [sets[p] for p in known_users], CUTOFF)
        for name, lists in makers.items()
    }
    new_sets = [sets[p] for p in range(len(targets)) if not rated[p]]
    return RankingReport(
        cutoff_timestamp=cutoff,
        train_ratings=len(train),
        test_ratings=len(test),
        relevant_rating=settings.relevant_rating,
        figures=figures,
        known_figures=known_figures,
        ceiling=cold_start_ceiling(new_sets, figures["popular"], known_figures["popular"]),
        seconds=round(time.perf_counter() - began, 1),
    )


def cold_start_ceiling(
    new_sets: list[set[int]], popular: RankingFigures, popular_known: RankingFigures
) -> dict[str, float | int]:
    """How far any list maker can beat popularity in precision@10 here, given new users.

    A user with no rating before the cutoff can only get a list chosen without knowing
    them, and no such list does better, on average over them, than the single best list
    for them all. That list is found here **with the test data** (the ten movies most
    of them found relevant): an upper bound no list maker reaches, not a baseline. From
    it follows the precision the known users would need for the all-user precision to
    reach 1.5× the popular list's.
    """
    counts: dict[int, int] = {}
    for wanted in new_sets:
        for movie in wanted:
            counts[movie] = counts.get(movie, 0) + 1
    best = sorted(counts.values(), reverse=True)[:CUTOFF]
    new, known = len(new_sets), popular_known.users
    best_precision = sum(best) / (CUTOFF * new) if new else 0.0
    needed = (
        (1.5 * popular.precision * (new + known) - best_precision * new) / known if known else 0.0
    )
    return {
        "new_users": new,
        "known_users": known,
        "new_user_best_list_precision": round(best_precision, 6),
        "known_user_precision_needed_for_1_5x": round(needed, 6),
    }


def search_grid(grid: dict[str, list[str]], base: ModelSettings) -> list[ModelSettings]:
    """Every combination of the given values, over ``base``.

    Raises:
        ValueError: a name that is not a model setting, or a value it refuses (the
            message names both).
    """
    from itertools import product

    from pydantic import ValidationError

    unknown = sorted(set(grid) - set(ModelSettings.model_fields))
    if unknown:
        msg = (
            f"not model settings: {', '.join(unknown)}; "
            "see RECSTREAM_MODEL_* in docs/configuration.md"
        )
        raise ValueError(msg)
    names = sorted(grid)
    combos = []
    for values in product(*(grid[name] for name in names)):
        chosen = dict(zip(names, values, strict=True))
        try:
            combos.append(ModelSettings.model_validate({**base.model_dump(), **chosen}))
        except ValidationError as exc:
            problem = exc.errors()[0]
            msg = f"{chosen}: {problem['loc'][0] if problem['loc'] else ''} {problem['msg']}"
            raise ValueError(msg) from exc
    return combos
