"""Top-K lists for every user, computed and published on the executors.

The model's item factors, every user's history (compressed rows, ≈ 12 bytes per
rating) and the short-term transition counts are broadcast once per publication; a
range of user positions is split into partitions, and each partition folds its users
in and ranks the movies with vectorised numpy (``streaming.model.lists``) inside
``mapInPandas``, then writes its lists to Redis with pipelined HSETs from the executor.
No shuffle, and nothing per user passes through the driver, so a cluster spreads both
the scoring and the publishing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pyspark.sql import SparkSession

from serving.connection import open_redis
from serving.layout import ListSource, RedisLayout, encode_list
from serving.settings import RedisSettings
from streaming.ingest.history import UserRatings
from streaming.model.blend import ShortTerm
from streaming.model.lists import FoldIn, lists_for
from streaming.publish.writes import write_lists
from streaming.rating.fm import RatingModel

__all__ = ["ListTarget", "publish_histories"]

_BLOCK = 512  # users scored at once: 512 × 3,700 items is a 15 MB score matrix


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


def publish_histories(
    spark: SparkSession,
    history: UserRatings,
    model: FoldIn,
    k: int,
    target: ListTarget,
    partitions: int,
    stars: RatingModel | None = None,
    short_term: ShortTerm | None = None,
) -> int:
    """Score the users in ``history`` and write their lists, all on the executors; how many.

    Each partition ranks its users and pipelines the encoded lists straight into Redis,
    with no DataFrame (and no Arrow or row conversion) in between. With ``stars``, every
    listed movie carries the rating the user is predicted to give it.
    """
    shared = spark.sparkContext.broadcast((history, model, stars, short_term))
    written = spark.sparkContext.accumulator(0)
    updated_at = time.time()

    def write_partition(positions: Iterable[int]) -> None:
        everyone, fold_in, rating_model, recent = shared.value
        chosen = np.fromiter(positions, dtype=np.int64)
        encoded = (
            (
                user,
                encode_list(
                    list(zip(movies, scores, strict=True)), updated_at, target.source, predicted
                ),
            )
            for user, movies, scores, predicted in _personal_lists(
                everyone, fold_in, rating_model, k, chosen, recent
            )
        )
        client = open_redis(target.settings)
        try:
            written.add(write_lists(client, target.layout, target.version, encoded))
        finally:
            client.close()

    users = range(len(history.users))
    spark.sparkContext.parallelize(users, max(1, partitions)).foreachPartition(write_partition)
    shared.unpersist()
    return int(written.value)


def _personal_lists(
    everyone: UserRatings,
    fold_in: FoldIn,
    stars: RatingModel | None,
    k: int,
    positions: npt.NDArray[np.int64],
    short_term: ShortTerm | None = None,
) -> Iterator[tuple[int, list[int], list[float], list[float] | None]]:
    """(user, movies, scores, stars) of the users at ``positions`` with a personal list."""
    for first in range(0, len(positions), _BLOCK):
        chosen = everyone.subset(positions[first : first + _BLOCK])
        lists = lists_for(chosen, fold_in, k, stars, short_term)
        for row in np.flatnonzero(lists.personal).tolist():
            keep = lists.movies[row] >= 0
            yield (
                int(lists.users[row]),
                lists.movies[row][keep].tolist(),
                lists.scores[row][keep].tolist(),
                lists.stars_of(row),
            )
