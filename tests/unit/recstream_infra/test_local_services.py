"""The local services: start, reuse, status, stop, and every way a start can fail.

Each test runs its own services on free ports with a private state folder, so it
never disturbs the session's services.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from producer.settings import KafkaSettings
from recstream_infra import services as services_cli
from recstream_infra.kafka_local import LocalKafka, new_cluster_id
from recstream_infra.local_service import ServiceStartError
from recstream_infra.redis_local import LocalRedis
from recstream_infra.services import LocalServices
from recstream_infra.settings import LocalServicesSettings
from serving.settings import RedisSettings


def _local(state_dir: Path, **overrides: object) -> LocalServicesSettings:
    # The jar cache is the project's, so the broker comes from what make setup resolved.
    return LocalServicesSettings(state_dir=state_dir, **overrides)  # type: ignore[arg-type]


def test_cluster_id_never_begins_with_a_dash_which_the_storage_tool_reads_as_an_option() -> None:
    # 0xF8 puts 62 in the first six bits: "-" in the URL-safe alphabet.
    dash_first = bytes([0xF8]) + bytes(15)
    assert base64.urlsafe_b64encode(dash_first).decode().startswith("-")
    cluster_id = new_cluster_id(dash_first)
    assert not cluster_id.startswith("-")
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    plain = bytes(range(16))
    assert new_cluster_id(plain) == base64.urlsafe_b64encode(plain).decode().rstrip("=")


@pytest.mark.parametrize("host", ["10.1.2.3", "[::1]"])
def test_address_other_than_ipv4_loopback_is_refused(state_dir: Path, host: str) -> None:
    with pytest.raises(ServiceStartError, match=r"only runs on 127\.0\.0\.1.*:6379"):
        LocalRedis(_local(state_dir), RedisSettings(url=f"redis://{host}:6379/0"))


def test_kafka_without_resolved_jars_says_run_make_setup(state_dir: Path, free_port: int) -> None:
    local = _local(state_dir, cache_dir=state_dir / "empty-cache")
    kafka = LocalKafka(local, KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port}"))
    with pytest.raises(ServiceStartError, match="make setup"):
        kafka.start()
    assert kafka.process.pid() is None


def test_status_of_nothing_running(state_dir: Path, free_port: int) -> None:
    local = LocalServices(
        _local(state_dir),
        KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port}"),
        RedisSettings(url=f"redis://127.0.0.1:{free_port}/0"),
    )
    assert [(status.name, status.state) for status in local.status()] == [
        ("redis", "stopped"),
        ("kafka", "stopped"),
    ]
    assert local.stop() == {"kafka": False, "redis": False}


def test_cli_status_and_down_read_the_environment(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    state_dir: Path,
    free_port: int,
) -> None:
    monkeypatch.setenv("RECSTREAM_LOCAL_STATE_DIR", str(state_dir))
    monkeypatch.setenv("RECSTREAM_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port}")
    monkeypatch.setenv("RECSTREAM_REDIS_URL", f"redis://127.0.0.1:{free_port}/0")
    assert services_cli.main(["status"]) == 0
    assert services_cli.main(["down"]) == 0
    out = capsys.readouterr().out
    assert f"redis  stopped              127.0.0.1:{free_port}" in out
    assert "kafka  was not running (nothing to stop)" in out


def test_cli_check_names_both_unreachable_addresses(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], free_port: int
) -> None:
    monkeypatch.setenv("RECSTREAM_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port}")
    monkeypatch.setenv("RECSTREAM_KAFKA_CONNECT_TIMEOUT_S", "1")
    monkeypatch.setenv("RECSTREAM_REDIS_URL", f"redis://127.0.0.1:{free_port}/0")
    began = time.monotonic()
    assert services_cli.main(["check"]) == 1
    assert time.monotonic() - began < 10
    err = capsys.readouterr().err
    assert f"no Kafka broker answered at 127.0.0.1:{free_port} within 1 s" in err
    assert f"no Redis answered at redis://127.0.0.1:{free_port}/0" in err


def test_cli_reports_bad_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RECSTREAM_KAFKA_BOOTSTRAP_SERVERS", "localhost")
    assert services_cli.main(["status"]) == 2
    assert "bootstrap servers must be host:port" in capsys.readouterr().err
