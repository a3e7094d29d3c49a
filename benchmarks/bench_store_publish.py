"""A version's top-N + publish read from the store as the job reads it: one shuffle or two.

The job publishes a version's lists from ``RatingStore.ratings`` (every stored batch, the
latest rating per user and movie through a window), not from a cached frame as
``bench_retrain.py`` does. Split by user only after the window, that is two shuffles
of every stored rating (the window's by user and movie, then the split by user) and two
sorts; split by user before it (``by_user``, what the publisher does), one of each.

A synthetic feed (``--size``, shaped like a MovieLens release) is written as the job's
store (``--batches`` batch folders, in arrival order), then the same ALS-only lists
(random item factors: the Spark side is what differs) are published both ways,
interleaved, ``--runs`` times each after a warm-up of each; the median of each and
their ratio are printed.

    .venv/bin/python benchmarks/bench_store_publish.py [--size 10m] [--batches 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from harness import SHAPES, bench_spark, drop_prefix, local_services

from producer.synthetic import synthetic_dataset
from serving.settings import RedisSettings
from streaming.ingest.store import RatingStore
from streaming.model.lists import FoldIn
from streaming.model.topn import ItemIndex
from streaming.publish.executors import ListTarget, publish_ratings


def write_store(store: RatingStore, size: str, batches: int) -> int:
    """The ``size`` feed in arrival order as ``batches`` stored batches; how many ratings."""
    events, users, movies = SHAPES[size]
    table = synthetic_dataset(events, users=users, movies=movies, seed=42).ratings
    arrival = np.argsort(table.timestamps, kind="stable")
    frame = pd.DataFrame(
        {
            "event_id": np.arange(len(arrival)).astype(str),
            "source": "bench",
            "user_id": table.user_ids[arrival].astype(np.int32),
            "movie_id": table.movie_ids[arrival].astype(np.int32),
            "rating": table.ratings[arrival].astype(np.float64),
            "timestamp": table.timestamps[arrival].astype(np.int64),
            "topic": "bench",
            "partition": np.int32(0),
            "offset": np.arange(len(arrival), dtype=np.int64),
        }
    )
    for batch, part in enumerate(np.array_split(np.arange(len(frame)), batches)):
        folder = store.ratings_dir / f"batch_id={batch}"
        folder.mkdir(parents=True, exist_ok=True)
        frame.iloc[part].to_parquet(folder / "part-0.parquet", index=False)
    return len(frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="10m", help="of " + ",".join(SHAPES))
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    spark = bench_spark("8g")
    partitions = spark.sparkContext.defaultParallelism
    redis = RedisSettings(key_prefix=f"bench-{uuid.uuid4().hex[:8]}")
    with tempfile.TemporaryDirectory(prefix="recstream-bench-") as folder, local_services():
        store = RatingStore(spark, Path(folder))
        stored = write_store(store, args.size, args.batches)
        movie_ids = np.arange(1, SHAPES[args.size][2] + 1)
        rng = np.random.default_rng(1)
        items = ItemIndex(movie_ids, rng.normal(0, 0.1, (len(movie_ids), 20)))
        fold_in = FoldIn(items, reg_param=0.1, implicit=True)
        print(f"{args.size}: {stored:,} ratings in {args.batches} stored batches; "
              f"{partitions} list partitions")  # fmt: skip
        seconds: dict[str, list[float]] = {"split after the window": [], "split before it": []}
        try:
            for run in range(-1, args.runs):  # run -1: a warm-up of each way, not counted
                for number, (way, before) in enumerate(
                    (("split after the window", False), ("split before it", True))
                ):
                    ratings = store.ratings(by_user=partitions if before else None)
                    target = ListTarget(redis, 2 * run + number + 3, "model")
                    began = time.perf_counter()
                    written = publish_ratings(ratings, fold_in, 100, target, partitions,
                                              by_user=before)  # fmt: skip
                    spent = time.perf_counter() - began
                    if run >= 0:
                        seconds[way].append(spent)
                    print(f"  {'warm-up' if run < 0 else f'run {run + 1}'}, {way}: "
                          f"{spent:.2f} s, {written:,} lists", flush=True)  # fmt: skip
        finally:
            drop_prefix(redis)
            spark.stop()
    two, one = (statistics.median(seconds[way]) for way in seconds)
    print(f"median of {args.runs}: split after the window {two:.2f} s, split before it "
          f"{one:.2f} s; {two / one:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
