"""Settings of the Spark side: where the job runs and how its session is built."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from recstream_infra.settings import StrictSettings

__all__ = ["SparkSettings"]


class SparkSettings(StrictSettings):
    """How recstream builds its SparkSession (``RECSTREAM_SPARK_*``)."""

    model_config = SettingsConfigDict(env_prefix="RECSTREAM_SPARK_")

    master: str = Field(
        "local[*]", min_length=1, description="Spark master URL: local[N], spark://host:port, ..."
    )
    app_name: str = Field("recstream", min_length=1, description="Spark application name.")
    driver_memory: str = Field(
        "2g", pattern=r"^\d+[mMgG]$", description="Driver JVM heap (local mode: all of Spark)."
    )
    shuffle_partitions: int = Field(
        8, ge=1, le=10_000, description="spark.sql.shuffle.partitions; small data wants few."
    )
    checkpoint_dir: str = Field(
        ".state/spark/checkpoints",
        min_length=1,
        description="Spark checkpoint directory, a local path or a URL such as hdfs://...",
    )
    connector: Literal["cache", "packages"] = Field(
        "cache",
        description=(
            "Where the Kafka connector comes from: 'cache' = jars resolved by make setup, "
            "'packages' = spark.jars.packages (Spark downloads them at start)."
        ),
    )
    jar_cache_dir: Path = Field(
        Path(".cache/jars"), description="Folder where make setup resolves JVM jars."
    )
    ui_enabled: bool = Field(True, description="Serve the Spark web UI.")
    console_progress: bool = Field(True, description="Draw Spark's console progress bars.")
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = Field(
        "WARN", description="Log level of the Spark JVM."
    )
    extra_conf: dict[str, str] = Field(
        default_factory=dict,
        description='More Spark settings as a JSON object, e.g. {"spark.executor.memory": "4g"}.',
    )
