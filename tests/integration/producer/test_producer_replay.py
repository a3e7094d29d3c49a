"""Replaying the real MovieLens 100K into the real broker, including interrupted runs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from producer.broker import client_options, delete_topic
from producer.replay import catalog_topic
from producer.settings import KafkaSettings
from tests.conftest import Services, subprocess_env

pytestmark = pytest.mark.integration

EVENTS = 100_000


def _read_all(settings: KafkaSettings, topic: str) -> list[ConsumerRecord]:
    consumer = KafkaConsumer(**client_options(settings), enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + 120
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            assert time.monotonic() < deadline, "reading the topic took over 120 s"
            for batch in consumer.poll(timeout_ms=1000, max_records=50_000).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def _end_offsets_total(settings: KafkaSettings, topic: str) -> int:
    consumer = KafkaConsumer(**client_options(settings))
    try:
        found = consumer.partitions_for_topic(topic) or set()
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in found])
        return sum(ends.values())
    finally:
        consumer.close()


def _assert_exact_replay(settings: KafkaSettings, topic: str) -> None:
    records = _read_all(settings, topic)
    assert len(records) == EVENTS
    events = [json.loads(record.value) for record in records]
    assert len({event["event_id"] for event in events}) == EVENTS  # none twice
    assert all(record.key == str(event["user_id"]).encode()
               for record, event in zip(records, events, strict=True))  # fmt: skip
    by_partition: dict[int, list[int]] = {}
    for record, event in zip(records, events, strict=True):
        by_partition.setdefault(record.partition, []).append(event["timestamp"])
    assert len(by_partition) > 1
    for stamps in by_partition.values():
        assert stamps == sorted(stamps), "a partition is out of timestamp order"


def _replay_command(source: Path, topic: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "producer", "replay", "--source", str(source),
            "--topic", topic, "--no-progress", *extra]  # fmt: skip


def _environment(services: Services) -> dict[str, str]:
    env = subprocess_env()
    env["RECSTREAM_KAFKA_BOOTSTRAP_SERVERS"] = services.kafka.bootstrap_servers
    return env


@pytest.fixture
def replay_topic(services: Services, kafka_topic: str) -> Iterator[str]:
    # kafka_topic deletes the ratings topic; the catalog topic the replay adds goes too.
    yield kafka_topic
    delete_topic(services.kafka, catalog_topic(kafka_topic))


def test_full_replay_of_ml100k(services: Services, ml100k_dir: Path, replay_topic: str) -> None:
    done = subprocess.run(
        _replay_command(ml100k_dir, replay_topic), env=_environment(services),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "sent 100,000 events" in done.stderr
    _assert_exact_replay(services.kafka, replay_topic)
    movies = _read_all(services.kafka, catalog_topic(replay_topic))
    assert len({record.key for record in movies}) == 1682
    titles = {json.loads(record.value)["title"] for record in movies}
    first = (ml100k_dir / "u.item").read_text(encoding="latin-1").split("|")[1]
    assert first in titles  # "Toy Story (1995)" in the real ML-100K

    again = subprocess.run(
        _replay_command(ml100k_dir, replay_topic), env=_environment(services),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "sent 0 events" in again.stderr  # a finished replay is idempotent
    assert _end_offsets_total(services.kafka, replay_topic) == EVENTS


@pytest.mark.parametrize(
    ("stop_signal", "expected_code"),
    [
        pytest.param(signal.SIGINT, 130, id="ctrl-c"),
        pytest.param(signal.SIGKILL, -9, id="kill-9", marks=pytest.mark.slow),
    ],
)
def test_interrupted_replay_resumes_without_loss_or_duplicates(
    services: Services, ml100k_dir: Path, replay_topic: str, stop_signal: int, expected_code: int
) -> None:
    env = _environment(services)
    first = subprocess.Popen(
        _replay_command(ml100k_dir, replay_topic, "--rate", "8000"), env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while _end_offsets_total(services.kafka, replay_topic) < 25_000:
            assert first.poll() is None, first.communicate()[1]
            assert time.monotonic() < deadline, "the replay made no progress"
            time.sleep(0.2)
        first.send_signal(stop_signal)
        _, stderr = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == expected_code, stderr
    stopped_at = _end_offsets_total(services.kafka, replay_topic)
    assert 25_000 <= stopped_at < EVENTS
    if stop_signal == signal.SIGINT:
        assert f"interrupted: sent {stopped_at:,} events" in stderr  # flushed: all it sent is in

    resumed = subprocess.run(
        _replay_command(ml100k_dir, replay_topic), env=env,
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"resume: {stopped_at:,} events already in" in resumed.stderr
    _assert_exact_replay(services.kafka, replay_topic)
