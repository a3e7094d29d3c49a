"""Fault scenarios against real processes: Redis or the Kafka broker going away.

Each test prints one ``FAULT`` line (fault, events sent, events stored, lost,
duplicated, seconds to recover); the fault table of docs/faults-security.md is filled
from those lines.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pyspark.sql import SparkSession

from producer.settings import KafkaSettings
from recstream_infra.kafka_local import LocalKafka
from recstream_infra.local_service import free_tcp_port
from recstream_infra.processes import wait_until
from recstream_infra.redis_local import LocalRedis
from recstream_infra.settings import LocalServicesSettings
from serving.api import create_app
from serving.settings import RedisSettings
from streaming.job import StreamingJob, stop_between_batches
from streaming.settings import ModelSettings, StreamSettings
from tests.conftest import (
    Services,
    counts,
    fault_line,
    model_settings,
    read_topic,
    send_ratings,
    subprocess_env,
    topic_size,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RECS = "/users/{}/recommendations"
ML100K_EVENTS = 100_000


def _wait_for(check: Callable[[], bool], what: str, timeout_s: float = 120.0) -> float:
    began = time.monotonic()
    assert wait_until(check, timeout_s, interval_s=0.2), f"{what} did not happen in {timeout_s} s"
    return time.monotonic() - began


def test_redis_outage_api_says_503_then_200_and_the_job_catches_up(
    spark: SparkSession,
    services: Services,
    kafka_topic: str,
    state_dir: Path,
    free_port: int,
    tmp_path: Path,
) -> None:
    redis_settings = RedisSettings(
        url=f"redis://127.0.0.1:{free_port}/0", key_prefix="outage", socket_timeout_s=0.5
    )
    server = LocalRedis(LocalServicesSettings(state_dir=state_dir), redis_settings)
    assert server.start() == "started"
    stream = StreamSettings(
        state_dir=tmp_path / "job",
        trigger_interval_s=0.5,
        redis_retry_initial_s=0.5,
        redis_retry_max_s=2.0,
    )
    model = model_settings(min_ratings=200, max_iter=3, rank=4, retrain_every_ratings=1_000_000)
    kafka = services.kafka.model_copy(update={"topic": kafka_topic})
    job = StreamingJob(spark, kafka, redis_settings, stream, model)
    query = job.start()
    statuses: Counter[int] = Counter()
    try:
        with TestClient(create_app(redis_settings), raise_server_exceptions=False) as http:

            def answer(user: int) -> int:
                response = http.get(RECS.format(user))
                statuses[response.status_code] += 1
                if response.status_code == 503:
                    assert response.headers["Retry-After"]
                return int(response.status_code)

            sent = send_ratings(services.kafka, kafka_topic, range(1, 41), range(1, 31))
            _wait_for(lambda: answer(1) == 200, "the first list")

            server.stop()  # Redis goes away for ten seconds ...
            down_at = time.monotonic()
            sent = send_ratings(services.kafka, kafka_topic, range(41, 51), range(1, 31), sent)
            during: Counter[int] = Counter()
            while time.monotonic() - down_at < 10:
                during[answer(45)] += 1
                time.sleep(0.25)
            server.start()  # ... and comes back empty (no persistence)
            back_at = time.monotonic()

            def personal(user: int) -> bool:
                response = http.get(RECS.format(user))
                statuses[response.status_code] += 1
                return bool(response.status_code == 200 and response.json()["source"] != "popular")

            recovered = _wait_for(lambda: personal(1) and personal(45), "lists after the outage")
            _wait_for(lambda: sum(r.valid for r in job.reports) == sent, "every rating stored")
    finally:
        stop_between_batches(query)
        job.close()
        server.stop()

    assert set(during) == {503}, during  # the whole outage: 503 with Retry-After
    assert statuses[500] == 0, statuses
    # The job kept reading and storing ratings while it could not publish them.
    behind = [r for r in job.reports if r.publish.state in {"failed", "waiting"}]
    assert sum(r.valid for r in behind) > 0
    rows = job.store.stored_rows()
    stored, distinct = counts(rows)
    assert (stored, distinct) == (sent, sent)
    print(fault_line("Redis stopped 10 s", sent, stored, distinct, recovered))
    assert back_at - down_at >= 10


def test_kafka_restart_mid_replay_keeps_every_event_once_and_the_job_catches_up(
    spark: SparkSession, state_dir: Path, ml100k_dir: Path, tmp_path: Path
) -> None:
    port, controller = free_tcp_port(), free_tcp_port()
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", topic="ratings", partitions=2)
    broker = LocalKafka(
        LocalServicesSettings(state_dir=state_dir, kafka_controller_port=controller), kafka
    )
    assert broker.start() == "started"
    env = subprocess_env()
    env["RECSTREAM_KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
    env["RECSTREAM_KAFKA_PARTITIONS"] = "2"
    replay = subprocess.Popen(
        [sys.executable, "-m", "producer", "replay", "--source", str(ml100k_dir),
         "--no-progress", "--rate", "4000"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        # mid-replay: a fifth of the events are in, and the replay is still sending
        _wait_for(lambda: topic_size(kafka) >= ML100K_EVENTS // 5, "20,000 events in Kafka", 120)
        assert replay.poll() is None, "the replay ended before the broker stopped"
        broker.stop()  # the broker goes away mid-replay ...
        down_at = time.monotonic()
        time.sleep(6)
        assert broker.start() == "started"  # ... and comes back with its data
        back_at = time.monotonic()
        output, _ = replay.communicate(timeout=300)
        caught_up = time.monotonic() - back_at  # until the replay had sent everything
    finally:
        replay.kill()
    try:
        assert replay.returncode == 0, output
        assert "sent 100,000" in output, output
        events = read_topic(kafka)
        ids = Counter(json.loads(value)["event_id"] for value in events)
        assert (len(events), len(ids)) == (ML100K_EVENTS, ML100K_EVENTS)  # each once

        job = StreamingJob(
            spark, kafka, RedisSettings(url="redis://127.0.0.1:1/0"),
            StreamSettings(state_dir=tmp_path / "job", max_offsets_per_trigger=50_000),
            ModelSettings(min_ratings=10**9),  # storing is what is checked: no model, no Redis
        )  # fmt: skip
        try:
            job.start(available_now=True).awaitTermination()
        finally:
            job.close()
        rows = job.store.stored_rows()
        stored, distinct = counts(rows)
    finally:
        broker.stop()
    assert (stored, distinct) == (ML100K_EVENTS, ML100K_EVENTS)
    fault = f"Kafka broker down {back_at - down_at:.0f} s mid-replay (stop, 6 s, restart)"
    print(fault_line(fault, ML100K_EVENTS, stored, distinct, caught_up))
    print("replay output:", output.strip().splitlines()[-3:])


def test_slow_consumer_lag_grows_during_a_fast_replay_then_drains_with_nothing_lost(
    spark: SparkSession,
    services: Services,
    redis_settings: RedisSettings,
    kafka_topic: str,
    ml100k_dir: Path,
    tmp_path: Path,
) -> None:
    # Micro-batches of at most 10,000 ratings, ALS retrained on the whole store every
    # 10,000: the job keeps up with about 2,500 ratings a second on 2 cores, the replay
    # sends 5,000 a second.
    stream = StreamSettings(
        state_dir=tmp_path / "job", trigger_interval_s=0.5, max_offsets_per_trigger=10_000
    )
    model = model_settings(min_ratings=1_000, retrain_every_ratings=10_000, rank=8, max_iter=3)
    kafka = services.kafka.model_copy(update={"topic": kafka_topic})
    job = StreamingJob(spark, kafka, redis_settings, stream, model)
    query = job.start()
    env = subprocess_env(RECSTREAM_KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers)
    try:
        began = time.monotonic()
        replay = subprocess.run(
            [sys.executable, "-m", "producer", "replay", "--source", str(ml100k_dir),
             "--topic", kafka_topic, "--no-progress", "--rate", "5000"],
            env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert replay.returncode == 0, replay.stderr
        replayed_in = time.monotonic() - began
        at_replay_end = len(job.reports)
        drained = _wait_for(
            lambda: sum(r.valid for r in job.reports) == ML100K_EVENTS, "the drain", 600
        )
    finally:
        stop_between_batches(query)
        job.close()

    reports = list(job.reports)
    lags = [-1 if r.lag is None else r.lag for r in reports]
    assert min(lags) >= 0, lags  # every batch knew its lag
    peak = max(lags)
    assert any(later > earlier for earlier, later in itertools.pairwise(lags)), lags  # grew
    assert peak > stream.max_offsets_per_trigger, lags  # more than a whole batch behind ...
    assert reports[at_replay_end - 1].lag, lags  # ... was still behind when the replay ended
    assert lags[-1] == 0, lags  # ... and caught up
    for report in reports:
        print(report.line)
    # Versions are built beside the stream one at a time: while the job lags, each one
    # started is switched in (in a batch or between two) before the next starts, so the
    # batches' commits show it current (all but the last, perhaps switched at the stop).
    started = sum(bool(r.retrain) for r in reports)
    used = [c.model_version for c in job.store.commits() if c.model_version is not None]
    assert started >= 3, [r.line for r in reports]
    assert len(set(used)) >= started - 1 and used == sorted(used), used
    rows = job.store.stored_rows()
    stored, distinct = counts(rows)
    assert (stored, distinct) == (ML100K_EVENTS, ML100K_EVENTS)
    assert sum(r.invalid for r in reports) == 0
    fault = (
        f"slow consumer: ML-100K replayed at 5,000/s in {replayed_in:.0f} s, batches of "
        f"10,000, a retrain every 10,000; peak lag {peak:,}"
    )
    print(fault_line(fault, ML100K_EVENTS, stored, distinct, drained))
    print("lag per batch:", lags)
