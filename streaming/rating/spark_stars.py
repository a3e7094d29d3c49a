"""Stars at scale: Spark's explicit ALS, behind the rating model's interface.

The Bayesian factorization machine (``streaming.rating.fm``) samples in one process on
the driver's host, from ratings loaded there: its time and memory grow with the store.
Past ``rating_spark_above`` ratings a version's stars come from this model instead,
fitted and scored by Spark where the ratings are:

- a rating is ``μ + b(movie) + w(user) + v(user) · q(movie)``;
- ``μ``, the movie offsets ``b`` and then the users' offsets (each shrunk towards 0 by
  ``rating_spark_bias_shrink`` pseudo-ratings) are aggregates over the ratings;
- ``q`` are the item factors of Spark's explicit ALS fitted on what the offsets leave;
- a user's ``(w, v)`` are solved at publication from their ratings now, as the
  factorization machine's are: a ridge regression on the movies' ``(1, q)`` whose
  penalties are estimated from the fit (empirical Bayes): the spread of the fitted users'
  factors and offsets against the residual noise.

So it is a ``RatingModel`` with one draw and no "rated this movie" features: the
executors' lists, the saved versions and the fold-in use it unchanged. Only the movies'
terms reach the driver (movies × rank floats). Its held-out RMSE is scored on the
executors too (``held_out_rmse``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.ml.recommendation import ALS
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from streaming.ingest.history import compressed_rows, whole_user_frames
from streaming.rating.fm import RatingModel
from streaming.settings import ModelSettings

__all__ = ["fit_spark_stars", "held_out_rmse"]

_FLOOR = 1e-6  # keeps an estimated variance (and so a penalty) finite
_CHECK_SHARE = 0.1  # of the training ratings, scored to choose the regularisation
_log = logging.getLogger(__name__)


def fit_spark_stars(
    training: DataFrame, settings: ModelSettings, blocks: int | None = None
) -> RatingModel:
    """The stars' model fitted by Spark on ``training`` (user_id, movie_id, rating).

    ``blocks`` splits the ratings and ALS into that many partitions and blocks (None:
    Spark's defaults), as for the lists' ALS. With more than one ``rating_spark_regs``,
    the regularisation is chosen on the training ratings themselves (``_choose_reg``):
    the best one differs by an order of magnitude between data sets.

    Raises:
        ValueError: ``training`` holds no rating.
    """
    rated = training.select("user_id", "movie_id", F.col("rating").cast("double"))
    if blocks is not None:
        rated = rated.repartition(blocks)
    rated = rated.cache()
    try:
        regs = settings.rating_spark_regs
        reg = regs[0] if len(regs) == 1 else _choose_reg(rated, settings, blocks)
        return _fit(rated, settings, reg, blocks)
    finally:
        rated.unpersist()


def _choose_reg(rated: DataFrame, settings: ModelSettings, blocks: int | None) -> float:
    """The ``rating_spark_regs`` candidate with the lowest RMSE on a tenth of ``rated``.

    Each candidate is fitted on the other nine tenths (a seeded random split) and scored
    as the held-out ratings are (``held_out_rmse``).
    """
    inner, check = rated.randomSplit([1.0 - _CHECK_SHARE, _CHECK_SHARE], seed=settings.seed)
    inner = inner.cache()
    regs = settings.rating_spark_regs
    partitions = blocks or rated.sparkSession.sparkContext.defaultParallelism
    scores: dict[float, float] = {}
    try:
        for reg in regs:
            error, _ = held_out_rmse(_fit(inner, settings, reg, blocks), inner, check, partitions)
            if error is not None:
                scores[reg] = error
    except ValueError:  # a split with no rating on one side: too few to choose on
        scores.clear()
    finally:
        inner.unpersist()
    chosen = min(scores, key=scores.__getitem__) if scores else regs[len(regs) // 2]
    _log.info("stars' regParam %g chosen on a tenth of the training ratings (RMSE %s)", chosen,
              ", ".join(f"{reg:g}: {error:.4f}" for reg, error in scores.items()))  # fmt: skip
    return chosen


def _fit(rated: DataFrame, settings: ModelSettings, reg: float, blocks: int | None) -> RatingModel:
    """``fit_spark_stars`` with regParam ``reg`` on ratings already selected and cached."""
    residuals: DataFrame | None = None
    try:
        counted = rated.agg(F.avg("rating"), F.count(F.lit(1))).first()
        if counted is None or not counted[1]:
            msg = "the stars' model needs at least one rating to fit"
            raise ValueError(msg)
        mean = float(counted[0])
        offsets = rated.groupBy("movie_id").agg(
            ((F.sum("rating") - F.count(F.lit(1)) * F.lit(mean))
             / (F.count(F.lit(1)) + F.lit(settings.rating_spark_bias_shrink))).alias("offset")
        )  # fmt: skip
        left = rated.join(F.broadcast(offsets), "movie_id").withColumn(
            "left", F.col("rating") - F.lit(mean) - F.col("offset")
        )
        users = left.groupBy("user_id").agg(
            (F.sum("left") / (F.count(F.lit(1)) + F.lit(settings.rating_spark_bias_shrink))).alias(
                "user_offset"
            )
        )
        residuals = (
            left.join(users, "user_id")
            .withColumn("residual", F.col("left") - F.col("user_offset"))
            .cache()
        )
        als = ALS(
            rank=settings.rating_rank,
            maxIter=settings.rating_spark_iter,
            regParam=reg,
            implicitPrefs=False,
            seed=settings.seed,
            userCol="user_id",
            itemCol="movie_id",
            ratingCol="residual",
            checkpointInterval=5,
        )
        if blocks is not None:
            als = als.setNumUserBlocks(blocks).setNumItemBlocks(blocks)
        fitted = als.fit(residuals)
        movies = fitted.itemFactors.join(offsets, F.col("id") == F.col("movie_id")).collect()
        noise, offset_spread = _noise_and_offsets(fitted.transform(residuals))
        factor_spread = _second_moments(fitted.userFactors, settings.rating_rank)
        fitted.itemFactors.unpersist()
        fitted.userFactors.unpersist()
    finally:
        if residuals is not None:
            residuals.unpersist()
    movies.sort(key=lambda row: int(row["movie_id"]))
    rank = settings.rating_rank
    factors = np.array([row["features"] for row in movies], dtype=np.float64).reshape(-1, rank)
    bias = mean + np.array([row["offset"] for row in movies], dtype=np.float64)
    count = len(movies)
    return RatingModel(
        movie_ids=np.array([row["movie_id"] for row in movies], dtype=np.int64),
        rated_factors=np.zeros((1, count, rank)),
        rated_weights=np.zeros((1, count)),
        movie_factors=factors[None],
        movie_bias=bias[None],
        prior_mean=np.zeros((1, rank + 1)),
        prior_precision=(1.0 / np.maximum(np.r_[offset_spread, factor_spread], _FLOOR))[None],
        noise_precision=np.array([1.0 / max(noise, _FLOOR)]),
    )


def _noise_and_offsets(scored: DataFrame) -> tuple[float, float]:
    """(residual variance, variance of the users' offsets) after ALS's prediction.

    A user's offset is their fitted one plus their mean residual left by ALS.
    """
    left = scored.select(
        "user_id", "user_offset", (F.col("residual") - F.col("prediction")).alias("left")
    )
    noise = left.agg(F.avg(F.col("left") * F.col("left"))).first()
    users = left.groupBy("user_id").agg((F.first("user_offset") + F.avg("left")).alias("offset"))
    spread = users.agg(F.var_pop("offset")).first()
    return float((noise or [0.0])[0] or 0.0), float((spread or [0.0])[0] or 0.0)


def _second_moments(user_factors: DataFrame, rank: int) -> np.ndarray:
    """Mean square of each factor over the fitted users: a user factor's prior variance."""
    squares = (
        user_factors.select(F.posexplode("features").alias("position", "value"))
        .groupBy("position")
        .agg(F.avg(F.col("value") * F.col("value")).alias("square"))
        .collect()
    )
    moments = np.zeros(rank)
    for row in squares:
        moments[int(row["position"])] = float(row["square"])
    return moments


def held_out_rmse(
    stars: RatingModel, training: DataFrame, held_out: DataFrame, partitions: int
) -> tuple[float | None, int]:
    """(RMSE, pairs) of ``stars`` on ``held_out``, each user folded in from ``training``.

    As ``streaming.rating.fitter.held_out_stars`` + ``stars_rmse``, on the executors:
    both frames (user_id, movie_id, rating) are split by user into ``partitions``, and
    only the squared errors' sums come back.
    """
    columns = ("user_id", "movie_id", F.col("rating").cast("double").alias("rating"))
    tagged = training.select(*columns, F.lit(False).alias("held")).unionByName(
        held_out.select(*columns, F.lit(True).alias("held"))
    )
    shared = tagged.sparkSession.sparkContext.broadcast(stars)

    def score(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = shared.value
        squares, pairs = 0.0, 0
        for chunk in whole_user_frames(frames):
            held = chunk["held"].to_numpy(dtype=bool)
            asked = chunk[held]
            if asked.empty:
                continue
            asked_users = asked["user_id"].to_numpy(dtype=np.int64)
            users, positions = np.unique(asked_users, return_inverse=True)
            given = chunk[~held]
            known = compressed_rows(given["user_id"].to_numpy(), given["movie_id"].to_numpy(),
                                    given["rating"].to_numpy()).for_users(users)  # fmt: skip
            predicted = model.predict(known, positions, asked["movie_id"].to_numpy())
            answered = ~np.isnan(predicted)
            errors = predicted[answered] - asked["rating"].to_numpy()[answered]
            squares += float(np.sum(errors**2))
            pairs += int(answered.sum())
        yield pd.DataFrame({"squares": [squares], "pairs": [pairs]})

    try:
        total = (
            tagged.repartition(max(1, partitions), "user_id")
            .sortWithinPartitions("user_id")
            .mapInPandas(score, "squares double, pairs long")
            .agg(F.sum("squares"), F.sum("pairs"))
            .first()
        )
    finally:
        shared.unpersist()
    if total is None or not total[1]:
        return None, 0
    return float(np.sqrt(total[0] / total[1])), int(total[1])
