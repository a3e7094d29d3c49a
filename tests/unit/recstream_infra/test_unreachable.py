"""Nothing running at the configured address: a clear error within seconds, never a hang."""

from __future__ import annotations

import logging
import time

import pytest

from producer.broker import describe_cluster
from producer.errors import BrokerUnavailableError
from producer.settings import KafkaSettings
from recstream_infra.containers import container_services, docker_problem
from recstream_infra.local_service import ServiceStartError
from serving.connection import ping
from serving.errors import RedisUnavailableError
from serving.settings import RedisSettings
from streaming.errors import ConnectorMissingError
from streaming.session import connector_jars
from streaming.settings import SparkSettings


def test_broker_not_running_fails_fast_naming_the_address(
    free_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port}", connect_timeout_s=2)
    began = time.monotonic()
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(BrokerUnavailableError, match=f"127.0.0.1:{free_port} within 2 s") as caught,
    ):
        describe_cluster(settings)
    assert time.monotonic() - began < 10
    assert "make services" in str(caught.value)
    # Our error is the one message: kafka-python's line per failed attempt stays out of
    # the logs (a demo's console printed a dozen while the broker started).
    chatter = [r.getMessage() for r in caplog.records if r.name.startswith("kafka")]
    assert chatter == []
    # ...and only while the probe runs: the loggers are left as they were.
    assert not logging.getLogger("kafka.net.manager").filters


def test_redis_not_running_fails_fast_naming_the_url(free_port: int) -> None:
    settings = RedisSettings(url=f"redis://127.0.0.1:{free_port}/0", socket_timeout_s=1)
    began = time.monotonic()
    with pytest.raises(RedisUnavailableError, match=f"redis://127.0.0.1:{free_port}/0"):
        ping(settings)
    assert time.monotonic() - began < 5


def test_testcontainers_without_docker_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert "no Docker engine answered at unix:///nonexistent/docker.sock" in (
        docker_problem() or ""
    )
    with (
        pytest.raises(ServiceStartError, match="needs a running Docker engine") as caught,
        container_services("4.1.1"),
    ):
        pass
    assert "RECSTREAM_TEST_SERVICES=local" in str(caught.value)


def test_missing_connector_jars_say_run_make_setup(tmp_path: object) -> None:
    settings = SparkSettings(jar_cache_dir=f"{tmp_path}/no-jars")
    with pytest.raises(
        ConnectorMissingError, match=r"make setup.*RECSTREAM_SPARK_CONNECTOR=packages"
    ):
        connector_jars(settings)
