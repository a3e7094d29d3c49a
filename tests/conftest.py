"""Shared fixtures: the real services (one per session), a Spark session, per-test names.

``RECSTREAM_TEST_SERVICES`` chooses where Kafka and Redis come from:

- ``local`` (default): the project's own local services (``make services``), started
  here if they are not running and stopped at the end if this session started them;
- ``testcontainers``: throwaway containers, for machines with a Docker engine;
- ``external``: whatever ``RECSTREAM_KAFKA_BOOTSTRAP_SERVERS`` and ``RECSTREAM_REDIS_URL``
  point at.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from pyspark.sql import DataFrame, SparkSession

from producer.broker import client_options, create_topic, delete_topic, describe_cluster
from producer.errors import BrokerUnavailableError
from producer.events import RatingEvent
from producer.settings import KafkaSettings
from recstream_infra.containers import container_services
from recstream_infra.local_service import ServiceStartError, free_port_block, free_tcp_port
from recstream_infra.services import LocalServices
from recstream_infra.settings import LocalServicesSettings
from serving.connection import open_redis, ping
from serving.errors import RedisUnavailableError
from serving.layout import RedisLayout
from serving.settings import RedisSettings
from streaming.publish.writes import delete_prefix
from streaming.session import build_spark_session
from streaming.settings import ModelSettings, SparkSettings
from tests.movielens_like import write_ml100k_like

_INTEGRATION = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep the folders honest: a test needs the ``integration`` marker exactly when it
    lives under ``tests/integration/``."""
    for item in items:
        inside = _INTEGRATION in item.path.resolve().parents
        marked = item.get_closest_marker("integration") is not None
        if inside != marked:
            where = "tests/integration/" if marked else "tests/unit/"
            msg = f"{item.nodeid}: move it to {where} (or fix its integration marker)"
            raise pytest.UsageError(msg)


@dataclass(frozen=True)
class Services:
    """Where the session's Kafka and Redis are."""

    kafka: KafkaSettings
    redis: RedisSettings
    mode: str


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """Kafka and Redis for the whole test session (see the module docstring)."""
    mode = os.environ.get("RECSTREAM_TEST_SERVICES", "local")
    with contextlib.ExitStack() as cleanup:
        problem: str | None
        try:
            kafka, redis = _provide_services(mode, cleanup)
        except (ServiceStartError, BrokerUnavailableError, RedisUnavailableError) as exc:
            problem = str(exc)
        else:
            problem = None
        # Failing outside the except block keeps pytest's report to our message alone.
        if problem is not None:
            pytest.fail(problem, pytrace=False)
        yield Services(kafka, redis, mode)


def _provide_services(
    mode: str, cleanup: contextlib.ExitStack
) -> tuple[KafkaSettings, RedisSettings]:
    if mode == "local":
        kafka, redis = KafkaSettings(), RedisSettings()
        local = LocalServices(LocalServicesSettings(), kafka, redis)
        for service in local.services:
            if service.start() == "started":
                cleanup.callback(service.stop)
        return kafka, redis
    if mode == "testcontainers":
        version = LocalServicesSettings().kafka_version
        running = cleanup.enter_context(container_services(version))
        return running.kafka, running.redis
    if mode == "external":
        kafka, redis = KafkaSettings(), RedisSettings()
        describe_cluster(kafka)
        ping(redis)
        return kafka, redis
    msg = f"RECSTREAM_TEST_SERVICES must be 'local', 'testcontainers' or 'external', got {mode!r}"
    raise ServiceStartError(msg)


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    """One small local Spark session for the whole test run."""
    settings = SparkSettings(
        master="local[2]",
        shuffle_partitions=2,
        ui_enabled=False,
        console_progress=False,
        checkpoint_dir=str(tmp_path_factory.mktemp("spark-checkpoints")),
    )
    session = build_spark_session(settings)
    yield session
    session.stop()


@pytest.fixture
def kafka_topic(services: Services) -> Iterator[str]:
    """A fresh topic of two partitions, deleted after the test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    create_topic(services.kafka, name, partitions=2, replication_factor=1)
    yield name
    delete_topic(services.kafka, name)


@pytest.fixture
def redis_settings(services: Services) -> Iterator[RedisSettings]:
    """Redis settings with a key prefix of this test's own; its keys are deleted after."""
    prefix = f"test:{uuid.uuid4().hex[:12]}"
    settings = services.redis.model_copy(update={"key_prefix": prefix})
    yield settings
    client = open_redis(settings)
    try:
        delete_prefix(client, RedisLayout(prefix))
    finally:
        client.close()


@pytest.fixture
def redis_client(redis_settings: RedisSettings) -> Iterator[redis.Redis]:
    """A client of the test's Redis (keys under ``redis_settings.key_prefix``)."""
    connection = open_redis(redis_settings)
    yield connection
    connection.close()


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_tcp_port()


@pytest.fixture
def free_port_pair() -> int:
    """A free port whose next port is free too: a Kafka node's clients' and controller's."""
    return free_port_block(2)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A private state folder for services a test starts itself."""
    folder = tmp_path / "state"
    folder.mkdir()
    return folder


@pytest.fixture(scope="session")
def ml100k_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MovieLens 100K for the end-to-end tests.

    By default a folder generated in its layout and shape (``tests/movielens_like.py``),
    so the tests run on any clone. With ``RECSTREAM_TEST_MOVIELENS=real`` (``make
    test-ml100k``) the real one: ``RECSTREAM_ML100K_DIR``, else ``../shared/data/ml-100k``.
    """
    wanted = os.environ.get("RECSTREAM_TEST_MOVIELENS", "generated")
    if wanted == "generated":
        return write_ml100k_like(tmp_path_factory.mktemp("movielens") / "ml-100k")
    if wanted != "real":
        pytest.fail(f"RECSTREAM_TEST_MOVIELENS={wanted!r}: choose generated (default) or real")
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"
    folder = Path(os.environ.get("RECSTREAM_ML100K_DIR", default))
    if not (folder / "u.data").is_file():
        pytest.fail(f"MovieLens 100K not found at {folder}; set RECSTREAM_ML100K_DIR to its folder")
    return folder


def counts(rows: DataFrame) -> tuple[int, int]:
    """Stored ratings and distinct (user, movie) pairs among them: equal when none repeats."""
    return rows.count(), rows.select("user_id", "movie_id").distinct().count()


def fault_line(fault: str, sent: int, stored: int, distinct: int, recovered_s: float) -> str:
    """The line a fault test prints for the docs' fault table (lost and duplicated derived)."""
    lost, duplicated = sent - distinct, stored - distinct
    return (
        f"FAULT | {fault} | sent {sent} | stored {stored} | lost {lost} | "
        f"duplicated {duplicated} | recovered in {recovered_s:.1f} s"
    )


def send_ratings(
    kafka: KafkaSettings, topic: str, users: range, movies: range, sent: int = 0
) -> int:
    """Rate two movies in three for each user, timestamps counting on from ``sent``.

    Returns ``sent`` plus the ratings sent; every one is flushed to the broker.
    """
    producer = KafkaProducer(**client_options(kafka))
    try:
        for user in users:
            for movie in movies:
                if (user * 7 + movie) % 3:
                    rating = float(1 + (user + movie) % 5)
                    event = RatingEvent("ml-100k", user, movie, rating, 880_000_000 + sent)
                    producer.send(topic, key=str(user).encode(), value=event.to_json())
                    sent += 1
        producer.flush()
    finally:
        producer.close()
    return sent


def topic_size(kafka: KafkaSettings) -> int:
    """Events in ``kafka.topic`` so far (0 while it does not exist yet)."""
    consumer = KafkaConsumer(**client_options(kafka))
    try:
        partitions = consumer.partitions_for_topic(kafka.topic) or set()
        ends = consumer.end_offsets([TopicPartition(kafka.topic, p) for p in partitions])
        return sum(ends.values()) if ends else 0
    finally:
        consumer.close()


def read_topic(kafka: KafkaSettings) -> list[bytes]:
    """Every value in ``kafka.topic``, from the start (until 10 s bring nothing new)."""
    consumer = KafkaConsumer(
        kafka.topic, **client_options(kafka), auto_offset_reset="earliest",
        enable_auto_commit=False, consumer_timeout_ms=10_000,
    )  # fmt: skip
    try:
        return [record.value for record in consumer]
    finally:
        consumer.close()


def subprocess_env(**settings: str) -> dict[str, str]:
    """This process's environment without any RECSTREAM_ variable, plus ``settings``.

    For recstream subprocesses: they see only the settings a test gives them.
    """
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    return {**clean, **settings}


LIGHT_RATING_MODEL = {
    "rating_rank": 4,
    "rating_sweeps": 12,
    "rating_burn_in": 4,
    "rating_samples": 4,
}
"""A rating model that costs little: tests of the job's plumbing still publish stars."""


def replay_feed(services: Services, source: Path, topic: str, *extra: str) -> None:
    """Replay a MovieLens-layout folder into ``topic`` with the producer's command."""
    env = subprocess_env(RECSTREAM_KAFKA_BOOTSTRAP_SERVERS=services.kafka.bootstrap_servers)
    done = subprocess.run(
        [sys.executable, "-m", "producer", "replay", "--source", str(source), "--topic", topic,
         "--no-progress", *extra],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def job_env(
    services: Services, redis_settings: RedisSettings, topic: str, folder: Path, **settings: str
) -> dict[str, str]:
    """A streaming-job subprocess's environment: ``job_settings(folder)``, the services'
    addresses and credentials, the topic, then ``settings``."""
    env = subprocess_env(**job_settings(folder))
    env.update(
        RECSTREAM_KAFKA_BOOTSTRAP_SERVERS=services.kafka.bootstrap_servers,
        RECSTREAM_KAFKA_TOPIC=topic,
        RECSTREAM_REDIS_URL=redis_settings.url,
        RECSTREAM_REDIS_KEY_PREFIX=redis_settings.key_prefix,
        **settings,
    )
    if redis_settings.password is not None:
        env["RECSTREAM_REDIS_PASSWORD"] = redis_settings.password.get_secret_value()
    return env


def model_settings(**values: Any) -> ModelSettings:
    """Model settings for tests: the given values over ``LIGHT_RATING_MODEL``."""
    return ModelSettings.model_validate({**LIGHT_RATING_MODEL, **values})


def job_settings(folder: Path) -> dict[str, str]:
    """Settings of a small streaming-job subprocess, its state and checkpoints in ``folder``."""
    return {
        **{
            f"RECSTREAM_MODEL_{name.upper()}": str(value)
            for name, value in LIGHT_RATING_MODEL.items()
        },
        "RECSTREAM_SPARK_MASTER": "local[2]",
        "RECSTREAM_SPARK_SHUFFLE_PARTITIONS": "2",
        "RECSTREAM_SPARK_UI_ENABLED": "false",
        "RECSTREAM_SPARK_CONSOLE_PROGRESS": "false",
        "RECSTREAM_SPARK_CHECKPOINT_DIR": str(folder / "spark-checkpoints"),
        "RECSTREAM_STREAM_STATE_DIR": str(folder / "state"),
    }
