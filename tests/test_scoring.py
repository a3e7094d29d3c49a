"""Lists for every user, scored and published on the executors, against real Redis."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.sql import SparkSession

from serving.connection import open_redis
from serving.layout import RedisLayout, decode_list
from serving.settings import RedisSettings
from streaming.scoring import publish_lists, score_lists
from streaming.topn import ItemIndex, top_k

pytestmark = pytest.mark.integration


def test_executor_lists_match_driver_top_k_and_reach_redis(
    spark: SparkSession, redis_settings: RedisSettings
) -> None:
    from pyspark.ml.recommendation import ALS

    rng = np.random.default_rng(2)
    rows = [(u, i, float(rng.integers(1, 6))) for u in range(1, 41) for i in range(1, 61)
            if rng.random() < 0.3]  # fmt: skip
    ratings = spark.createDataFrame(rows, ["user_id", "movie_id", "rating"])
    model = ALS(rank=5, maxIter=5, regParam=0.1, seed=1, userCol="user_id",
                itemCol="movie_id").fit(ratings)  # fmt: skip
    item_rows = model.itemFactors.collect()
    items = ItemIndex([r["id"] for r in item_rows], np.array([r["features"] for r in item_rows]))

    lists = score_lists(model.userFactors, items, ratings.select("user_id", "movie_id"), k=10)
    by_user = {r["user_id"]: r for r in lists.collect()}
    assert set(by_user) == {u for u, _, _ in rows}

    user = 7
    factor = np.array(next(r["features"] for r in model.userFactors.collect() if r["id"] == user))
    rated = [i for u, i, _ in rows if u == user]
    expected, _ = top_k(factor[None, :], items, [items.rows(rated)], 10)
    assert by_user[user]["movies"] == expected[0].tolist()
    for row in by_user.values():
        assert not set(row["movies"]) & {i for u, i, _ in rows if u == row["user_id"]}

    assert publish_lists(lists, redis_settings, version=1, source="model") == len(by_user)
    client = open_redis(redis_settings)
    try:
        stored = client.hget(RedisLayout(redis_settings.key_prefix).lists(1), str(user))
    finally:
        client.close()
    assert stored is not None
    assert [movie for movie, _ in decode_list(stored).items] == expected[0].tolist()
