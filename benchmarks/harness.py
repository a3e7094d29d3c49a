"""What the benchmarks share: the local services, a Spark session, replays, cleanup.

Benchmarks run as scripts (``.venv/bin/python benchmarks/bench_x.py``), so this module
is imported by its bare name from the scripts' own folder.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession

from producer.broker import create_topic, delete_topic
from producer.dataset import RatingTable
from producer.replay import catalog_topic
from producer.settings import KafkaSettings
from recstream_infra.services import LocalServices
from serving.connection import open_redis
from serving.layout import RedisLayout
from serving.settings import RedisSettings
from streaming.ingest.history import RatingHistory
from streaming.job import StreamingJob
from streaming.publish.writes import delete_prefix
from streaming.session import build_spark_session
from streaming.settings import ModelSettings, SparkSettings, StreamSettings

ML100K = Path(
    os.environ.get(
        "RECSTREAM_ML100K_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
    )
)
PARTITIONS = 3


@contextmanager
def local_services() -> Iterator[LocalServices]:
    """The local Kafka and Redis: started if they are not running, and stopped again."""
    services = LocalServices()
    started = [service for service in services.services if service.start() == "started"]
    try:
        yield services
    finally:
        for service in reversed(started):
            service.stop()


# (ratings, users, movies) of the MovieLens releases the synthetic feeds imitate.
SHAPES = {
    "1m": (1_000_209, 6_040, 3_706),
    "10m": (10_000_054, 69_878, 10_677),
    "25m": (25_000_095, 162_541, 59_047),
}


def rss_mb(pid: int | str = "self", field_name: str = "VmRSS") -> float:
    """A process's resident memory (``VmRSS``, ``VmHWM`` for the peak, ``RssFile``…) in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return 0.0
    return 0.0


def bench_spark(driver_memory: str = "4g") -> SparkSession:
    """local[2], few shuffle partitions, no UI or progress bars."""
    return build_spark_session(
        SparkSettings(master="local[2]", shuffle_partitions=2, ui_enabled=False,
                      console_progress=False, driver_memory=driver_memory)
    )  # fmt: skip


def drop_prefix(settings: RedisSettings) -> None:
    """Delete every Redis key under the settings' prefix."""
    client = open_redis(settings)
    try:
        delete_prefix(client, RedisLayout(settings.key_prefix))
    finally:
        client.close()


def producer_command(source: str | Path, topic: str, *extra: str) -> list[str]:
    """``python -m producer replay`` for this source and topic, without a progress bar."""
    return [sys.executable, "-m", "producer", "replay", "--source", str(source),
            "--topic", topic, "--no-progress", *extra]  # fmt: skip


def start_producer(source: str | Path, topic: str, *extra: str) -> subprocess.Popen[bytes]:
    """The producer in the background (its output discarded); stop it with ``terminate``."""
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        producer_command(source, topic, *extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_for(condition: str, check: Callable[[], bool], timeout_s: float) -> None:
    """Poll ``check`` every 0.2 s; TimeoutError naming ``condition`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            msg = f"gave up after {timeout_s:.0f} s waiting for {condition}"
            raise TimeoutError(msg)
        time.sleep(0.2)


def replay(source: str | Path, topic: str, *extra: str) -> None:
    """Run the producer to the end; raise with its stderr when it fails."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and module, fixed arguments
        producer_command(source, topic, *extra), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        msg = f"the producer failed ({done.returncode}): {done.stderr[-2000:]}"
        raise RuntimeError(msg)


@dataclass
class Run:
    """One streaming job on a fresh topic, state folder and Redis prefix."""

    kafka: KafkaSettings
    redis: RedisSettings
    stream: StreamSettings
    model: ModelSettings
    job: StreamingJob | None = None


@contextmanager
def fresh_run(
    spark: SparkSession, stream: Mapping[str, object], model: Mapping[str, object]
) -> Iterator[Run]:
    """A topic, state folder and Redis prefix of its own; all removed afterwards."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    kafka = KafkaSettings(topic=name)
    create_topic(kafka, name, partitions=PARTITIONS)
    redis = RedisSettings(key_prefix=name)
    # A version being built beside the stream may still write there as the run ends.
    with tempfile.TemporaryDirectory(
        prefix="recstream-bench-", ignore_cleanup_errors=True
    ) as state:
        run = Run(
            kafka,
            redis,
            StreamSettings(state_dir=Path(state), **stream),  # type: ignore[arg-type]
            ModelSettings(**model),  # type: ignore[arg-type]
        )
        try:
            yield run
        finally:
            if run.job is not None:
                run.job.close()
            drop_prefix(redis)
            delete_topic(kafka, name)
            delete_topic(kafka, catalog_topic(name))


def start_job(spark: SparkSession, run: Run) -> StreamingJob:
    """The streaming job of this run, built in this process (its reports stay readable)."""
    run.job = StreamingJob(spark, run.kafka, run.redis, run.stream, run.model)
    return run.job


def show_batches() -> None:
    """Print the streaming job's per-batch log lines on stderr."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("recstream.streaming").setLevel(logging.INFO)
    for noisy in ("kafka", "py4j"):  # their retries while a service starts are expected
        logging.getLogger(noisy).setLevel(logging.CRITICAL)


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (``share`` in 0..1) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def history_of(table: RatingTable) -> RatingHistory:
    """The driver's rating history of a whole rating table, as the streaming job keeps it."""
    return RatingHistory.from_arrays(
        table.user_ids, table.movie_ids, table.ratings, table.timestamps
    )
