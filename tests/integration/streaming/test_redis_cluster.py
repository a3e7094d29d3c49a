"""The job and serving on a Redis Cluster, through a master's failover.

Six local nodes (``recstream_infra.redis_cluster``, as ``make redis-cluster`` starts
them): three masters, three replicas. Every key of a prefix is under one hash tag, so
the job's version switch (MULTI/EXEC) and serving's lookup scripts run on one node. The
job publishes a version, folds new users in and switches to the next version; then the
master that holds the prefix's slot is SIGKILLed: the API answers 503 (never 500) until
its replica has taken over, then 200 again, and the job publishes on.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pyspark.sql import SparkSession

from recstream_infra.local_service import free_port_block
from recstream_infra.processes import wait_until
from recstream_infra.redis_cluster import LocalRedisCluster, RedisClusterNode
from recstream_infra.settings import LocalServicesSettings
from serving.api import create_app
from serving.connection import open_redis
from serving.layout import RedisLayout
from serving.settings import RedisSettings
from streaming.job import StreamingJob, stop_between_batches
from streaming.publish.writes import current_version, delete_prefix
from streaming.settings import StreamSettings
from tests.conftest import Services, counts, fault_line, model_settings, send_ratings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RECS = "/users/{}/recommendations"
# Longer than the clients' retries last (a few tenths of a second with a 0.5 s socket
# timeout), so requests do meet a slot without a master: they must get 503, not 500.
NODE_TIMEOUT_MS = 5_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    settings = RedisSettings(
        url=f"redis://127.0.0.1:{free_port_block(6, shifted_by=10_000)}/0", cluster=True
    )  # six nodes on consecutive ports, each with its bus port 10000 above
    local = LocalServicesSettings(
        state_dir=tmp_path_factory.mktemp("redis-cluster"),
        redis_cluster_node_timeout_ms=NODE_TIMEOUT_MS,
    )
    started = LocalRedisCluster(local, settings)
    try:
        for _ in started.start():
            pass
        yield started
    finally:
        started.stop()


def _slot_master(cluster: LocalRedisCluster, settings: RedisSettings) -> RedisClusterNode:
    """The node that is master of the slot the prefix's keys hash to."""
    client = open_redis(settings)
    try:
        node = client.get_node_from_key(RedisLayout(settings.key_prefix).current)  # type: ignore[attr-defined]
    finally:
        client.close()
    return next(n for n in cluster.nodes if n.port == int(node.port))


def test_publish_switch_fold_in_and_lookup_on_redis_cluster_with_a_master_failover(
    cluster: LocalRedisCluster,
    spark: SparkSession,
    services: Services,
    kafka_topic: str,
    tmp_path: Path,
) -> None:
    settings = cluster.settings.model_copy(
        update={"key_prefix": "cluster-test", "socket_timeout_s": 0.5}
    )
    layout = RedisLayout(settings.key_prefix)
    kafka = services.kafka.model_copy(update={"topic": kafka_topic})
    stream = StreamSettings(
        state_dir=tmp_path / "job",
        trigger_interval_s=0.5, redis_retry_initial_s=0.5, redis_retry_max_s=2.0,
    )  # fmt: skip
    model = model_settings(min_ratings=200, max_iter=3, rank=4, retrain_every_ratings=300)
    job = StreamingJob(spark, kafka, settings, stream, model)
    query = job.start()
    statuses: Counter[int] = Counter()
    client = open_redis(settings)
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as http:

            def source(user: int) -> str | None:
                answer = http.get(RECS.format(user))
                statuses[answer.status_code] += 1
                return str(answer.json()["source"]) if answer.status_code == 200 else None

            def waited(check: Callable[[], bool], what: str) -> None:
                assert wait_until(check, 180, interval_s=0.2), f"no {what}"

            sent = send_ratings(services.kafka, kafka_topic, range(1, 31), range(1, 31), 0)
            waited(lambda: source(1) == "model", "first version")
            first = current_version(client, layout)
            sent = send_ratings(services.kafka, kafka_topic, range(31, 46), range(1, 31), sent)
            waited(lambda: source(33) in {"fold-in", "model"}, "fold-in list of a new user")
            waited(lambda: (current_version(client, layout) or 0) > (first or 0), "switch")

            # The master of the prefix's slot dies; its replica takes over.
            victim = _slot_master(cluster, settings)
            statuses.clear()
            assert victim.kill()
            killed_at = time.monotonic()
            during: Counter[int] = Counter()
            slowest = 0.0
            while time.monotonic() - killed_at < 60:
                asked = time.monotonic()
                answer = http.get(RECS.format(1))
                slowest = max(slowest, time.monotonic() - asked)
                during[answer.status_code] += 1
                if answer.status_code == 503:
                    assert answer.headers["Retry-After"]
                if answer.status_code == 200 and during[503]:
                    break
                time.sleep(0.1)
            recovered = time.monotonic() - killed_at
            promoted = _slot_master(cluster, settings)

            # The job writes to the new master: a new user's list appears.
            sent = send_ratings(services.kafka, kafka_topic, range(46, 51), range(1, 31), sent)
            waited(lambda: source(48) in {"fold-in", "model"}, "a list written after failover")
            waited(lambda: sum(r.valid for r in job.reports) == sent, "every rating stored")
            assert victim.start() == "started"  # it rejoins, as a replica now
            waited(lambda: victim.role() == "slave" and cluster.healthy(), "the node rejoined")
    finally:
        stop_between_batches(query)
        job.close()
        delete_prefix(client, layout)
        client.close()

    assert during[500] == 0 and statuses[500] == 0, (during, statuses)
    assert during[503] > 0 and during[200] > 0, during  # 503 while no master, then served
    assert promoted.port != victim.port
    rows = job.store.stored_rows()
    stored, distinct = counts(rows)
    assert (stored, distinct) == (sent, sent)
    fault = (
        f"Redis Cluster master of the prefix's slot SIGKILLed (3 masters + 3 replicas, "
        f"cluster-node-timeout {NODE_TIMEOUT_MS / 1000:g} s); API answers until served again "
        f"{dict(during)}, slowest {slowest:.2f} s; replica {promoted.port} promoted"
    )
    print(fault_line(fault, sent, stored, distinct, recovered))
