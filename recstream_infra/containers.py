"""Kafka and Redis as throwaway containers (testcontainers), for machines with Docker.

The Kafka container is the official ``apache/kafka`` image at the same version as the
local broker, in KRaft mode; its listener is published on a host port chosen before
start, because a Kafka broker must advertise the address clients will use.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from producer.broker import describe_cluster
from producer.errors import BrokerUnavailableError
from producer.settings import KafkaSettings
from recstream_infra.local_service import ServiceStartError, free_tcp_port
from serving.settings import RedisSettings

__all__ = ["ContainerServices", "container_services", "docker_problem"]

_REDIS_IMAGE = "redis:7.4"


@dataclass(frozen=True)
class ContainerServices:
    """Settings that point at the running containers."""

    kafka: KafkaSettings
    redis: RedisSettings


def docker_problem() -> str | None:
    """None when a Docker engine answers; otherwise why it does not."""
    import docker
    from docker.errors import DockerException

    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except DockerException as exc:
        return f"no Docker engine answered at {where} ({type(exc).__name__})"
    return None


@contextmanager
def container_services(
    kafka_version: str, start_timeout_s: float = 120.0
) -> Iterator[ContainerServices]:
    """Start Kafka and Redis containers, yield settings for them, remove them afterwards.

    Raises:
        ServiceStartError: Docker is not available, or the broker did not answer in time.
    """
    problem = docker_problem()
    if problem is not None:
        msg = (
            f"RECSTREAM_TEST_SERVICES=testcontainers needs a running Docker engine: {problem}. "
            "Without Docker, use RECSTREAM_TEST_SERVICES=local (the default), which runs Kafka "
            "and Redis as local processes, or RECSTREAM_TEST_SERVICES=external with "
            "RECSTREAM_KAFKA_BOOTSTRAP_SERVERS and RECSTREAM_REDIS_URL."
        )
        raise ServiceStartError(msg)

    from testcontainers.community.redis import RedisContainer
    from testcontainers.core.container import DockerContainer

    kafka_port = free_tcp_port()
    kafka = (
        DockerContainer(f"apache/kafka:{kafka_version}")
        .with_bind_ports(9092, kafka_port)
        .with_envs(
            KAFKA_NODE_ID="1",
            KAFKA_PROCESS_ROLES="broker,controller",
            KAFKA_LISTENERS="PLAINTEXT://:9092,CONTROLLER://:9093",
            KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://127.0.0.1:{kafka_port}",
            KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
            KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
            KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
            KAFKA_AUTO_CREATE_TOPICS_ENABLE="false",
            KAFKA_LOG_RETENTION_MS="-1",
        )
    )
    redis_container = RedisContainer(_REDIS_IMAGE)
    with redis_container, kafka:
        kafka_settings = KafkaSettings(
            bootstrap_servers=f"127.0.0.1:{kafka_port}", connect_timeout_s=2.0
        )
        _wait_for_broker(kafka_settings, start_timeout_s)
        redis_host = redis_container.get_container_host_ip()
        redis_port = redis_container.get_exposed_port(6379)
        yield ContainerServices(
            kafka=kafka_settings,
            redis=RedisSettings(url=f"redis://{redis_host}:{redis_port}/0"),
        )


def _wait_for_broker(settings: KafkaSettings, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            describe_cluster(settings)
        except BrokerUnavailableError as exc:
            if time.monotonic() > deadline:
                msg = f"the Kafka container did not answer within {timeout_s:g} s: {exc}"
                raise ServiceStartError(msg) from exc
            time.sleep(0.5)
        else:
            return
