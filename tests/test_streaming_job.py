"""The streaming updater end to end: real Kafka, Spark and Redis, real MovieLens 100K."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pyspark.sql import SparkSession

from producer.broker import delete_topic
from producer.replay import catalog_topic
from serving.connection import open_redis
from serving.layout import RedisLayout, decode_list
from serving.settings import RedisSettings
from streaming.job import StreamingJob
from streaming.settings import ModelSettings, StreamSettings
from tests.conftest import Services

pytestmark = pytest.mark.integration

ML100K_EVENTS = 100_000


def _replay(services: Services, source: Path, topic: str, *extra: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    env["RECSTREAM_KAFKA_BOOTSTRAP_SERVERS"] = services.kafka.bootstrap_servers
    done = subprocess.run(
        [sys.executable, "-m", "producer", "replay", "--source", str(source), "--topic", topic,
         "--no-progress", *extra],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def _ratings(source: Path) -> list[tuple[int, int, float, int]]:
    rows = [line.split("\t") for line in (source / "u.data").read_text().splitlines()]
    ordered = sorted((int(t), int(u), int(m), float(r)) for u, m, r, t in rows)
    return [(u, m, r, t) for t, u, m, r in ordered]


def _check_lists(client: redis.Redis, layout: RedisLayout, rated: dict[int, set[int]]) -> int:
    version = int(client.get(layout.current) or 0)
    stored = client.hgetall(layout.lists(version))
    lists = {int(user): decode_list(value) for user, value in stored.items()}
    assert set(lists) == set(rated), "every user who rated has a list, and only they"
    for user, listed in lists.items():
        movies = {movie for movie, _ in listed.items}
        assert not movies & rated[user], f"user {user}'s list holds a movie they rated"
        assert len(listed.items) == 100
    return version


@pytest.fixture
def ratings_topic(services: Services, kafka_topic: str) -> Iterator[str]:
    yield kafka_topic
    delete_topic(services.kafka, catalog_topic(kafka_topic))


def test_ml100k_in_two_halves_publishes_every_user_and_versions_grow(
    spark: SparkSession,
    services: Services,
    redis_settings: RedisSettings,
    ml100k_dir: Path,
    ratings_topic: str,
    tmp_path: Path,
) -> None:
    kafka = services.kafka.model_copy(update={"topic": ratings_topic})
    stream = StreamSettings(state_dir=tmp_path / "state", max_offsets_per_trigger=30_000)
    model = ModelSettings(retrain_every_ratings=40_000, min_ratings=1_000, max_iter=5)
    everything = _ratings(ml100k_dir)
    layout = RedisLayout(redis_settings.key_prefix)
    client = open_redis(redis_settings)
    try:
        versions = []
        for half, limit in ((1, "50000"), (2, None)):
            _replay(services, ml100k_dir, ratings_topic, *(["--limit", limit] if limit else []))
            job = StreamingJob(spark, kafka, redis_settings, stream, model)
            try:
                job.start(available_now=True).awaitTermination()
            finally:
                job.close()
            sent = everything[: 50_000 * half]
            rated: dict[int, set[int]] = {}
            for user, movie, _, _ in sent:
                rated.setdefault(user, set()).add(movie)
            versions.append(_check_lists(client, layout, rated))
            assert sum(r.valid for r in job.reports) == 50_000
            assert all(r.invalid == 0 for r in job.reports)
            meta = json.loads(client.get(layout.meta(versions[-1])) or b"{}")
            assert meta["evaluation"]["rmse"] < 1.3
            assert meta["evaluation"]["popular"]["precision"] > 0
            assert client.hlen(layout.catalog) == 1682
        assert versions[1] > versions[0] > 0
    finally:
        client.close()
