"""Top-K lists for every user, computed and published on the executors.

Item factors are broadcast once per model; each partition of users is scored with
vectorised numpy (``streaming.topn``) inside ``mapInPandas``, and each partition writes
its lists to Redis with pipelined HSETs from the executor. Nothing per user passes
through the driver, so a cluster spreads both the scoring and the publishing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F

from serving.connection import open_redis
from serving.layout import ListSource, RedisLayout, encode_list
from serving.settings import RedisSettings
from streaming.publish import write_lists
from streaming.topn import ItemIndex, top_k

__all__ = ["LIST_SCHEMA", "publish_lists", "score_lists"]

LIST_SCHEMA = "user_id int, movies array<int>, scores array<double>"
_BLOCK = 512  # users scored at once: 512 × 3,700 items is a 15 MB score matrix


def score_lists(user_factors: DataFrame, items: ItemIndex, ratings: DataFrame, k: int) -> DataFrame:
    """Lists for the users in ``user_factors`` (``id``, ``features``), rated movies excluded.

    ``ratings`` holds (user_id, movie_id) pairs; unrated slots at the end of a short
    list are dropped.
    """
    spark = user_factors.sparkSession
    shared = spark.sparkContext.broadcast((items.movie_ids, items.factors))
    rated = ratings.groupBy("user_id").agg(F.collect_list("movie_id").alias("rated"))
    users = user_factors.select(F.col("id").alias("user_id"), "features").join(
        rated, "user_id", "left"
    )

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        movie_ids, factors = shared.value
        index = ItemIndex(movie_ids, factors)
        for batch in batches:
            for start in range(0, len(batch), _BLOCK):
                block = batch.iloc[start : start + _BLOCK]
                vectors = np.array(block["features"].tolist(), dtype=np.float64)
                excluded = [index.rows(r if r is not None else []) for r in block["rated"].tolist()]
                ids, scores = top_k(vectors, index, excluded, k)
                keep = [row >= 0 for row in ids]
                yield pd.DataFrame(
                    {
                        "user_id": block["user_id"].to_numpy(dtype=np.int32),
                        "movies": [row[mask].tolist() for row, mask in zip(ids, keep, strict=True)],
                        "scores": [
                            row[mask].tolist() for row, mask in zip(scores, keep, strict=True)
                        ],
                    }
                )

    return users.mapInPandas(score, LIST_SCHEMA)


def publish_lists(
    lists: DataFrame,
    settings: RedisSettings,
    version: int,
    source: ListSource,
) -> int:
    """Write every list into a version's hash, from the executors; how many were written."""
    layout = RedisLayout(settings.key_prefix)
    written = lists.sparkSession.sparkContext.accumulator(0)
    updated_at = time.time()

    def encoded(rows: Iterator[Row]) -> Iterator[tuple[int, bytes]]:
        for row in rows:
            pairs = list(zip(row["movies"], row["scores"], strict=True))
            yield row["user_id"], encode_list(pairs, updated_at, source)

    def write_partition(rows: Iterator[Row]) -> None:
        client = open_redis(settings)
        try:
            written.add(write_lists(client, layout, version, encoded(rows)))
        finally:
            client.close()

    lists.foreachPartition(write_partition)
    return int(written.value)
