"""Top-K lists for every user, computed and published on the executors.

The users' ratings stay a Spark DataFrame (the store's, latest per user and movie): they
are split by user id into partitions, each sorted by user, and each partition folds its
users in and ranks the movies with vectorised numpy (``streaming.model.lists``) inside
``mapInPandas``, then writes their lists to Redis with pipelined HSETs from the executor.
Only the model's item factors, the rating model and the short-term transition counts are
broadcast; no rating passes through the driver, so a cluster spreads the reading, the
scoring and the publishing alike.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from serving.connection import open_redis
from serving.layout import ListSource, RedisLayout
from serving.settings import RedisSettings
from streaming.ingest.history import whole_users
from streaming.model.blend import ShortTerm
from streaming.model.lists import FoldIn, lists_for
from streaming.publish.writes import encoded_lists, write_lists
from streaming.rating.fm import RatingModel

__all__ = ["ListTarget", "publish_ratings"]


@dataclass(frozen=True)
class ListTarget:
    """Where lists go: a Redis, a model version's hash, and the source they are tagged with."""

    settings: RedisSettings
    version: int
    source: ListSource

    @property
    def layout(self) -> RedisLayout:
        """The key layout of the target's prefix."""
        return RedisLayout(self.settings.key_prefix)


def publish_ratings(
    ratings: DataFrame,
    model: FoldIn,
    k: int,
    target: ListTarget,
    partitions: int,
    stars: RatingModel | None = None,
    short_term: ShortTerm | None = None,
    explain: int = 0,
) -> int:
    """Score every user in ``ratings`` and write their lists, all on the executors; how many.

    ``ratings`` has user_id, movie_id and rating, one row per user and movie. It is split
    into ``partitions`` by user; each partition pipelines its encoded lists straight into
    Redis. With ``stars``, every listed movie carries the rating the user is predicted to
    give it; the first ``explain`` carry the rated movie behind them.
    """
    context = ratings.sparkSession.sparkContext
    shared = context.broadcast((model, stars, short_term))
    updated_at = time.time()

    def write_partition(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        fold_in, rating_model, recent = shared.value
        client = open_redis(target.settings)
        written = 0
        try:
            for users in whole_users(frames):
                lists = lists_for(users, fold_in, k, rating_model, recent, explain)
                encoded = encoded_lists(lists, updated_at, target.source)
                written += write_lists(client, target.layout, target.version, encoded)
        finally:
            client.close()
        yield pd.DataFrame({"written": [written]})

    try:
        total = (
            ratings.select("user_id", "movie_id", "rating")
            .repartition(max(1, partitions), "user_id")
            .sortWithinPartitions("user_id")
            .mapInPandas(write_partition, "written long")
            .agg(F.sum("written"))
            .first()
        )
    finally:
        shared.unpersist()
    return 0 if total is None or total[0] is None else int(total[0])
