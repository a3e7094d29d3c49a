"""How long a retrain holds the stream: the rating model fitted inside it, or beside it.

For each feed (ML-100K when found, an ML-1M-scale synthetic one), measured in one run:

- **inside**: the retrain as with ``RECSTREAM_MODEL_RATING_IN_BACKGROUND=false``: fit ALS
  and the rating model, evaluate, fold in + rank + predict stars + publish every list.
  The micro-batch, and so every fold-in, waits for all of it.
- **beside** (the default): fit ALS, evaluate, publish with the previous version's
  stars; the stream is held for that long only. Then the rating model fits in the
  ``StarsFitter``'s process while the driver goes on with micro-batch-sized work (fold in,
  rank and predict stars for 300 users, and store them as a Spark action), and the
  version is published again when its stars land.

It prints the stream hold of each, their ratio, how long the stars take to land, and the
time of one micro-batch-sized step alone and while the fit runs beside it (the cost the
background fit puts on the stream, on 2 cores).

    .venv/bin/python benchmarks/bench_stars.py [--skip-large]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from dataclasses import replace

import numpy as np
import numpy.typing as npt
from harness import ML100K, bench_spark, drop_prefix, history_of, local_services
from pyspark.sql import SparkSession

from producer.grouplens import load_grouplens
from producer.synthetic import synthetic_dataset
from serving.settings import RedisSettings
from streaming.ingest.history import RatingHistory
from streaming.model.lists import lists_for
from streaming.model.versions import ModelVersion, train_model, training_split
from streaming.publish.executors import ListTarget, publish_ratings
from streaming.rating.fitter import StarsFitter, StarsInput
from streaming.settings import ModelSettings


def _publish(spark: SparkSession, history: RatingHistory, model: ModelVersion,
             settings: ModelSettings, redis: RedisSettings) -> None:  # fmt: skip
    publish_ratings(
        spark.createDataFrame(history.frame()), model.fold_in(settings), settings.top_k,
        ListTarget(redis, model.version, "model"), spark.sparkContext.defaultParallelism,
        model.stars,
    )  # fmt: skip


def _retrain(
    spark: SparkSession, history: RatingHistory, settings: ModelSettings,
    redis: RedisSettings, version: int, *, inside: bool,
) -> tuple[ModelVersion, float]:  # fmt: skip
    """(model, seconds the stream is held): train and publish as the job's retrain does."""
    ratings = spark.createDataFrame(history.frame()).cache()
    ratings.count()
    began = time.perf_counter()
    model = train_model(ratings, settings, version=version, batch_id=version - 1,
                        reason="benchmark", fit_stars=inside)  # fmt: skip
    _publish(spark, history, model, settings, redis)
    held = time.perf_counter() - began
    ratings.unpersist()
    return model, held


def _step(spark: SparkSession, history: RatingHistory, model: ModelVersion,
          settings: ModelSettings, users: npt.NDArray[np.int64]) -> float:  # fmt: skip
    """One micro-batch-sized piece of driver work: fold-in lists with stars, then a Spark
    action on them. Seconds."""
    began = time.perf_counter()
    lists = lists_for(history.of_users(users), model.fold_in(settings), settings.top_k,
                      model.stars)  # fmt: skip
    rows = [(int(u), int(lists.movies[p][0])) for p, u in enumerate(lists.users.tolist())]
    spark.createDataFrame(rows, "user_id long, movie_id long").count()
    return time.perf_counter() - began


def measure(spark: SparkSession, name: str, history: RatingHistory, redis: RedisSettings) -> None:
    """Print the figures of one feed (see the module docstring)."""
    settings = ModelSettings()
    rng = np.random.default_rng(3)
    users = np.sort(rng.choice(history.users(), 300, replace=False))
    _retrain(spark, history, settings, redis, 1, inside=True)  # warm-up; gives stars to carry
    previous, inside_s = _retrain(spark, history, settings, redis, 2, inside=True)
    model, beside_s = _retrain(spark, history, settings, redis, 3, inside=False)
    model = replace(model, stars=previous.stars)  # what the job carries over
    alone = [_step(spark, history, model, settings, users) for _ in range(5)]

    everything = history.frame()
    training, held_out = training_split(everything, model.meta.holdout_from_timestamp)
    fitter = StarsFitter(settings)
    began = time.perf_counter()
    fitter.request(model.version, StarsInput(None, None, len(everything),
                                             lambda: (training, held_out)))  # fmt: skip
    during = []
    while fitter.busy:
        during.append(_step(spark, history, model, settings, users))
    fitted = fitter.take()
    landed_s = time.perf_counter() - began
    fitter.close()
    assert fitted is not None and fitted.model is not None  # noqa: S101
    began = time.perf_counter()
    _publish(spark, history, replace(model, stars=fitted.model), settings, redis)
    republish_s = time.perf_counter() - began

    print(f"{name}: {len(history):,} ratings")
    print(f"  rating model fit (inside the retrain): "
          f"{previous.meta.timings_s['rating_model']:.2f} s")  # fmt: skip
    print(f"  stream held by a retrain: rating model inside {inside_s:.2f} s, beside "
          f"{beside_s:.2f} s; ratio {inside_s / beside_s:.1f}x")  # fmt: skip
    print(f"  beside: stars landed {landed_s:.2f} s after the retrain published "
          f"(held-out RMSE {fitted.rmse:.4f}), republished in {republish_s:.2f} s")  # fmt: skip
    a, d = statistics.median(alone), statistics.median(during)
    print(f"  a 300-user micro-batch step: {a:.3f} s alone, {d:.3f} s while the fit runs "
          f"({len(during)} steps; {d / a:.2f}x)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-large", action="store_true", help="no ML-1M-scale feed")
    args = parser.parse_args()
    with local_services():
        spark = bench_spark()
        redis = RedisSettings(key_prefix=f"bench:{uuid.uuid4().hex[:8]}")
        try:
            if (ML100K / "u.data").is_file():
                table = load_grouplens(ML100K).ratings
                measure(spark, "ML-100K", history_of(table), redis)
            if not args.skip_large:
                table = synthetic_dataset(1_000_000, users=6040, movies=3706).ratings
                measure(spark, "synthetic 1M", history_of(table), redis)
        finally:
            drop_prefix(redis)
            spark.stop()


if __name__ == "__main__":
    main()
