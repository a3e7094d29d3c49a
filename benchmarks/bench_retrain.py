"""Retrain cycles: where the time goes, and whether memory stays flat over many of them.

Each cycle is what the streaming job does when a retrain is due: read the store, fit ALS
and the rating model on all but the newest held-out share, evaluate, then fold in, rank,
predict the stars of and publish every user's hybrid list from the executors. Timed per phase
(fit, rating model, evaluate, top-N + publish with the stars), beside
the ``recommendForAllUsers`` + one SET per user baseline on the same model, on ML-100K
when it is found and on an ML-1M-scale synthetic feed; then the model side of a
500-rating micro-batch with ALS-only lists and with the hybrid lists, interleaved.
Then ``--cycles`` retrains on small data, reporting the driver's memory (Python RSS and
JVM heap after a GC) after 10 and after all of them.

    .venv/bin/python benchmarks/bench_retrain.py [--cycles 100] [--skip-large]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from harness import ML100K, bench_spark, drop_prefix, history_of, local_services
from pyspark.ml.recommendation import ALS
from pyspark.sql import SparkSession

from producer.dataset import RatingTable
from producer.grouplens import load_grouplens
from producer.synthetic import synthetic_dataset
from serving.connection import open_redis
from serving.layout import encode_list
from serving.settings import RedisSettings
from streaming.ingest.history import RatingHistory
from streaming.model.blend import ShortTerm, transition_counts
from streaming.model.lists import lists_for
from streaming.model.versions import ModelVersion, train_model
from streaming.publish.executors import ListTarget, publish_ratings
from streaming.settings import ModelSettings


def cycle(
    spark: SparkSession, history: RatingHistory, settings: ModelSettings, redis: RedisSettings,
    version: int, short_term: ShortTerm | None = None,
) -> tuple[ModelVersion, dict[str, float]]:  # fmt: skip
    """One retrain as the job runs it (the hybrid lists when ``short_term`` is given):
    the model and seconds per phase."""
    ratings = spark.createDataFrame(history.frame()).cache()
    ratings.count()
    model = train_model(ratings, history.frame(), settings, version=version, batch_id=version - 1,
                        reason="benchmark")  # fmt: skip
    began = time.perf_counter()
    target = ListTarget(redis, version, "model")
    publish_ratings(
        ratings, model.fold_in(settings), settings.top_k, target,
        spark.sparkContext.defaultParallelism, model.stars, short_term,
    )  # fmt: skip
    ratings.unpersist()
    return model, {
        "fit": model.meta.timings_s["fit"],
        "rating model": model.meta.timings_s["rating_model"],
        "evaluate": model.meta.timings_s["evaluate"],
        "top-N + publish": time.perf_counter() - began,
    }


def micro_batch(
    spark: SparkSession, history: RatingHistory, model: ModelVersion, settings: ModelSettings,
    short_term: ShortTerm | None, batch: pd.DataFrame,
) -> float:  # fmt: skip
    """Seconds of the model side of one micro-batch as the job does it: count the batch's
    first ratings (hybrid only), fold in and rank its users with their stars, and store
    the lists as a Spark action."""
    began = time.perf_counter()
    if short_term is not None:
        short_term.counts.observe(batch["user_id"].to_numpy(), batch["movie_id"].to_numpy())
    users = np.unique(batch["user_id"].to_numpy())
    lists = lists_for(history.of_users(users), model.fold_in(settings), settings.top_k,
                      model.stars, short_term)  # fmt: skip
    rows = [(int(u), int(lists.movies[p][0])) for p, u in enumerate(lists.users.tolist())]
    spark.createDataFrame(rows, "user_id long, movie_id long").count()
    return time.perf_counter() - began


def hybrid_cost(
    spark: SparkSession, history: RatingHistory, model: ModelVersion, settings: ModelSettings,
    table: RatingTable,
) -> tuple[float, float]:  # fmt: skip
    """Median seconds of a 500-rating micro-batch with ALS-only lists and with the hybrid,
    interleaved, over the newest ratings of the feed (counts built from all before)."""
    order = np.argsort(table.timestamps, kind="stable")
    split = len(order) - 20 * 500
    counts = transition_counts(settings)
    counts.observe(table.user_ids[order[:split]], table.movie_ids[order[:split]])
    short_term = ShortTerm.of(counts, settings)
    alone, hybrid = [], []
    for first in range(split, len(order), 500):
        rows = order[first : first + 500]
        batch = pd.DataFrame({"user_id": table.user_ids[rows], "movie_id": table.movie_ids[rows]})
        alone.append(micro_batch(spark, history, model, settings, None, batch))
        hybrid.append(micro_batch(spark, history, model, settings, short_term, batch))
    return statistics.median(alone), statistics.median(hybrid)


def baseline(spark: SparkSession, table: RatingTable, redis: RedisSettings, k: int) -> float:
    """recommendForAllUsers(k) collected + one SET per user, on a model of the same data."""
    frame = spark.createDataFrame(
        pd.DataFrame({"user_id": table.user_ids, "movie_id": table.movie_ids,
                      "rating": table.ratings})
    )  # fmt: skip
    model = ALS(rank=10, maxIter=10, regParam=0.1, seed=1, userCol="user_id",
                itemCol="movie_id").fit(frame)  # fmt: skip
    client = open_redis(redis)
    try:
        began = time.perf_counter()
        for row in model.recommendForAllUsers(k).collect():
            pairs = [(r["movie_id"], r["rating"]) for r in row["recommendations"]]
            client.set(f"{redis.key_prefix}:baseline:{row['user_id']}",
                       encode_list(pairs, time.time(), "model"))  # fmt: skip
        return time.perf_counter() - began
    finally:
        client.close()


def memory(spark: SparkSession) -> tuple[float, float]:
    """(Python RSS MB, JVM heap used MB after a GC) of the driver."""
    gc.collect()
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    rss = pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    jvm = spark.sparkContext._jvm
    assert jvm is not None  # noqa: S101 - a live SparkContext always has its JVM
    jvm.System.gc()
    runtime = jvm.java.lang.Runtime.getRuntime()
    return rss, (runtime.totalMemory() - runtime.freeMemory()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--skip-large", action="store_true", help="no ML-1M-scale cycle")
    args = parser.parse_args()
    with local_services():
        run(args)


def run(args: argparse.Namespace) -> None:
    spark = bench_spark()
    prefix = f"bench:{uuid.uuid4().hex[:8]}"
    redis = RedisSettings(key_prefix=prefix)
    settings = ModelSettings()
    try:
        feeds: list[tuple[str, RatingTable]] = []
        if (ML100K / "u.data").is_file():
            feeds.append(("ML-100K", load_grouplens(ML100K).ratings))
        if not args.skip_large:
            feeds.append(
                ("synthetic 1M", synthetic_dataset(1_000_000, users=6040, movies=3706).ratings)
            )
        for name, table in feeds:
            history = history_of(table)
            counts = transition_counts(settings)
            counts.observe(*history.arrival_order())
            short_term = ShortTerm.of(counts, settings)
            cycle(spark, history, settings, redis, version=1)  # warm-up
            model, phases = cycle(spark, history, settings, redis, 2, short_term)
            base = min(baseline(spark, table, redis, settings.top_k) for _ in range(2))
            ours = phases["top-N + publish"]
            split = ", ".join(f"{phase} {seconds:.2f} s" for phase, seconds in phases.items())
            print(f"{name}: {len(table):,} ratings; {split}")
            print(f"  baseline recommendForAllUsers + SET {base:.2f} s; ratio {base / ours:.1f}x")
            alone, hybrid = hybrid_cost(spark, history, model, settings, table)
            print(f"  500-rating micro-batch (median of 20): ALS-only lists {alone:.3f} s, "
                  f"hybrid {hybrid:.3f} s; the hybrid adds {hybrid / alone - 1:+.0%}")  # fmt: skip

        small = synthetic_dataset(20_000, users=500, movies=400).ratings
        history = history_of(small)
        light = settings.model_copy(update={"max_iter": 5})
        marks: dict[int, tuple[float, float]] = {}
        began = time.perf_counter()
        for number in range(1, args.cycles + 1):
            cycle(spark, history, light, redis, 100 + number)
            if number in (10, args.cycles):
                marks[number] = memory(spark)
        spent = time.perf_counter() - began
        for number, (rss, heap) in marks.items():
            print(f"after {number:3d} retrains: driver Python RSS {rss:7.1f} MB, "
                  f"JVM heap used {heap:7.1f} MB")  # fmt: skip
        print(f"{args.cycles} retrains of 20k ratings in {spent:.0f} s")
    finally:
        drop_prefix(redis)
        spark.stop()


if __name__ == "__main__":
    main()
