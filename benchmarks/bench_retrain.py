"""Retrain cycles: where the time goes, and whether memory stays flat over many of them.

Each cycle is what the streaming job does when a retrain is due: read the store, fit ALS
and the rating model on all but the newest held-out share, evaluate, then fold in, rank,
predict the stars of and publish every user's hybrid list from the executors. Timed per phase
(fit, rating model, evaluate, top-N + publish with the stars), beside
the ``recommendForAllUsers`` + one SET per user baseline on the same model, on ML-100K
when it is found and on synthetic feeds shaped like the MovieLens releases (``--sizes``:
ML-1M by default, ML-10M and ML-25M on request), each with the driver's memory after
its retrain and the time to count its short-term pairs; then the model side of a
500-rating micro-batch with ALS-only lists and with the hybrid lists, interleaved.
Then ``--cycles`` retrains on small data, reporting the driver's memory (Python RSS and
JVM heap after a GC) after 10 and after all of them.

    .venv/bin/python benchmarks/bench_retrain.py [--cycles 100] [--sizes 1m,10m,25m]
        [--driver-memory 4g] [--followers 200,0]

The top-N + publish of the same model is then timed again with the explanations
("because you rated") and without them (``RECSTREAM_MODEL_EXPLAIN_K=0``), alternately,
to show what they cost.

``--followers`` times the top-N + publish of the same model again with the short-term
counts kept to each further bound on a movie's followers (0: every pair), side by side;
the first bound (the shipped one by default) is the retrain's.

``--sizes ''`` runs no synthetic feed. The larger feeds need a larger driver
(``--driver-memory 12g`` for 25m).
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
from harness import ML100K, SHAPES, bench_spark, drop_prefix, local_services, rss_mb
from pyspark.ml.recommendation import ALS
from pyspark.sql import DataFrame, SparkSession

from producer.dataset import RatingTable
from producer.grouplens import load_grouplens
from producer.synthetic import synthetic_dataset
from serving.connection import open_redis
from serving.layout import RedisLayout, encode_list
from serving.settings import RedisSettings
from streaming.ingest.history import UserRatings, compressed_rows, newest_per_pair
from streaming.model.blend import ShortTerm, transition_counts
from streaming.model.lists import lists_for
from streaming.model.transitions import TransitionCounts
from streaming.model.versions import ModelVersion, train_model
from streaming.publish.executors import ListTarget, publish_ratings
from streaming.settings import ModelSettings

COUNTED_PER_CALL = 1_000_000  # ratings the short-term counts take at a time


def count_in_chunks(
    counts: TransitionCounts, users: npt.NDArray[np.int64], movies: npt.NDArray[np.int64]
) -> None:
    """Ratings in arrival order into the short-term counts, ``COUNTED_PER_CALL`` at a time
    as the job's batches do (the same counts; the 25M-shaped feed in one call ran the
    driver out of memory)."""
    for first in range(0, len(users), COUNTED_PER_CALL):
        rows = slice(first, first + COUNTED_PER_CALL)
        counts.observe(users[rows], movies[rows])


def shaped_feed(size: str) -> RatingTable:
    """The synthetic feed shaped like a MovieLens release (``SHAPES``)."""
    events, users, movies = SHAPES[size]
    return synthetic_dataset(events, users=users, movies=movies).ratings


@dataclass(frozen=True)
class Stored:
    """A feed as the job's store holds it: the latest rating per (user, movie), in the
    order they arrived, in the driver (for the short-term counts and the micro-batches)
    and as Parquet (what the build's Spark reads)."""

    frame: pd.DataFrame
    rows: UserRatings
    parquet: Path

    @property
    def users(self) -> int:
        return len(self.rows.users)


def stored(table: RatingTable, folder: Path) -> Stored:
    """``table`` replayed in timestamp order into a store under ``folder``."""
    arrival = np.argsort(table.timestamps, kind="stable")
    users, movies = table.user_ids[arrival], table.movie_ids[arrival]
    keep = arrival[np.sort(newest_per_pair(users, movies, np.arange(len(arrival))))]
    frame = pd.DataFrame(
        {
            "user_id": table.user_ids[keep],
            "movie_id": table.movie_ids[keep],
            "rating": table.ratings[keep],
            "timestamp": table.timestamps[keep],
        }
    )
    path = folder / f"{uuid.uuid4().hex[:8]}.parquet"
    frame.to_parquet(path, index=False)
    rows = compressed_rows(frame["user_id"], frame["movie_id"], frame["rating"])
    return Stored(frame, rows, path)


def cycle(
    spark: SparkSession, store: Stored, settings: ModelSettings, redis: RedisSettings,
    version: int, short_term: ShortTerm | None = None,
) -> tuple[ModelVersion, dict[str, float]]:  # fmt: skip
    """One retrain as the job runs it (the hybrid lists when ``short_term`` is given):
    the model and seconds per phase."""
    ratings = spark.read.parquet(str(store.parquet)).cache()
    ratings.count()
    model = train_model(ratings, settings, version=version,
                        batch_id=version - 1, reason="benchmark")  # fmt: skip
    published = publish_seconds(ratings, model, settings, redis, version, short_term)
    ratings.unpersist()
    return model, {
        "summary": model.meta.timings_s["summary"],
        "fit": model.meta.timings_s["fit"],
        "rating model": model.meta.timings_s["rating_model"],
        "evaluate": model.meta.timings_s["evaluate"],
        "top-N + publish": published,
    }


def publish_seconds(
    ratings: DataFrame, model: ModelVersion, settings: ModelSettings, redis: RedisSettings,
    version: int, short_term: ShortTerm | None,
) -> float:  # fmt: skip
    """Seconds of ``model``'s top-N + publish for every user of ``ratings`` (cached)."""
    began = time.perf_counter()
    publish_ratings(
        ratings, model.fold_in(settings), settings.top_k, ListTarget(redis, version, "model"),
        ratings.sparkSession.sparkContext.defaultParallelism, model.stars, short_term,
        settings.explain_k,
    )  # fmt: skip
    return time.perf_counter() - began


def republish(
    spark: SparkSession, store: Stored, model: ModelVersion, settings: ModelSettings,
    redis: RedisSettings, version: int, short_term: ShortTerm,
) -> float:  # fmt: skip
    """Seconds of ``model``'s top-N + publish again, as ``cycle`` times it, with ``short_term``."""
    ratings = spark.read.parquet(str(store.parquet)).cache()
    ratings.count()
    seconds = publish_seconds(ratings, model, settings, redis, version, short_term)
    ratings.unpersist()
    return seconds


def explain_cost(
    spark: SparkSession, store: Stored, model: ModelVersion, settings: ModelSettings,
    redis: RedisSettings, short_term: ShortTerm,
) -> tuple[float, float]:  # fmt: skip
    """Best seconds of ``model``'s top-N + publish with the settings' explanations and with
    none, published alternately twice (the first publication of a model runs slower:
    compared with it, the explanations would look dearer than they are)."""
    plain = settings.model_copy(update={"explain_k": 0})
    explained, unexplained = [], []
    for _ in range(2):
        explained.append(republish(spark, store, model, settings, redis, 9, short_term))
        unexplained.append(republish(spark, store, model, plain, redis, 9, short_term))
    return min(explained), min(unexplained)


def micro_batch(
    spark: SparkSession, store: Stored, model: ModelVersion, settings: ModelSettings,
    short_term: ShortTerm | None, batch: pd.DataFrame,
) -> float:  # fmt: skip
    """Seconds of the model side of one micro-batch as the job does it: count the batch's
    first ratings (hybrid only), fold in and rank its users with their stars, and store
    the lists as a Spark action."""
    began = time.perf_counter()
    if short_term is not None:
        short_term.counts.observe(batch["user_id"].to_numpy(), batch["movie_id"].to_numpy())
    users = np.unique(batch["user_id"].to_numpy())
    lists = lists_for(store.rows.for_users(users), model.fold_in(settings), settings.top_k,
                      model.stars, short_term, settings.explain_k)  # fmt: skip
    rows = [(int(u), int(lists.movies[p][0])) for p, u in enumerate(lists.users.tolist())]
    spark.createDataFrame(rows, "user_id long, movie_id long").count()
    return time.perf_counter() - began


def hybrid_cost(
    spark: SparkSession, store: Stored, model: ModelVersion, settings: ModelSettings,
    table: RatingTable,
) -> tuple[float, float]:  # fmt: skip
    """Median seconds of a 500-rating micro-batch with ALS-only lists and with the hybrid,
    interleaved, over the newest ratings of the feed (counts built from all before)."""
    order = np.argsort(table.timestamps, kind="stable")
    split = len(order) - 20 * 500
    counts = transition_counts(settings)
    count_in_chunks(counts, table.user_ids[order[:split]], table.movie_ids[order[:split]])
    short_term = ShortTerm.of(counts, settings)
    alone, hybrid = [], []
    for first in range(split, len(order), 500):
        rows = order[first : first + 500]
        batch = pd.DataFrame({"user_id": table.user_ids[rows], "movie_id": table.movie_ids[rows]})
        alone.append(micro_batch(spark, store, model, settings, None, batch))
        hybrid.append(micro_batch(spark, store, model, settings, short_term, batch))
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
            client.set(f"{RedisLayout(redis.key_prefix).tag}:baseline:{row['user_id']}",
                       encode_list(pairs, time.time(), "model"))  # fmt: skip
        return time.perf_counter() - began
    finally:
        client.close()


def memory(spark: SparkSession) -> tuple[float, float]:
    """(Python RSS, JVM heap used after a GC) of the driver, in MB of 2^20 bytes like
    ``rss_mb``'s peak."""
    gc.collect()
    rss = rss_mb("self")
    jvm = spark.sparkContext._jvm
    assert jvm is not None  # noqa: S101 - a live SparkContext always has its JVM
    jvm.System.gc()
    runtime = jvm.java.lang.Runtime.getRuntime()
    return rss, (runtime.totalMemory() - runtime.freeMemory()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument(
        "--sizes", default="1m", help="synthetic feeds, of " + ",".join(SHAPES) + " ('' for none)"
    )
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument(
        "--followers", default=str(ModelSettings().transition_followers),
        help="bounds on the followers kept per movie, the retrain's first (0: keep all)",
    )  # fmt: skip
    args = parser.parse_args()
    args.followers = [int(value) for value in args.followers.split(",")]
    args.sizes = [size for size in args.sizes.split(",") if size]
    unknown = [size for size in args.sizes if size not in SHAPES]
    if unknown:
        parser.error(f"unknown sizes {unknown}; choose from {', '.join(SHAPES)}")
    with local_services():
        run(args)


def run(args: argparse.Namespace) -> None:
    spark = bench_spark(args.driver_memory)
    prefix = f"bench:{uuid.uuid4().hex[:8]}"
    redis = RedisSettings(key_prefix=prefix)
    settings = ModelSettings()
    folder = Path(tempfile.mkdtemp(prefix="bench_retrain_"))
    try:
        small = stored(synthetic_dataset(20_000, users=500, movies=400).ratings, folder)
        feeds: list[tuple[str, Callable[[], RatingTable]]] = []
        if (ML100K / "u.data").is_file():
            feeds.append(("ML-100K", lambda: load_grouplens(ML100K).ratings))
        for size in args.sizes:
            feeds.append((f"synthetic {size.upper()}-shaped", partial(shaped_feed, size)))
        for name, load in feeds:
            table = load()
            large = len(table) > 2_000_000  # one run of each, the warm-up on a small feed
            store = stored(table, folder)
            users, movies = store.frame["user_id"].to_numpy(), store.frame["movie_id"].to_numpy()
            bounded = {}  # followers kept per movie → (its settings, its counts, seconds)
            for followers in args.followers:
                kept = settings.model_copy(update={"transition_followers": followers})
                began = time.perf_counter()
                counts = transition_counts(kept)
                count_in_chunks(counts, users, movies)
                bounded[followers] = (kept, counts, time.perf_counter() - began)
            settings, counts, _ = bounded[args.followers[0]]
            short_term = ShortTerm.of(counts, settings)
            cycle(spark, small if large else store, settings, redis, version=1)  # warm-up
            before, _ = memory(spark)
            Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again
            model, phases = cycle(spark, store, settings, redis, 2, short_term)
            rss, heap = memory(spark)
            peak = rss_mb("self", "VmHWM")
            runs = 1 if large else 2
            base = min(baseline(spark, table, redis, settings.top_k) for _ in range(runs))
            ours = phases["top-N + publish"]
            split = ", ".join(f"{phase} {seconds:.2f} s" for phase, seconds in phases.items())
            print(f"{name}: {len(table):,} ratings, {store.users:,} users; {split}; "
                  f"total {sum(phases.values()):.1f} s")  # fmt: skip
            print(f"  baseline recommendForAllUsers + SET {base:.2f} s; ratio {base / ours:.1f}x")
            for number, (followers, (kept, other, seconds)) in enumerate(bounded.items()):
                pairs, held = other.footprint()
                publish = ours if number == 0 else republish(
                    spark, store, model, kept, redis, 3 + number, ShortTerm.of(other, kept)
                )  # fmt: skip
                print(f"  followers kept {followers or 'all'}: short-term counts {pairs:,} "
                      f"pairs, {held / 2**20:,.0f} MB of arrays, counted in {seconds:.1f} s; "
                      f"top-N + publish {publish:.2f} s (ratio to the baseline "
                      f"{base / publish:.1f}x)")  # fmt: skip
            del bounded, other
            explained, plain = explain_cost(spark, store, model, settings, redis, short_term)
            print(f"  the same model published again, with and without the explanations "
                  f"(alternately, best of 2): top-N + publish {explained:.2f} s with the "
                  f"first {settings.explain_k} of each list explained, {plain:.2f} s with "
                  f"none (RECSTREAM_MODEL_EXPLAIN_K=0): they add "
                  f"{explained / plain - 1:+.0%}")  # fmt: skip
            print(f"  driver Python RSS: {before:,.0f} MB before the retrain (this benchmark's "
                  f"copy of the feed and the counts), peak {peak:,.0f} MB during it, "
                  f"{rss:,.0f} MB after; JVM heap used after {heap:,.0f} MB")  # fmt: skip
            alone, hybrid = hybrid_cost(spark, store, model, settings, table)
            print(f"  500-rating micro-batch (median of 20): ALS-only lists {alone:.3f} s, "
                  f"hybrid {hybrid:.3f} s; the hybrid adds {hybrid / alone - 1:+.0%}")  # fmt: skip
            del table, store, counts, short_term, model  # before the next feed is made

        light = settings.model_copy(update={"max_iter": 5})
        marks: dict[int, tuple[float, float]] = {}
        began = time.perf_counter()
        for number in range(1, args.cycles + 1):
            cycle(spark, small, light, redis, 100 + number)
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
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
