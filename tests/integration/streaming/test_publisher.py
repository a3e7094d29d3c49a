"""The publisher waits out a Redis that is down, then publishes everything that piled up."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession

from recstream_infra.redis_local import LocalRedis
from recstream_infra.settings import LocalServicesSettings
from serving.connection import open_redis
from serving.layout import BatchStats, ModelMeta, RedisLayout, decode_factors, decode_list
from serving.settings import RedisSettings
from streaming.ingest.history import RecentRatings, compressed_rows
from streaming.model.topn import ItemIndex
from streaming.model.versions import ModelVersion
from streaming.publish.publisher import Publisher
from streaming.settings import ModelSettings, StreamSettings

pytestmark = pytest.mark.integration


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_redis_outage_is_retried_with_backoff_and_nothing_is_lost(
    spark: SparkSession, state_dir: Path, free_port: int
) -> None:
    settings = RedisSettings(url=f"redis://127.0.0.1:{free_port}/0", key_prefix="outage")
    server = LocalRedis(LocalServicesSettings(state_dir=state_dir), settings)
    stored = [pd.DataFrame({"user_id": [1, 1, 2], "movie_id": [10, 11, 12], "rating": 4.0})]

    def ratings(through_batch: int | None) -> DataFrame:
        return spark.createDataFrame(pd.concat(stored, ignore_index=True))

    recent = RecentRatings()  # the users whose fold-in lists wait, as the pipeline keeps them
    recent.update(compressed_rows([1, 1, 2], [10, 11, 12], [4.0, 4.0, 4.0]))
    items = ItemIndex(np.arange(10, 20), np.random.default_rng(1).normal(size=(10, 2)))
    model = ModelVersion(4, items, [(10, 2.0), (12, 1.0)], ModelMeta(version=4, trained_at=0.0))
    clock = _Clock()
    stream = StreamSettings(redis_retry_initial_s=1.0, redis_retry_max_s=3.0)
    publisher = Publisher(spark, ratings, settings, stream, ModelSettings(top_k=5), clock=clock)

    publisher.new_model(model)  # Redis is not running yet
    assert publisher.served([1], 10) is None  # the live check skips, never fails
    assert publisher.flush(recent).state == "failed"
    assert publisher.flush(recent).state == "waiting"  # no hammering inside the backoff
    clock.now += 1.0
    second = publisher.flush(recent)
    assert second.state == "failed"
    assert "next attempt in 2.0 s" in second.error  # the wait doubles ...
    clock.now += 2.0
    assert "next attempt in 3.0 s" in publisher.flush(recent).error  # ... up to the cap
    stored.append(pd.DataFrame({"user_id": [3], "movie_id": [13], "rating": 5.0}))  # meanwhile
    figures = BatchStats(batch_id=5, committed_at=1.0, valid=1, invalid=0, seconds=0.1)
    assert not publisher.record_batch(figures)  # a batch's figures are dropped while down

    assert server.start() == "started"
    try:
        clock.now += 3.0
        back = publisher.flush(recent)
        assert back.state == "published"
        assert back.model_lists == 3  # the version covers the user who rated meanwhile
        layout = RedisLayout("outage")
        client = open_redis(settings)
        try:
            assert client.get(layout.current) == b"4"
            assert set(client.hkeys(layout.lists(4))) == {b"1", b"2", b"3"}
            first = decode_list(client.hget(layout.lists(4), "1") or b"").items[:2]
            # what serving shows: a user's list, or the version's popular list
            assert publisher.served([1, 99], 2) == {1: [m for m, _ in first], 99: [10, 12]}
            # each listed movie is explained by one of the user's rated movies, or by none
            explained = decode_list(client.hget(layout.lists(4), "1") or b"").because
            assert len(explained) == 5 and set(explained) <= {10, 11, None}
            assert any(explained)
            # each movie's nearest movies, written with the version (similar_k of them)
            assert client.hlen(layout.similar(4)) == 10
            nearest = decode_list(client.hget(layout.similar(4), "10") or b"").items
            assert len(nearest) == 9  # every other movie: fewer than similar_k (20)
            table = client.get(layout.factors(4))  # what lists for visitors are folded in against
            assert isinstance(table, bytes)
            assert decode_factors(table)[0].tolist() == list(range(10, 20))
            publisher.users_changed([2], batch_id=7)
            assert publisher.flush(recent).fold_in_lists == 1
            folded = decode_list(client.hget(layout.lists(4), "2") or b"")
            assert folded.source == "fold-in"
            assert set(folded.because) <= {12, None} and len(folded.because) == 5
            assert json.loads(client.get(layout.meta(4)) or b"{}")["last_folded_in_batch"] == 7
            publisher.catalog([(10, "Ten (1990)", ["Drama"])])
            assert publisher.flush(recent).state == "published"
            assert publisher.record_batch(figures.model_copy(update={"batch_id": 6}))
            assert client.lrange(layout.pipeline, 0, -1) == [
                figures.model_copy(update={"batch_id": 6}).to_json()
            ]
        finally:
            client.close()
        # Redis restarts without persistence: everything it held is gone. The next
        # flush (here a fold-in for one user) publishes version 4 and the catalog again.
        server.stop()
        assert server.start() == "started"
        publisher.users_changed([1], batch_id=8)
        again = publisher.flush(recent)
        assert (again.state, again.model_lists) == ("published", 3)
        client = open_redis(settings)
        try:
            assert client.get(layout.current) == b"4"
            assert set(client.hkeys(layout.lists(4))) == {b"1", b"2", b"3"}
            first = decode_list(client.hget(layout.lists(4), "1") or b"").items[:2]
            # what serving shows: a user's list, or the version's popular list
            assert publisher.served([1, 99], 2) == {1: [m for m, _ in first], 99: [10, 12]}
            assert client.hget(layout.catalog, "10") is not None
        finally:
            client.close()
    finally:
        server.stop()
