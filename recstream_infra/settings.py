"""Settings of the local services (Kafka, Redis, a Spark cluster) the project starts itself."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from recstream_base.settings import StrictSettings

__all__ = ["LocalServicesSettings"]


class LocalServicesSettings(StrictSettings):
    """Where the local Kafka broker and Redis server keep their files, and how they start.

    The addresses they listen on are not set here: the broker listens where
    ``RECSTREAM_KAFKA_BOOTSTRAP_SERVERS`` points and Redis where ``RECSTREAM_REDIS_URL``
    points, so clients and services cannot disagree.
    """

    model_config = SettingsConfigDict(env_prefix="RECSTREAM_LOCAL_")

    state_dir: Path = Field(
        Path(".state"), description="Folder for service data, pid files and logs."
    )
    cache_dir: Path = Field(
        Path(".cache"), description="Folder for the Maven repository and resolved broker jars."
    )
    kafka_version: str = Field(
        "4.1.1",
        pattern=r"^\d+\.\d+\.\d+$",
        description="Apache Kafka broker version (kafka_2.13 on Maven Central).",
    )
    kafka_brokers: int = Field(
        1,
        ge=1,
        le=9,
        description=(
            "Kafka nodes `make services` starts (3 for a replicated cluster: internal topics "
            "get 3 copies, 2 in sync); the bootstrap list names all or only the first, the "
            "others following two ports apart."
        ),
    )
    kafka_controller_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="KRaft controller port of a single broker; default: broker port + 1.",
    )
    kafka_heap: str = Field(
        "512m", pattern=r"^\d+[mMgG]$", description="JVM heap of the local broker (-Xmx)."
    )
    redis_persistence: bool = Field(
        False, description="Keep Redis data on disk (RDB snapshots) across restarts."
    )
    redis_reader_username: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="ACL user the local Redis gets for serving: reads under the key prefix only.",
    )
    redis_reader_password: SecretStr | None = Field(
        None, description="Password of that read-only user (needs RECSTREAM_REDIS_PASSWORD too)."
    )
    redis_cluster_node_timeout_ms: int = Field(
        2_000,
        ge=100,
        le=600_000,
        description=(
            "cluster-node-timeout of the local Redis Cluster: how long a master may not answer "
            "before its replica takes over."
        ),
    )
    spark_master_port: int = Field(
        7077, ge=1, le=65535, description="Local Spark standalone master: its port."
    )
    spark_master_ui_port: int = Field(
        8080, ge=1, le=65535, description="Its web UI (and JSON status) port."
    )
    spark_workers: int = Field(
        2, ge=1, le=16, description="Workers `make spark-cluster` starts (ports master+1, ...)."
    )
    spark_worker_cores: int = Field(1, ge=1, le=256, description="Cores each worker offers.")
    spark_worker_memory: str = Field(
        "3g", pattern=r"^\d+[mMgG]$", description="Memory each worker offers its executors."
    )
    start_timeout_s: float = Field(
        90.0, gt=0, description="How long start waits for a service to answer."
    )
