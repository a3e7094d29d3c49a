"""Offline evaluation protocols of recstream's lists (``python -m streaming.evaluate``).

Every protocol measures what the streaming job would publish: a model trained by
``streaming.model.train_model`` (the retrain code, with no held-out share), each user's
factor folded in from their own ratings (the ALS user step the job runs), lists of
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
   is the rating model behind the served stars (``streaming.bpmf``, each test user
   folded in from their training ratings); ``als-explicit`` is the explicit-feedback
   twin of the list model (same ALS settings, ratings as ratings).
2. ``ranking``: one time split: train on the ratings before the timestamp that leaves
   ``train_share`` of them before it, test on the later ones; a test rating of at least
   ``relevant_rating`` is relevant. Precision, recall, NDCG and MAP at 10, over every
   user with a relevant test rating and over those of them who also rated before the
   cutoff (on ML-100K, two users in three of the test period are new: every list maker
   can only give them a popular list).
3. ``prequential``: test-then-learn over the whole feed in timestamp order (see
   ``prequential_protocol``): hit rate and NDCG at 10 of the next rating, overall and
   per day of dataset time, beside a popular list updated the same way.
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
from streaming.evaluation import popularity
from streaming.history import RatingHistory
from streaming.lists import fold_in_users
from streaming.metrics import RankingFigures, mae, rank_figures, rmse
from streaming.model import ModelVersion, held_out_stars, rating_model, train_model
from streaming.settings import ModelSettings
from streaming.topn import ItemIndex, top_k

__all__ = [
    "FoldFigures",
    "PrequentialReport",
    "RankingReport",
    "RatingReport",
    "batch_bounds",
    "cold_start_ceiling",
    "load_split",
    "prequential_protocol",
    "ranking_protocol",
    "rating_protocol",
    "search_grid",
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
    """No held-out share, and no rating model: the lists these protocols rank ignore it."""
    return settings.model_copy(update={"holdout_fraction": 0.0, "rating_samples": 0})


def _train(
    spark: SparkSession, train: pd.DataFrame, settings: ModelSettings
) -> tuple[ModelVersion, RatingHistory]:
    history = RatingHistory.from_frame(train)
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
    """RMSE/MAE of the rating model, the explicit ALS twin and Spark's default ALS.

    The lists' implicit-feedback ALS scores preferences, not ratings: the stars come
    from the rating model, so that is ``recstream`` here (left out when
    ``rating_samples`` is 0). Its explicit twin (the same ALS settings with
    ``implicit_prefs`` off) is measured beside it.

    Raises:
        EvaluationInputError: a split file is missing.
    """
    twin = settings.model_copy(update={"implicit_prefs": False, "rating_samples": 0})
    names = ["recstream"] if settings.rating_samples else []
    report = RatingReport({name: [] for name in [*names, "als-explicit", "spark-default"]})
    for number in range(1, folds + 1):
        train = load_split(folder / f"u{number}.base")
        test = load_split(folder / f"u{number}.test")
        mean = float(train["rating"].mean())
        actual = test["rating"].to_numpy()
        model, history = _train(spark, train, twin)
        test_users = np.unique(test["user_id"].to_numpy())
        factors, personal = fold_in_users(history.of_users(test_users),
                                          model.fold_in(twin))  # fmt: skip
        users = ItemIndex(test_users[personal], factors[personal])
        predictions = {
            name: _predict(user_index, items, test, mean)
            for name, (user_index, items) in (
                ("als-explicit", (users, model.items)),
                ("spark-default", _spark_default(spark, train)),
            )
        }
        stars = rating_model(train, settings)
        if stars is not None:
            predicted = held_out_stars(stars, train, test)
            unknown = np.isnan(predicted)
            predictions["recstream"] = (np.where(unknown, mean, predicted), int(unknown.sum()))
        for name, (predicted, cold) in predictions.items():
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
    ceiling: dict[str, float | int]  # what new users allow at best: ``cold_start_ceiling``
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

    makers = {"recstream": model.served_lists(seen, settings, CUTOFF)}
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


@dataclass
class PrequentialReport:
    """Test-then-learn figures of the replay: overall and per day of dataset time."""

    ratings: int
    batching: str
    batches: int
    retrain_every: int
    retrains: int
    hit_rate: dict[str, float]
    ndcg: dict[str, float]
    days: list[dict[str, Any]]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"protocol": "prequential", **asdict(self)}


def _gain(listed: list[int], movie: int) -> float:
    """NDCG@10 of one next rating: 1/log2(rank + 1) when it is in the list, else 0."""
    return 1.0 / float(np.log2(listed.index(movie) + 2)) if movie in listed else 0.0


def batch_bounds(
    stamps: npt.NDArray[np.int64], batch_size: int | None, window_s: float | None
) -> npt.NDArray[np.int64]:
    """Start rows of the micro-batches (plus the end): by count, or by dataset time."""
    if (batch_size is None) == (window_s is None):
        msg = "give exactly one of batch_size (ratings per batch) and window_s (seconds)"
        raise ValueError(msg)
    if batch_size is not None:
        if batch_size < 1:
            msg = f"batch_size must be at least 1, got {batch_size}"
            raise ValueError(msg)
        return np.append(np.arange(0, len(stamps), batch_size), len(stamps))
    if window_s is None or window_s <= 0:
        msg = f"window_s must be > 0, got {window_s}"
        raise ValueError(msg)
    slot = np.floor((stamps - stamps[0]) / window_s).astype(np.int64) if len(stamps) else stamps
    changes = np.flatnonzero(np.diff(slot)) + 1
    return np.concatenate([[0], changes, [len(stamps)]]).astype(np.int64)


def prequential_protocol(
    spark: SparkSession,
    ratings: pd.DataFrame,
    settings: ModelSettings,
    *,
    window_s: float | None = None,
    batch_size: int | None = None,
    retrain_every: int = 10_000,
) -> PrequentialReport:
    """Replay in timestamp order, in micro-batches as the job sees them.

    A micro-batch is every rating of one ``window_s`` of dataset time (the job's trigger
    interval when the feed arrives at its real pace: at 1 s a user's list is refreshed
    between two ratings unless both came in the same second), or ``batch_size`` ratings
    (a job fed faster than real time). Exactly one of the two is given.

    Before a batch updates anything, each of its ratings is checked against the list its
    user had then: recstream's (the current model, the user folded in from every earlier
    rating, rated movies excluded; the model's popular list while the user cannot be
    folded in, or before the first model), and the popular list of every earlier rating
    (the user's rated movies excluded). Then the batch joins the history; a retrain
    follows every ``retrain_every`` ratings, once ``settings.min_ratings`` are in.
    """
    began = time.perf_counter()
    ordered = ratings.sort_values(["timestamp", "user_id", "movie_id"], kind="stable")
    ordered = ordered.reset_index(drop=True)
    user_col = ordered["user_id"].to_numpy(dtype=np.int64)
    movie_col = ordered["movie_id"].to_numpy(dtype=np.int64)
    stamp_col = ordered["timestamp"].to_numpy(dtype=np.int64)
    bounds = batch_bounds(stamp_col, batch_size, window_s)
    history = RatingHistory()
    counts = np.zeros(int(movie_col.max(initial=0)) + 1, dtype=np.int64)
    catalog = np.arange(len(counts))
    model: ModelVersion | None = None
    since_retrain, retrains = 0, 0
    rows: list[tuple[int, float, float, float, float]] = []  # day, hit and gain of both
    for number, (first, last) in enumerate(
        zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
    ):
        users = np.unique(user_col[first:last])
        seen = history.of_users(users)
        popular_order = catalog[np.lexsort((catalog, -counts))]
        current: dict[int, list[int]] = {}
        fallback: dict[int, list[int]] = {}
        served = None if model is None else model.served_lists(seen, settings, CUTOFF)
        for position, user in enumerate(users.tolist()):
            rated = seen.of(position)[0]
            head = popular_order[: CUTOFF + len(rated)]
            head = head[counts[head] > 0]
            fallback[user] = head[~np.isin(head, rated)][:CUTOFF].tolist()
            current[user] = fallback[user] if served is None else served[position]
        for user, movie, stamp in zip(user_col[first:last].tolist(), movie_col[first:last].tolist(),
                                      stamp_col[first:last].tolist(), strict=True):  # fmt: skip
            ours, theirs = current[user], fallback[user]
            rows.append((stamp // 86_400, float(movie in ours), _gain(ours, movie),
                         float(movie in theirs), _gain(theirs, movie)))  # fmt: skip
        batch = ordered.iloc[first:last]
        history.add(batch[_COLUMNS].assign(batch_id=number, offset=np.arange(last - first)))
        np.add.at(counts, movie_col[first:last], 1)
        since_retrain += last - first
        enough = len(history) >= settings.min_ratings
        if enough and (model is None or since_retrain >= retrain_every):
            model, _ = _train(spark, history.frame(), settings)
            since_retrain, retrains = 0, retrains + 1
    table = pd.DataFrame(rows, columns=["day", "hit", "gain", "pop_hit", "pop_gain"])
    days = table.groupby("day").agg(
        ratings=("hit", "size"), hit_rate=("hit", "mean"), ndcg=("gain", "mean"),
        popular_hit_rate=("pop_hit", "mean"), popular_ndcg=("pop_gain", "mean"),
    )  # fmt: skip
    day_rows = [
        {"day": int(day), **{k: (int(v) if k == "ratings" else round(float(v), 6))
                             for k, v in values.items()}}
        for day, values in days.iterrows()
    ]  # fmt: skip
    return PrequentialReport(
        ratings=len(table),
        batching=f"{batch_size:,} ratings" if batch_size else f"{window_s:g} s of dataset time",
        batches=len(bounds) - 1,
        retrain_every=retrain_every,
        retrains=retrains,
        hit_rate={"recstream": round(float(table["hit"].mean()), 6),
                  "popular": round(float(table["pop_hit"].mean()), 6)},
        ndcg={"recstream": round(float(table["gain"].mean()), 6),
              "popular": round(float(table["pop_gain"].mean()), 6)},
        days=day_rows,
        seconds=round(time.perf_counter() - began, 1),
    )  # fmt: skip


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
        msg = f"not model settings: {', '.join(unknown)}; see RECSTREAM_MODEL_* in the README"
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
