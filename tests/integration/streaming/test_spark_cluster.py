"""The streaming job on a Spark standalone cluster started by the project's own command.

A master and two one-core workers run on this machine (``recstream_infra.spark_cluster``,
as ``make spark-cluster`` starts them). A synthetic feed goes through the job twice: the
first half with ``RECSTREAM_SPARK_MASTER=spark://...``, the rest through ``spark-submit``
exactly as docs/operations.md says; the store must hold every rating once, every user a
list, and the master must have run both applications on its workers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from producer.broker import delete_topic
from producer.replay import catalog_topic
from recstream_infra.local_service import free_tcp_port
from recstream_infra.processes import wait_until
from recstream_infra.settings import LocalServicesSettings
from recstream_infra.spark_cluster import LocalSparkCluster
from serving.connection import open_redis
from serving.layout import RedisLayout
from serving.settings import RedisSettings
from streaming.ingest.store import RatingStore, read_commits
from tests.conftest import Services, counts, fault_line, job_env, replay_feed, subprocess_env
from tests.movielens_like import write_ml100k_like

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
FIRST, TOTAL = 20_000, 40_000
RATE = 1_000  # events a second of the worker-kill test's replay


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSparkCluster]:
    master, ui = free_tcp_port(), free_tcp_port()
    settings = LocalServicesSettings(
        state_dir=tmp_path_factory.mktemp("spark-cluster"), spark_master_port=master,
        spark_master_ui_port=ui, spark_workers=2, spark_worker_cores=1,
        spark_worker_memory="1g",
    )  # fmt: skip
    started = LocalSparkCluster(settings)
    try:
        for _ in started.start():  # each daemon in turn, until every worker registered
            pass
        yield started
    finally:
        started.stop()


def _job_env(
    services: Services, redis_settings: RedisSettings, topic: str, tmp: Path
) -> dict[str, str]:
    return job_env(
        services, redis_settings, topic, tmp,
        RECSTREAM_STREAM_MAX_OFFSETS_PER_TRIGGER="10000",
        RECSTREAM_MODEL_MIN_RATINGS="5000",
        RECSTREAM_MODEL_RETRAIN_EVERY_RATINGS="15000",
        RECSTREAM_MODEL_MAX_ITER="3",
        # Executors of 1 GB on both one-core workers.
        RECSTREAM_SPARK_EXTRA_CONF=json.dumps(
            {"spark.executor.memory": "1g", "spark.executor.cores": "1", "spark.cores.max": "2"}
        ),
        PYSPARK_PYTHON=sys.executable,  # the Python spark-submit starts the driver with
    )  # fmt: skip


def test_the_job_runs_on_a_standalone_cluster_directly_and_through_spark_submit(
    cluster: LocalSparkCluster,
    services: Services,
    redis_settings: RedisSettings,
    kafka_topic: str,
    tmp_path: Path,
) -> None:
    source = write_ml100k_like(tmp_path / "ml-100k")
    env = _job_env(services, redis_settings, kafka_topic, tmp_path)
    try:
        replay_feed(services, source, kafka_topic, "--limit", str(FIRST))
        direct = subprocess.run(
            [sys.executable, "-m", "streaming", "run", "--available-now"],
            env={**env, "RECSTREAM_SPARK_MASTER": cluster.master.url},
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert direct.returncode == 0, direct.stderr[-3000:]

        replay_feed(services, source, kafka_topic, "--limit", str(TOTAL))  # after the first half
        jars = subprocess.run(
            [sys.executable, "-m", "streaming", "connector-jars"],
            env=env, capture_output=True, text=True, timeout=60, check=True,
        ).stdout.strip()  # fmt: skip
        submit = Path(sys.executable).parent / "spark-submit"
        env.pop("RECSTREAM_SPARK_MASTER")  # spark-submit's --master decides
        submitted = subprocess.run(
            [str(submit), "--master", cluster.master.url, "--jars", jars,
             str(ROOT / "scripts" / "submit_job.py"), "run", "--available-now"],
            env=env, capture_output=True, text=True, timeout=600, check=False, cwd=ROOT,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr[-3000:]
    finally:
        delete_topic(services.kafka, catalog_topic(kafka_topic))

    commits = read_commits(tmp_path / "state" / "store" / "commits")
    assert sum(c.valid for c in commits) == TOTAL and all(c.invalid == 0 for c in commits)
    rated = {int(line.split("\t")[0]) for line in
             (source / "u.data").read_text().splitlines()}  # fmt: skip
    layout = RedisLayout(redis_settings.key_prefix)
    client = open_redis(redis_settings)
    try:
        version = int(client.get(layout.current) or 0)
        assert version > 0
        listed = {int(user) for user in client.hkeys(layout.lists(version))}
    finally:
        client.close()
    assert listed and listed <= rated
    state = cluster.master.state() or {}
    finished = [app for app in state.get("completedapps", []) if app.get("name")]
    assert len(finished) >= 2, state  # both runs were applications of this master
    assert all(app.get("cores", 0) >= 1 for app in finished[-2:])
    print(
        f"CLUSTER | master {cluster.master.url}, {len(state.get('workers', []))} workers | "
        f"{TOTAL} ratings in {len(commits)} batches, version {version}, {len(listed)} lists | "
        f"apps: {[app.get('name') for app in finished]}"
    )


def _app_cores(cluster: LocalSparkCluster) -> int:
    """Cores the master gives the one running application (0 when none runs)."""
    apps = (cluster.master.state() or {}).get("activeapps", [])
    return sum(int(app.get("cores", 0)) for app in apps)


def _stored(commits: Path) -> int:
    return sum(c.valid for c in read_commits(commits)) if commits.is_dir() else 0


def test_a_worker_killed_mid_replay_its_tasks_rerun_and_the_job_goes_on(
    cluster: LocalSparkCluster,
    spark: SparkSession,
    services: Services,
    redis_settings: RedisSettings,
    kafka_topic: str,
    tmp_path: Path,
) -> None:
    """SIGKILL a worker and its executor mid-replay; restart the worker 5 s later.

    The driver reruns the lost tasks on the other executor, the master starts a new
    executor on the restarted worker, and the job never stops: every rating stored
    once, and versions keep being switched in after the kill.
    """
    source = write_ml100k_like(tmp_path / "ml-100k")
    env = _job_env(services, redis_settings, kafka_topic, tmp_path)
    env["RECSTREAM_SPARK_MASTER"] = cluster.master.url
    env["RECSTREAM_STREAM_TRIGGER_INTERVAL_S"] = "0.5"
    env["RECSTREAM_MODEL_RETRAIN_EVERY_RATINGS"] = "8000"  # versions keep coming after the kill
    commits = tmp_path / "state" / "store" / "commits"
    current = RedisLayout(redis_settings.key_prefix).current
    client = open_redis(redis_settings)
    producer_env = subprocess_env(
        RECSTREAM_KAFKA_BOOTSTRAP_SERVERS=services.kafka.bootstrap_servers
    )
    replay_feed(services, source, kafka_topic, "--limit", str(FIRST))  # the first version's
    job = subprocess.Popen(
        [sys.executable, "-m", "streaming", "run"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    replay: subprocess.Popen[str] | None = None
    victim = cluster.workers[0]
    try:
        # the first version is served and both executors work; then the paced replay
        # of the rest begins (it resumes after the events already in the topic)
        assert wait_until(lambda: int(client.get(current) or 0) > 0 and _app_cores(cluster) == 2,
                          240), "no first version on two executors"  # fmt: skip
        replay = subprocess.Popen(
            [sys.executable, "-m", "producer", "replay", "--source", str(source), "--topic",
             kafka_topic, "--no-progress", "--limit", str(TOTAL), "--rate", str(RATE)],
            env=producer_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert wait_until(lambda: _stored(commits) > FIRST, 120), "no paced event stored"
        assert replay.poll() is None, "the replay ended before the fault"
        version_at_kill, stored_at_kill = int(client.get(current) or 0), _stored(commits)
        assert victim.kill()  # the worker, its executor and their Python workers
        killed_at = time.monotonic()
        assert wait_until(lambda: _stored(commits) > stored_at_kill, 240), "no batch after the kill"
        first_batch_after = time.monotonic() - killed_at
        time.sleep(max(0.0, 5.0 - (time.monotonic() - killed_at)))
        assert victim.start() == "started"
        assert wait_until(lambda: _app_cores(cluster) == 2, 120), (
            "no executor replaced the lost one"
        )
        replaced_after = time.monotonic() - killed_at
        assert replay.wait(timeout=300) == 0, replay.communicate()[1]
        assert wait_until(lambda: _stored(commits) >= TOTAL, 300), _stored(commits)
        # lists kept being rebuilt: a version built after the kill is switched in
        assert wait_until(lambda: int(client.get(current) or 0) > version_at_kill, 180)
        assert job.poll() is None, job.communicate()[1][-3000:]  # it never stopped
        version_after = int(client.get(current) or 0)
    finally:
        if replay is not None:
            replay.kill()
        client.close()
        job.send_signal(signal.SIGTERM)  # what a cluster manager sends: a clean stop too
        try:
            _, log = job.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            _, log = job.communicate()
        finally:
            delete_topic(services.kafka, catalog_topic(kafka_topic))

    assert "interrupted: stopping after the current micro-batch" in log, log[-3000:]
    assert job.returncode == 130, log[-3000:]

    assert "Lost executor" in log or "lost executor" in log.lower(), log[-3000:]
    rows = RatingStore(spark, tmp_path / "state" / "store").stored_rows()
    stored, distinct = counts(rows)
    assert (stored, distinct) == (TOTAL, TOTAL)
    fault = (
        f"Spark worker SIGKILLed with its executor mid-replay ({RATE:,}/s; 2 workers of 1 "
        f"core), restarted 5 s later; first batch after the kill in {first_batch_after:.1f} s, "
        f"a new executor on the restarted worker after {replaced_after:.1f} s; versions "
        f"{version_at_kill} -> {version_after}"
    )
    print(fault_line(fault, TOTAL, stored, distinct, first_batch_after))
