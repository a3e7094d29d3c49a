"""The local services: start, reuse, status, stop, and every way a start can fail.

Each test runs its own services on free ports with a private state folder, so it
never disturbs the session's services.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from producer.broker import client_options, create_topic
from producer.settings import KafkaSettings
from recstream_infra import services as services_cli
from recstream_infra.kafka_local import LocalKafka
from recstream_infra.local_service import ServiceStartError
from recstream_infra.redis_local import LocalRedis
from recstream_infra.settings import LocalServicesSettings
from serving.connection import open_redis, ping
from serving.errors import RedisUnavailableError
from serving.settings import RedisSettings
from tests.conftest import Services


def _local(state_dir: Path, **overrides: object) -> LocalServicesSettings:
    # The jar cache is the project's, so the broker comes from what make setup resolved.
    return LocalServicesSettings(state_dir=state_dir, **overrides)  # type: ignore[arg-type]


@pytest.mark.integration
def test_cli_check_finds_the_session_services(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], services: Services
) -> None:
    monkeypatch.setenv("RECSTREAM_KAFKA_BOOTSTRAP_SERVERS", services.kafka.bootstrap_servers)
    monkeypatch.setenv("RECSTREAM_REDIS_URL", services.redis.url)
    if services.redis.password is not None:
        monkeypatch.setenv("RECSTREAM_REDIS_PASSWORD", services.redis.password.get_secret_value())
    assert services_cli.main(["check"]) == 0
    out = capsys.readouterr().out
    assert f"kafka  answers at {services.kafka.bootstrap_servers} (" in out
    assert f"redis  answers at {services.redis.url}" in out


@pytest.mark.integration
def test_redis_with_password_starts_reuses_and_stops(state_dir: Path, free_port: int) -> None:
    settings = RedisSettings(url=f"redis://127.0.0.1:{free_port}/0", password="s3cret pass")
    redis = LocalRedis(_local(state_dir), settings)
    assert redis.start() == "started"
    try:
        assert redis.start() == "already running"
        status = redis.status()
        assert (status.state, status.pid) == ("running", redis.process.pid())
        client = open_redis(settings)
        assert client.config_get("save") == {"save": ""}  # persistence off by default
        client.close()
        assert redis.config_file.stat().st_mode & 0o077 == 0  # the password file is private

        wrong = settings.model_copy(update={"password": None})
        with pytest.raises(RedisUnavailableError, match="RECSTREAM_REDIS_PASSWORD"):
            ping(wrong)
        from pydantic import SecretStr

        bad = settings.model_copy(update={"password": SecretStr("not it")})
        with pytest.raises(RedisUnavailableError, match="refused the credentials") as caught:
            ping(bad)
        assert "not it" not in str(caught.value)
    finally:
        pid = redis.process.pid()
        assert redis.stop() is True
    assert redis.status().state == "stopped"
    assert not Path(f"/proc/{pid}").exists()


@pytest.mark.integration
def test_port_taken_by_another_program_is_reported(state_dir: Path, free_port: int) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", free_port))
    squatter.listen()
    try:
        redis = LocalRedis(_local(state_dir), RedisSettings(url=f"redis://127.0.0.1:{free_port}/0"))
        with pytest.raises(ServiceStartError, match=f"port {free_port} .* taken by a program"):
            redis.start()
    finally:
        squatter.close()


class _DyingRedis(LocalRedis):
    """A 'server' that exits at once."""

    def _prepare(self) -> list[str]:
        code = "import sys; print('fatal: cannot start'); sys.exit(3)"
        return [sys.executable, "-c", code]


@pytest.mark.integration
@pytest.mark.integration
def test_process_that_dies_during_start_points_at_its_log(state_dir: Path, free_port: int) -> None:
    redis = _DyingRedis(_local(state_dir), RedisSettings(url=f"redis://127.0.0.1:{free_port}/0"))
    with pytest.raises(ServiceStartError, match=r"exited during start; see .*redis\.log") as caught:
        redis.start()
    assert "fatal: cannot start" in str(caught.value)


@pytest.mark.integration
def test_kafka_that_does_not_answer_in_time_is_stopped(
    state_dir: Path, free_port_pair: int
) -> None:
    local = _local(state_dir, start_timeout_s=0.5, kafka_controller_port=free_port_pair + 1)
    kafka = LocalKafka(local, KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port_pair}"))
    with pytest.raises(ServiceStartError, match=r"did not answer .* within 0.5 s .*kafka\.log"):
        kafka.start()
    assert kafka.process.pid() is None


@pytest.mark.integration
@pytest.mark.slow
def test_kafka_on_its_own_port_serves_kafka_python_and_stops_cleanly(
    state_dir: Path, free_port_pair: int
) -> None:
    settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port_pair}")
    kafka = LocalKafka(_local(state_dir, kafka_controller_port=free_port_pair + 1), settings)
    began = time.monotonic()
    assert kafka.start() == "started"
    try:
        assert time.monotonic() - began < 60
        assert (state_dir / "kafka" / "data" / "meta.properties").is_file()  # formatted once
        assert create_topic(settings, "round-trip", partitions=1) is True
        assert create_topic(settings, "round-trip", partitions=1) is False
        producer = KafkaProducer(**client_options(settings), acks="all")
        producer.send("round-trip", b"hello")
        producer.flush(timeout=30)
        producer.close()
        consumer = KafkaConsumer(
            "round-trip",
            **client_options(settings),
            auto_offset_reset="earliest",
            consumer_timeout_ms=10_000,
        )
        assert [message.value for message in consumer] == [b"hello"]
        consumer.close()
    finally:
        pid = kafka.process.pid()
        assert kafka.stop() is True
    assert not Path(f"/proc/{pid}").exists()
    assert kafka.status().state == "stopped"
