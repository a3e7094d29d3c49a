"""The one factory that builds every SparkSession of recstream."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pyspark
from pyspark.sql import SparkSession

from streaming.errors import ConnectorMissingError
from streaming.settings import SparkSettings

__all__ = [
    "NATIVE_BLAS",
    "RETRAIN_POOL",
    "STREAM_POOL",
    "build_spark_session",
    "connector_coordinate",
    "connector_dir",
    "connector_jars",
    "linear_algebra",
    "submitted",
]

NATIVE_BLAS = "dev.ludovic.netlib.blas.JNIBLAS"
# Fair scheduler pools (fairscheduler.xml beside this module): the micro-batches' tasks
# go ahead of those of a retrain built beside the stream.
STREAM_POOL = "stream"
RETRAIN_POOL = "retrain"
_POOLS_FILE = Path(__file__).with_name("fairscheduler.xml")

_REDACTED_OPTIONS = "(?i)url|jaas|password|secret|token"
_REDACTED_TEXT = r'(?i)password\s*=\s*"(?:[^"\\]|\\.)*"'


_ROCKSDB_STATE = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
_STATE_SERVER_LOGGER = (
    "org.apache.spark.sql.execution.python.streaming.TransformWithStateInPySparkStateServer"
)


def connector_coordinate() -> str:
    """Maven coordinate of Spark's Kafka connector matching the installed pyspark."""
    return f"org.apache.spark:spark-sql-kafka-0-10_2.13:{pyspark.__version__}"


def connector_dir(jar_cache_dir: Path, spark_version: str) -> Path:
    """Where the connector jars for one Spark version live inside the jar cache."""
    return jar_cache_dir / f"spark-sql-kafka-0-10_2.13-{spark_version}"


def connector_jars(settings: SparkSettings) -> list[Path]:
    """The resolved connector jars for the installed pyspark.

    Raises:
        ConnectorMissingError: ``make setup`` has not resolved them into the jar cache.
    """
    folder = connector_dir(settings.jar_cache_dir, pyspark.__version__).resolve()
    jars = sorted(folder.glob("*.jar"))
    if not (folder / ".complete").is_file() or not jars:
        msg = (
            f"Spark's Kafka connector for pyspark {pyspark.__version__} is not in {folder}; "
            "run `make setup` to resolve it, or set RECSTREAM_SPARK_CONNECTOR=packages to let "
            "Spark download it from Maven Central at start"
        )
        raise ConnectorMissingError(msg)
    return jars


def submitted() -> bool:
    """Whether ``spark-submit`` started this Python process (its JVM is already running)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def build_spark_session(settings: SparkSettings | None = None) -> SparkSession:
    """Build (or return the running) SparkSession with the Kafka source on its classpath.

    The master comes from settings, so the same job runs in ``local[*]`` or against a
    cluster; a checkpoint directory is always set because ALS without one overflows
    the stack after many iterations. Under ``spark-submit`` its ``--master`` holds unless
    ``RECSTREAM_SPARK_MASTER`` is set, and the connector must come with its ``--jars``
    (the JVM is started before any setting here can add it to the driver's classpath).

    Raises:
        ConnectorMissingError: the Kafka connector is not where the settings say, or
            ``spark-submit`` was not given it.
    """
    settings = settings or SparkSettings()
    by_submit = submitted()
    # Python workers must run the interpreter that has recstream's dependencies.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    # Native BLAS threads would compete with Spark's own task threads (Spark's linear
    # algebra guide): one per task. Local mode's executor is the driver's JVM, which
    # inherits this environment; a cluster's executors get it through executorEnv.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

    builder = SparkSession.builder
    if not by_submit or "master" in settings.model_fields_set:
        builder = builder.master(settings.master)
    builder = (
        builder.appName(settings.app_name)
        .config("spark.driver.memory", settings.driver_memory)
        .config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
        .config("spark.ui.enabled", str(settings.ui_enabled).lower())
        .config("spark.ui.showConsoleProgress", str(settings.console_progress).lower())
        .config("spark.sql.session.timeZone", "UTC")
        # Every user's ratings live in the streaming query's state (streaming.ingest.state):
        # RocksDB keeps it on the executors' disks, with small per-batch changelogs.
        .config("spark.sql.streaming.stateStore.providerClass", _ROCKSDB_STATE)
        .config("spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled", "true")
        # Each read of the store by path lists its batch folders into Spark's shared file
        # status cache under a key of its own, which no later read looks up: up to 250 MB
        # of the driver JVM's heap kept for nothing (the soak's heap grew by 100 MB in an
        # hour with ~2,600 folders). Off, each read keeps its listing only while it lives.
        .config("spark.sql.hive.filesourcePartitionFileCacheSize", "0")
        # Past this many folders Spark lists them in a job of a task a folder: 9.7 s for the
        # soak's 2,600 batch folders where the driver takes 0.6 s (benchmarks/bench_store.py).
        # The store reads its segments and the batch folders since the last compaction.
        .config("spark.sql.sources.parallelPartitionDiscovery.threshold", "1024")
        .config("spark.scheduler.mode", "FAIR")
        .config("spark.scheduler.allocation.file", _POOLS_FILE.resolve().as_uri())
        .config("spark.executorEnv.OPENBLAS_NUM_THREADS", os.environ["OPENBLAS_NUM_THREADS"])
        # Source options whose key matches are shown as *********(redacted) in plans and
        # the UI; the Kafka source's JAAS line holds the SASL password.
        .config("spark.sql.redaction.options.regex", _REDACTED_OPTIONS)
        .config("spark.sql.redaction.string.regex", _REDACTED_TEXT)
    )
    # Under spark-submit the connector comes with its --jars or --packages (checked below).
    if not by_submit and settings.connector == "cache":
        builder = builder.config(
            "spark.jars", ",".join(str(jar) for jar in connector_jars(settings))
        )
    elif not by_submit:
        builder = builder.config("spark.jars.packages", connector_coordinate()).config(
            "spark.jars.ivy", str((settings.jar_cache_dir / "ivy").resolve())
        )
    for key, value in settings.extra_conf.items():
        builder = builder.config(key, value)

    spark = builder.getOrCreate()
    if by_submit and not _has_connector(spark):
        msg = (
            "spark-submit was not given Spark's Kafka connector; add "
            '--jars "$(.venv/bin/python -m streaming connector-jars)" (after `make setup`), '
            f"or --packages {connector_coordinate()}"
        )
        raise ConnectorMissingError(msg)
    spark.sparkContext.setLogLevel(settings.log_level)
    _quiet_state_server(spark)
    spark.sparkContext.setCheckpointDir(_local_or_url(settings.checkpoint_dir))
    return spark


def _quiet_state_server(spark: SparkSession) -> None:
    """Keep the users' state server to errors in this JVM's log.

    It warns at every read of a key it does not hold, which is every user's first
    rating (``streaming.ingest.state``). On a cluster the executors log it in their own.
    """
    jvm = spark.sparkContext._jvm
    if jvm is None:
        return
    level = jvm.org.apache.logging.log4j.Level.toLevel("ERROR")
    jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(_STATE_SERVER_LOGGER, level)


def linear_algebra(spark: SparkSession) -> str:
    """The BLAS implementation Spark's ALS runs on in the driver's JVM.

    ``NATIVE_BLAS`` is the native library (``libblas.so.3``, which
    ``make setup`` installs as OpenBLAS); any other name is a pure-Java fallback.
    """
    jvm: Any = spark.sparkContext._jvm  # py4j's gateway: attributes name Java packages
    return str(jvm.dev.ludovic.netlib.blas.BLAS.getInstance().getClass().getName())


def _has_connector(spark: SparkSession) -> bool:
    """Whether the session's jars or packages name Spark's Kafka connector."""
    conf = spark.sparkContext.getConf()
    named = conf.get("spark.jars", "") + "," + conf.get("spark.jars.packages", "")
    return "spark-sql-kafka-0-10" in named


def _local_or_url(location: str) -> str:
    """A URL (hdfs://, s3a://, file://) as given; a plain path made absolute and created."""
    if "://" in location:
        return location
    folder = Path(location).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder)
