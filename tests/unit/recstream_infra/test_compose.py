"""docker-compose.yml and the Dockerfile agree with the settings (no Docker engine needed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from producer.settings import KafkaSettings
from recstream_infra.config_table import SETTINGS_CLASSES
from serving.settings import ApiSettings, RedisSettings

ROOT = Path(__file__).resolve().parents[3]
APP_SERVICES = ("streaming", "producer", "api", "spark-master", "spark-worker")
_DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(document, dict)
    return document


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """The service's variables, ``${NAME:-default}`` resolved to its default."""
    return {k: _DEFAULTED.sub(r"\2", str(v)) for k, v in service.get("environment", {}).items()}


def test_it_has_every_service_with_the_cluster_profile_apart(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"kafka", "redis", *APP_SERVICES}
    assert services["kafka"]["image"].startswith("apache/kafka:")  # the official image
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["spark-master"]["profiles"] == ["cluster"]
    assert services["spark-worker"]["profiles"] == ["cluster"]
    for name in ("kafka", "redis", "api"):
        assert services[name]["healthcheck"]["test"], f"{name} has no healthcheck"
    for name in APP_SERVICES:
        assert services[name]["build"] == "."  # one application image
    assert services["streaming"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_every_recstream_variable_is_a_setting_and_its_value_is_accepted(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    known = {
        f"{str(cls.model_config.get('env_prefix', '')).upper()}{name.upper()}": cls
        for cls in SETTINGS_CLASSES
        for name in cls.model_fields
    }
    for name, service in compose["services"].items():
        variables = {k: v for k, v in _environment(service).items() if k.startswith("RECSTREAM_")}
        unknown = sorted(set(variables) - set(known))
        assert not unknown, f"{name}: not settings: {unknown}"
        with monkeypatch.context() as patched:
            for key, value in variables.items():
                patched.setenv(key, value)
            for cls in {known[key] for key in variables}:
                cls()  # raises when compose gives a value the settings refuse


def test_ports_agree_with_the_defaults(compose: dict[str, Any]) -> None:
    services = compose["services"]
    api_env = _environment(services["api"])
    api_port = int(api_env["RECSTREAM_API_PORT"])
    assert api_port == ApiSettings.model_fields["port"].default
    assert f"{api_port}:{api_port}" in services["api"]["ports"]
    assert str(api_port) in " ".join(services["api"]["healthcheck"]["test"])

    kafka_port = KafkaSettings().servers[0][1]
    listeners = services["kafka"]["environment"]["KAFKA_LISTENERS"]
    assert f"PLAINTEXT://:{kafka_port}" in listeners
    redis_port = RedisSettings().port
    for name in ("streaming", "producer"):
        env = _environment(services[name])
        assert env["RECSTREAM_KAFKA_BOOTSTRAP_SERVERS"] == f"kafka:{kafka_port}"
    for name in ("streaming", "api"):
        url = urlsplit(_environment(services[name])["RECSTREAM_REDIS_URL"])
        assert (url.hostname, url.port) == ("redis", redis_port)


def test_named_volumes_hold_the_store_and_the_checkpoints(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used: set[str] = set()
    mounts: dict[str, dict[str, str]] = {}
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            used.add(source)
            mounts.setdefault(name, {})[target] = source
    assert used == declared
    streaming = _environment(compose["services"]["streaming"])

    def volume_of(service: str, path: str) -> str | None:
        return next((src for tgt, src in mounts[service].items() if path.startswith(tgt)), None)

    assert volume_of("streaming", streaming["RECSTREAM_STREAM_STATE_DIR"]) == "ratings-store"
    for key in ("RECSTREAM_STREAM_CHECKPOINT_LOCATION", "RECSTREAM_SPARK_CHECKPOINT_DIR"):
        assert volume_of("streaming", streaming[key]) == "spark-checkpoint"
    # executors of the cluster profile write the same store and checkpoints
    assert mounts["spark-worker"] == {
        t: s for t, s in mounts["streaming"].items() if s in {"ratings-store", "spark-checkpoint"}
    }


def test_the_image_bakes_java_the_project_and_the_connector_jars() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", dockerfile, re.MULTILINE)
    assert "openjdk-17-jre-headless" in dockerfile
    assert "pip install -c constraints.txt ." in dockerfile
    assert "python -m recstream_infra.bootstrap" in dockerfile  # jars resolved at build time
    for package in ("recstream_base", "producer", "streaming", "serving", "recstream_infra"):
        assert f"COPY {package} {package}" in dockerfile
