"""Top-N for every user plus publishing: recstream's executor path against the baseline.

Baseline: ``ALSModel.recommendForAllUsers(K)`` collected to the driver, then one Redis
SET per user. recstream: ``streaming.publish.executors`` (the ratings split by user
across partitions, only the item factors broadcast; each partition folds its users in
and ranks with vectorised numpy inside ``mapInPandas``, rated movies excluded) and
pipelined HSETs from the executors. Same model, same K, same Redis, one run; on an
ML-1M-scale synthetic feed (6,040 users, 3,706 movies, 1M ratings) by default.

    .venv/bin/python benchmarks/bench_topn.py [--events N] [--k K]
"""

from __future__ import annotations

import argparse
import time
import uuid

import numpy as np
import redis
from harness import bench_spark, drop_prefix, local_services
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame

from producer.synthetic import synthetic_dataset
from serving.connection import open_redis
from serving.layout import RedisLayout, encode_list
from serving.settings import RedisSettings
from streaming.model.lists import FoldIn
from streaming.model.topn import ItemIndex
from streaming.publish.executors import ListTarget, publish_ratings


def baseline_cycle(
    model: ALSModel, client: redis.Redis, prefix: str, k: int
) -> tuple[float, float]:
    """recommendForAllUsers, collected, then one SET per user: (top-N s, publish s)."""
    began = time.perf_counter()
    recommended = model.recommendForAllUsers(k).collect()
    top_n = time.perf_counter() - began
    began = time.perf_counter()
    for row in recommended:
        pairs = [(r["movie_id"], r["rating"]) for r in row["recommendations"]]
        value = encode_list(pairs, time.time(), "model")
        client.set(f"{RedisLayout(prefix).tag}:baseline:{row['user_id']}", value)
    return top_n, time.perf_counter() - began


def recstream_cycle(
    model: ALSModel,
    ratings: DataFrame,
    settings: RedisSettings,
    k: int,
    version: int,
) -> tuple[float, int]:
    """Broadcast the item factors, fold in, score and publish on executors: (s, lists)."""
    began = time.perf_counter()
    item_rows = model.itemFactors.collect()
    factors = np.array([r["features"] for r in item_rows])
    items = ItemIndex([r["id"] for r in item_rows], factors)
    fold_in = FoldIn(items, reg_param=0.1)
    target = ListTarget(settings, version, "model")
    written = publish_ratings(ratings, fold_in, k, target, partitions=2)
    return time.perf_counter() - began, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2, help="best of R warm runs per side")
    args = parser.parse_args()

    with local_services():
        run(args)


def run(args: argparse.Namespace) -> None:
    spark = bench_spark()
    prefix = f"bench:{uuid.uuid4().hex[:8]}"
    redis_settings = RedisSettings(key_prefix=prefix)
    client = open_redis(redis_settings)
    try:
        table = synthetic_dataset(args.events, users=6040, movies=3706).ratings
        rows = zip(
            table.user_ids.tolist(), table.movie_ids.tolist(), table.ratings.tolist(), strict=True
        )
        frame = spark.createDataFrame(list(rows), "user_id int, movie_id int, rating double")
        frame = frame.cache()
        frame.count()
        began = time.perf_counter()
        als = ALS(rank=10, maxIter=10, regParam=0.1, seed=1, userCol="user_id", itemCol="movie_id")
        model = als.fit(frame)
        fit_s = time.perf_counter() - began
        users = model.userFactors.count()
        print(f"feed: {len(table):,} ratings, {users:,} users; ALS fit {fit_s:.1f} s; K={args.k}")

        baseline_runs = [baseline_cycle(model, client, prefix, args.k) for _ in range(args.rounds)]
        top_n, publish = min(baseline_runs, key=sum)
        ours_runs = [
            recstream_cycle(model, frame, redis_settings, args.k, version)
            for version in range(1, args.rounds + 1)
        ]
        ours, written = min(ours_runs)
        if written != users:
            msg = f"published {written} lists for {users} users"
            raise RuntimeError(msg)
        print(
            f"baseline  recommendForAllUsers {top_n:6.2f} s + per-user SET {publish:5.2f} s"
            f" = {top_n + publish:6.2f} s   (runs: {[round(sum(r), 2) for r in baseline_runs]})"
        )
        print(
            f"recstream scoring + publishing on executors, rated excluded = {ours:6.2f} s"
            f"   (runs: {[round(r[0], 2) for r in ours_runs]})"
        )
        print(f"speed-up {(top_n + publish) / ours:.1f}x (best warm run of each side)")
    finally:
        client.close()
        drop_prefix(redis_settings)
        spark.stop()


if __name__ == "__main__":
    main()
