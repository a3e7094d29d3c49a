"""Lists for every user, scored and published on the executors, against real Redis."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession

from serving.connection import open_redis
from serving.layout import RedisLayout, decode_list
from serving.settings import RedisSettings
from streaming.ingest.history import RatingHistory
from streaming.model.lists import FoldIn, lists_for
from streaming.model.topn import ItemIndex
from streaming.publish.executors import (
    ListTarget,
    publish_histories,
    publish_lists,
    score_histories,
)

pytestmark = pytest.mark.integration


def test_executor_lists_match_driver_lists_and_reach_redis(
    spark: SparkSession, redis_settings: RedisSettings
) -> None:
    rng = np.random.default_rng(2)
    rows = [(u, i, float(rng.integers(1, 6))) for u in range(1, 41) for i in range(1, 61)
            if rng.random() < 0.3]  # fmt: skip
    rows.append((99, 1000, 4.0))  # a user whose only movie the model does not know
    history = RatingHistory()
    frame = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating"])
    history.add(frame.assign(timestamp=0, batch_id=0, offset=range(len(frame))))
    items = ItemIndex(np.arange(1, 61), rng.normal(size=(60, 5)))
    model = FoldIn(items, reg_param=0.1)

    everyone = history.everyone()
    lists = score_histories(spark, everyone, model, k=10, partitions=3)
    by_user = {r["user_id"]: r for r in lists.collect()}
    assert set(by_user) == {u for u, _, _ in rows} - {99}  # no personal list for user 99

    expected = lists_for(everyone, model, k=10)
    for position, user in enumerate(everyone.users.tolist()):
        if user in by_user:
            assert list(zip(by_user[user]["movies"], by_user[user]["scores"], strict=True)) == (
                expected.pairs(position)
            )
            assert not set(by_user[user]["movies"]) & {i for u, i, _ in rows if u == user}

    # Both ways of publishing write the same lists: via the DataFrame, and in one pass.
    assert publish_lists(lists, ListTarget(redis_settings, 1, "model")) == len(by_user)
    one_pass = ListTarget(redis_settings, 2, "model")
    assert publish_histories(spark, everyone, model, 10, one_pass, partitions=3) == len(by_user)
    layout = RedisLayout(redis_settings.key_prefix)
    client = open_redis(redis_settings)
    try:
        for version in (1, 2):
            stored = client.hgetall(layout.lists(version))
            assert len(stored) == len(by_user)
            assert [movie for movie, _ in decode_list(stored[b"7"]).items] == by_user[7]["movies"]
    finally:
        client.close()
