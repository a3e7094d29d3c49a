"""The job against a replicated Kafka cluster: the broker leading the ratings topic dies.

Three local nodes (``LocalServices`` with ``kafka_brokers=3``, as ``make services
KAFKA_BROKERS=3`` starts them), the ratings topic with 3 copies of each partition and
``min.insync.replicas=2``. During a paced replay the node that leads most of the topic's
partitions is SIGKILLed and started again 10 s later. The replay's idempotent producer
(acks=all) and the job's Kafka source must both follow the new leaders: every event in
the topic once, every rating in the store once, the query never stopped. Prints a
``FAULT`` line.
"""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from pyspark.sql import SparkSession

from producer.broker import client_options
from producer.settings import KafkaSettings
from recstream_infra.kafka_local import LocalKafka
from recstream_infra.local_service import free_port_block, free_tcp_port
from recstream_infra.processes import wait_until
from recstream_infra.services import LocalServices
from recstream_infra.settings import LocalServicesSettings
from serving.settings import RedisSettings
from streaming.job import StreamingJob, stop_between_batches
from streaming.settings import StreamSettings
from tests.conftest import (
    Services,
    counts,
    fault_line,
    model_settings,
    read_topic,
    subprocess_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SENT, FIRST, RATE, DOWN_S = 30_000, 10_000, 1_000, 10.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServices]:
    """Three Kafka nodes (and a Redis nobody uses) on free ports, killed after."""
    ports = [free_port_block(2) for _ in range(3)]  # each node's port and its controller's
    kafka = KafkaSettings(bootstrap_servers=",".join(f"127.0.0.1:{port}" for port in ports))
    local = LocalServicesSettings(
        state_dir=tmp_path_factory.mktemp("kafka-cluster"), kafka_brokers=3
    )
    started = LocalServices(
        local, kafka, RedisSettings(url=f"redis://127.0.0.1:{free_tcp_port()}/0")
    )
    try:
        for node in started.kafka_nodes:
            node.launch()
        for node in started.kafka_nodes:
            node.wait_until_answering()
        yield started
    finally:
        # Killed, not stopped: their state is thrown away, and a clean shutdown of nodes
        # that each wait for a quorum the others are leaving took 35 s of the suite.
        for node in started.kafka_nodes:
            node.kill()


def _leaders(kafka: KafkaSettings) -> Counter[int]:
    """How many of the topic's partitions each node leads."""
    admin = KafkaAdminClient(**client_options(kafka))
    try:
        (topic,) = admin.describe_topics([kafka.topic])
    finally:
        admin.close()
    return Counter(int(partition["leader_id"]) for partition in topic["partitions"])


def test_leader_broker_killed_mid_replay_nothing_lost_or_duplicated_and_the_job_runs_on(
    spark: SparkSession,
    cluster: LocalServices,
    services: Services,
    redis_settings: RedisSettings,
    ml100k_dir: Path,
    tmp_path: Path,
) -> None:
    del services  # Redis comes from the session's services (through redis_settings)
    nodes: dict[int, LocalKafka] = {node.node.node_id: node for node in cluster.kafka_nodes}
    kafka = KafkaSettings(
        bootstrap_servers=",".join(node.address for node in cluster.kafka_nodes),
        topic="ratings", partitions=4, replication_factor=3, min_insync_replicas=2,
    )  # fmt: skip
    env = subprocess_env(
        RECSTREAM_KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        RECSTREAM_KAFKA_PARTITIONS="4",
        RECSTREAM_KAFKA_REPLICATION_FACTOR="3",
        RECSTREAM_KAFKA_MIN_INSYNC_REPLICAS="2",
    )
    replay_command = [sys.executable, "-m", "producer", "replay", "--source", str(ml100k_dir),
                      "--no-progress", "--limit"]  # fmt: skip
    first = subprocess.run(
        [*replay_command, str(FIRST)], env=env, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    job = StreamingJob(
        spark,
        kafka,
        redis_settings,
        StreamSettings(
            state_dir=tmp_path / "job", trigger_interval_s=0.5, max_offsets_per_trigger=5_000
        ),
        model_settings(min_ratings=2_000, retrain_every_ratings=10_000, rank=8, max_iter=3),
    )

    def stored() -> int:
        return sum(report.valid for report in job.reports)

    query = replay = None
    progress = _Progress(stored)
    try:
        query = job.start()
        # The job has stored the first part; the paced replay of the rest resumes after
        # it, and the node dies once the job stores what the replay sends.
        assert wait_until(lambda: stored() >= FIRST, 180), "the first part was not stored"
        replay = subprocess.Popen(
            [*replay_command, str(SENT), "--rate", str(RATE)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert wait_until(lambda: stored() > FIRST, 120), "no paced event stored"
        assert replay.poll() is None, "the replay ended before the fault"
        leaders = _leaders(kafka)
        victim_id, led = leaders.most_common(1)[0]
        victim = nodes[victim_id]
        victim.kill()  # SIGKILL: no clean shutdown, no leadership handed over
        killed_at = time.monotonic()
        time.sleep(DOWN_S)
        assert victim.start() == "started"
        new_leaders = _leaders(kafka)
        output, _ = replay.communicate(timeout=300)
        assert replay.returncode == 0, output
        assert wait_until(lambda: stored() >= SENT, 300), f"{stored():,} of {SENT:,} stored"
        assert query.isActive, "the query stopped"
        assert query.exception() is None
        published_after = [
            r for r in job.reports[-20:] if r.publish.state == "published" and r.valid
        ]
    finally:
        progress.close()
        if replay is not None:
            replay.kill()
        if query is not None:
            stop_between_batches(query)
        job.close()

    assert f"sent {SENT - FIRST:,}" in output, output
    ids = Counter(json.loads(value)["event_id"] for value in read_topic(kafka))
    assert (sum(ids.values()), len(ids)) == (SENT, SENT)  # the topic: each event once
    rows = job.store.stored_rows()
    count, distinct = counts(rows)
    assert (count, distinct) == (SENT, SENT)
    assert published_after, [r.line for r in job.reports]  # lists kept being written
    # the longest time the store did not grow after the kill; the usual time between two
    # stored batches for comparison
    done_at = next(at for at, count in progress.samples if count >= SENT)
    stall = progress.longest_stall(killed_at, done_at)
    usual = statistics.median(progress.gaps(killed_at - 60, done_at))
    fault = (
        f"leader broker SIGKILLed (node {victim_id}, led {led} of 4 partitions; RF 3, "
        f"min.insync 2), restarted after {DOWN_S:.0f} s, replay at {RATE:,}/s; longest "
        f"time without progress {stall:.1f} s (median between batches {usual:.1f} s)"
    )
    print(fault_line(fault, SENT, count, distinct, stall))
    print(f"leaders before {dict(leaders)}, after the kill {dict(new_leaders)}")


class _Progress:
    """Samples a count (the ratings stored) ten times a second in a thread of its own."""

    def __init__(self, count: Callable[[], int]) -> None:
        self.samples: list[tuple[float, int]] = []
        self._count = count
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self.samples.append((time.monotonic(), self._count()))

    def close(self) -> None:
        """Stop sampling, after one last sample."""
        self._stop.set()
        self._thread.join(timeout=10)
        self.samples.append((time.monotonic(), self._count()))

    def gaps(self, start: float, end: float) -> list[float]:
        """The times between the moments the count grew, from ``start`` to ``end``."""
        grew_at = [start]
        grew_at.extend(
            at
            for (_, was), (at, now) in itertools.pairwise(self.samples)
            if now > was and start < at <= end
        )
        return [later - earlier for earlier, later in itertools.pairwise([*grew_at, end])]

    def longest_stall(self, start: float, end: float) -> float:
        """The longest time the count did not grow, from ``start`` to ``end``."""
        return max(self.gaps(start, end))
