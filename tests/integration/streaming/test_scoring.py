"""Lists for every user, scored and published on the executors, against real Redis."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession

from serving.connection import open_redis
from serving.layout import RedisLayout, decode_list
from serving.settings import RedisSettings
from streaming.ingest.history import compressed_rows
from streaming.model.lists import FoldIn, lists_for
from streaming.model.topn import ItemIndex
from streaming.publish.executors import ListTarget, publish_ratings

pytestmark = pytest.mark.integration


def test_executor_lists_match_driver_lists_and_reach_redis(
    spark: SparkSession, redis_settings: RedisSettings
) -> None:
    rng = np.random.default_rng(2)
    rows = [(u, i, float(rng.integers(1, 6))) for u in range(1, 41) for i in range(1, 61)
            if rng.random() < 0.3]  # fmt: skip
    rows.append((99, 1000, 4.0))  # a user whose only movie the model does not know
    frame = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating"])
    items = ItemIndex(np.arange(1, 61), rng.normal(size=(60, 5)))
    model = FoldIn(items, reg_param=0.1)

    target = ListTarget(redis_settings, 1, "model")
    ratings = spark.createDataFrame(frame.sample(frac=1.0, random_state=3))  # in no order
    written = publish_ratings(ratings, model, 10, target, partitions=3)
    layout = RedisLayout(redis_settings.key_prefix)
    client = open_redis(redis_settings)
    try:
        stored = {
            int(user): decode_list(raw) for user, raw in client.hgetall(layout.lists(1)).items()
        }
    finally:
        client.close()
    assert written == len(stored)
    assert set(stored) == {u for u, _, _ in rows} - {99}  # no personal list for user 99

    # The executors' lists are the driver's, rounded as stored, and never hold rated movies.
    everyone = compressed_rows(frame["user_id"], frame["movie_id"], frame["rating"])
    expected = lists_for(everyone, model, k=10)
    for position, user in enumerate(everyone.users.tolist()):
        if user in stored:
            movies, scores = zip(*expected.pairs(position), strict=True)
            assert [movie for movie, _ in stored[user].items] == list(movies)
            assert np.allclose([score for _, score in stored[user].items], scores, atol=1e-4)
            assert not {m for m, _ in stored[user].items} & {i for u, i, _ in rows if u == user}
