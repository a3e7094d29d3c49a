"""What a retrain needs to know of the stored ratings, computed where they are: in Spark.

A build fits ALS on the store's ratings in Spark; the rest of it (the holdout cutoff,
the popular list and the popularity prior, the counts in the version's metadata, the
evaluation on the held-out ratings) used to read every stored rating into the driver.
``summarise`` reads them with Spark instead, and brings to the driver only what does not
grow with the number of ratings: per-movie counts, and the ratings of at most
``evaluation_users`` held-out users (a seeded sample; every held-out user when there are
fewer), which the evaluation ranks. A store of at most ``IN_DRIVER_UP_TO`` ratings is
read into the driver whole and summarised there alike (fewer Spark jobs for a small
build to wait for beside a busy stream).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F

from streaming.model.holdout import holdout_cutoff, ordered_counts, popularity

__all__ = [
    "IN_DRIVER_UP_TO",
    "StoreSummary",
    "kth_smallest",
    "sample_users",
    "summarise",
    "summarise_frame",
]

_ACCURACY = 10_000  # percentile_approx's accuracy: ranks within n / 10,000 of the true one
IN_DRIVER_UP_TO = 200_000  # ratings a build summarises in the driver (6.4 MB of columns)
_KINDS = {"user_id": np.int64, "movie_id": np.int64, "rating": np.float64, "timestamp": np.int64}


@dataclass(frozen=True)
class StoreSummary:
    """The stored ratings as a build sees them from the driver.

    ``popular`` weighs each rating by the popularity half-life (the version's popular
    list and prior); ``train_popular`` counts the training ratings alike (the popular
    baseline of the evaluation). ``train`` and ``held_out_sample`` are the ratings of the
    evaluation's users only (``evaluated_users``), before and from the cutoff.
    """

    ratings: int
    users: int
    movies: int
    cutoff: int | None
    held_out: int
    popular: pd.Series
    train_popular: pd.Series
    evaluated_users: npt.NDArray[np.int64]
    train: pd.DataFrame
    held_out_sample: pd.DataFrame


def _only_row(frame: DataFrame) -> Row:
    """The one row of an aggregation (Spark always gives one; None would be a bug)."""
    row = frame.first()
    if row is None:
        msg = "an aggregation gave no row"
        raise RuntimeError(msg)
    return row


def kth_smallest(frame: DataFrame, column: str, k: int, rows: int) -> int:
    """The ``k``-th smallest value (from 0) of an integer ``column`` of ``rows`` rows, exactly.

    Two approximate percentiles bracket it (their ranks are off by at most
    ``rows / 10,000``), the rows below the bracket are counted, and the values inside it
    (about ``4 · rows / 10,000`` of them) are sorted in the driver; the bracket widens
    until it holds rank ``k``. Nothing is sorted in full.
    """
    if not 0 <= k < rows:
        msg = f"rank {k} is outside the {rows} values of {column!r}"
        raise ValueError(msg)
    margin = 2.0 / _ACCURACY
    while True:
        low_share = max(0.0, (k + 1) / rows - margin)
        high_share = min(1.0, (k + 1) / rows + margin)
        low, high = _only_row(
            frame.select(F.percentile_approx(column, [low_share, high_share], _ACCURACY))
        )[0]
        if low_share == 0.0:
            low = _only_row(frame.select(F.min(column)))[0]
        if high_share == 1.0:
            high = _only_row(frame.select(F.max(column)))[0]
        below = frame.where(F.col(column) < low).count()
        inside = sorted(
            int(row[0])
            for row in frame.where(F.col(column).between(low, high)).select(column).collect()
        )
        if below <= k < below + len(inside):
            return inside[k - below]
        margin *= 4  # the sketch missed (it should not): a wider bracket holds it


def sample_users(users: npt.ArrayLike, at_most: int, seed: int) -> npt.NDArray[np.int64]:
    """``users`` (distinct) sorted, or ``at_most`` of them drawn with ``seed`` when more."""
    pool = np.unique(np.asarray(users, dtype=np.int64))
    if len(pool) <= at_most:
        return pool
    return np.sort(np.random.default_rng(seed).choice(pool, size=at_most, replace=False))


def _split_at(theirs: pd.DataFrame, cutoff: int | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The evaluated users' ratings by (user, time, movie), before and from ``cutoff``."""
    ordered = theirs.sort_values(["user_id", "timestamp", "movie_id"], kind="stable",
                                 ignore_index=True)  # fmt: skip
    if cutoff is None:
        return ordered, ordered.iloc[:0]
    before = (ordered["timestamp"] < cutoff).to_numpy()
    return ordered[before].reset_index(drop=True), ordered[~before].reset_index(drop=True)


def summarise_frame(
    frame: pd.DataFrame, *, holdout_fraction: float, half_life_days: float,
    evaluation_users: int, seed: int,
) -> StoreSummary:  # fmt: skip
    """``summarise`` of ratings already in the driver (a small store)."""
    cutoff = holdout_cutoff(frame["timestamp"].to_numpy(), holdout_fraction)
    before = np.ones(len(frame), dtype=np.bool_)
    if cutoff is not None:
        before = (frame["timestamp"] < cutoff).to_numpy()
    chosen = sample_users(frame.loc[~before, "user_id"].to_numpy(), evaluation_users, seed)
    train, held_out = _split_at(frame[frame["user_id"].isin(chosen)], cutoff)
    return StoreSummary(
        ratings=len(frame),
        users=int(frame["user_id"].nunique()),
        movies=int(frame["movie_id"].nunique()),
        cutoff=cutoff,
        held_out=int((~before).sum()),
        popular=popularity(frame, half_life_days),
        train_popular=popularity(frame[before]),
        evaluated_users=chosen,
        train=train,
        held_out_sample=held_out,
    )


def summarise(
    ratings: DataFrame, *, holdout_fraction: float, half_life_days: float,
    evaluation_users: int, seed: int, in_driver_up_to: int = IN_DRIVER_UP_TO,
) -> StoreSummary:  # fmt: skip
    """The summary of ``ratings`` (user_id, movie_id, rating, timestamp): see the module.

    The cutoff is ``holdout_cutoff``'s (the newest ``holdout_fraction`` held out; None
    when nothing can be), the popularity ``popularity``'s, on the same ratings.

    A store of at most ``in_driver_up_to`` ratings is read into the driver in one Spark
    job and summarised there (``summarise_frame``): the same figures, without the half
    dozen Spark jobs of the distributed path, which a small build beside a busy stream
    waits for (the first version of a demo took 16 s instead of a few).
    """
    head = pd.DataFrame(ratings.select(*_KINDS).limit(in_driver_up_to + 1).toPandas())
    if len(head) <= in_driver_up_to:
        return summarise_frame(head.astype(_KINDS), holdout_fraction=holdout_fraction,
                               half_life_days=half_life_days, evaluation_users=evaluation_users,
                               seed=seed)  # fmt: skip
    del head
    totals = _only_row(
        ratings.agg(
            F.count(F.lit(1)).alias("n"),
            F.countDistinct("user_id").alias("users"),
            F.countDistinct("movie_id").alias("movies"),
            F.min("timestamp").alias("first"),
            F.max("timestamp").alias("last"),
        )
    )
    count = int(totals["n"])
    cutoff = None
    if holdout_fraction > 0 and count >= 2:
        cutoff = kth_smallest(ratings, "timestamp", int(count * (1 - holdout_fraction)), count)
        if cutoff <= totals["first"]:
            cutoff = None
    weight = F.lit(1.0)
    if half_life_days > 0 and count:
        age_days = (F.lit(int(totals["last"])) - F.col("timestamp")) / (86_400.0 * half_life_days)
        weight = F.pow(F.lit(2.0), -age_days)
    training = F.lit(True) if cutoff is None else F.col("timestamp") < F.lit(cutoff)
    per_movie = pd.DataFrame(
        ratings.groupBy("movie_id")
        .agg(F.sum(weight).alias("popular"), F.sum(training.cast("long")).alias("trained"))
        .toPandas()
    )
    movie_ids = per_movie["movie_id"].to_numpy(dtype=np.int64)
    popular = ordered_counts(movie_ids, per_movie["popular"].to_numpy(dtype=np.float64))
    trained = per_movie["trained"].to_numpy(dtype=np.int64)
    train_popular = ordered_counts(movie_ids[trained > 0], trained[trained > 0])
    if cutoff is None:
        empty = pd.DataFrame({name: pd.Series(dtype=kind) for name, kind in _KINDS.items()})
        return StoreSummary(count, int(totals["users"]), int(totals["movies"]), None, 0,
                            popular, train_popular, np.zeros(0, dtype=np.int64), empty,
                            empty)  # fmt: skip
    held = ratings.where(F.col("timestamp") >= F.lit(cutoff))
    candidates = [int(row[0]) for row in held.select("user_id").distinct().collect()]
    chosen = sample_users(candidates, evaluation_users, seed)
    wanted = ratings.sparkSession.createDataFrame(pd.DataFrame({"user_id": chosen}), "user_id long")
    theirs = pd.DataFrame(ratings.join(F.broadcast(wanted), "user_id").select(*_KINDS).toPandas())
    train, held_out = _split_at(theirs.astype(_KINDS), cutoff)
    return StoreSummary(
        ratings=count,
        users=int(totals["users"]),
        movies=int(totals["movies"]),
        cutoff=cutoff,
        held_out=count - int(trained.sum()),
        popular=popular,
        train_popular=train_popular,
        evaluated_users=chosen,
        train=train,
        held_out_sample=held_out,
    )
