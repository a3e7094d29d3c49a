"""docker-compose.yml and the Dockerfile agree with the settings (no Docker engine needed)."""

from __future__ import annotations

import inspect
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
APP_SERVICES = (
    "streaming", "producer", "api", "streaming-sasl", "producer-sasl", "api-sasl",
    "spark-master", "spark-worker",
)  # fmt: skip
PLAIN = {"kafka", "redis", "streaming", "producer", "api"}
SASL = {"kafka-sasl", "redis-sasl", "streaming-sasl", "producer-sasl", "api-sasl"}
_DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")
# What a user of the sasl profile exports before `docker compose up`.
SECRETS = {
    "RECSTREAM_KAFKA_SASL_USERNAME": "alice",
    "RECSTREAM_KAFKA_SASL_PASSWORD": "kafka-Secret-1",
    "RECSTREAM_REDIS_PASSWORD": "redis-Secret-2",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(document, dict)
    return document


def _interpolate(value: object, given: dict[str, str] | None = None) -> str:
    """``${NAME:-default}`` as compose resolves it: the given value, else the default."""
    given = given or {}
    return _DEFAULTED.sub(lambda m: given.get(m.group(1), m.group(2)), str(value))


def _environment(service: dict[str, Any], given: dict[str, str] | None = None) -> dict[str, str]:
    """The service's variables, interpolated with ``given`` (else their defaults)."""
    return {k: _interpolate(v, given) for k, v in service.get("environment", {}).items()}


def test_it_has_every_service_with_the_cluster_profile_apart(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"kafka", "redis", "kafka-sasl", "redis-sasl", *APP_SERVICES}
    for kafka in ("kafka", "kafka-sasl"):
        assert services[kafka]["image"].startswith("apache/kafka:")  # the official image
        assert services[kafka]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["spark-master"]["profiles"] == ["cluster"]
    assert services["spark-worker"]["profiles"] == ["cluster"]
    # each of the others is in exactly one of the two sets, and .env picks the plain one
    assert {n for n, s in services.items() if s.get("profiles") == ["plain"]} == PLAIN
    assert {n for n, s in services.items() if s.get("profiles") == ["sasl"]} == SASL
    assert "COMPOSE_PROFILES=plain" in (ROOT / ".env").read_text().splitlines()
    for name in ("kafka", "redis", "api", "kafka-sasl", "redis-sasl", "api-sasl"):
        assert services[name]["healthcheck"]["test"], f"{name} has no healthcheck"
    for name in APP_SERVICES:
        assert services[name]["build"] == "."  # one application image
    assert services["streaming"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["streaming-sasl"]["depends_on"]["kafka-sasl"]["condition"] == (
        "service_healthy"
    )


def test_every_recstream_variable_is_a_setting_and_its_value_is_accepted(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    known = {
        f"{str(cls.model_config.get('env_prefix', '')).upper()}{name.upper()}": cls
        for cls in SETTINGS_CLASSES
        for name in cls.model_fields
    }
    for name, service in compose["services"].items():
        variables = {
            k: v for k, v in _environment(service, SECRETS).items() if k.startswith("RECSTREAM_")
        }
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
    for suffix in ("", "-sasl"):
        for name in ("streaming", "producer"):
            env = _environment(services[name + suffix])
            assert env["RECSTREAM_KAFKA_BOOTSTRAP_SERVERS"] == f"kafka{suffix}:{kafka_port}"
        for name in ("streaming", "api"):
            url = urlsplit(_environment(services[name + suffix])["RECSTREAM_REDIS_URL"])
            assert (url.hostname, url.port) == (f"redis{suffix}", redis_port)


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
    assert mounts["streaming"] == mounts["streaming-sasl"]
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


def test_the_job_is_given_the_time_to_stop_between_two_batches(compose: dict[str, Any]) -> None:
    from streaming.job import stop_between_batches

    waits = inspect.signature(stop_between_batches).parameters["timeout_s"].default
    for name in ("streaming", "streaming-sasl"):
        grace = compose["services"][name]["stop_grace_period"]
        assert grace.endswith("s") and float(grace[:-1]) > waits + 15, name  # + Spark's stop


def test_the_sasl_profiles_broker_and_redis_take_the_logins_its_clients_use(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    broker = _environment(services["kafka-sasl"], SECRETS)
    protocol = broker["KAFKA_ADVERTISED_LISTENERS"].split("://")[0]
    listener = protocol.lower().replace("_", "__")  # the image's spelling of a '_'
    jaas = broker[f"KAFKA_LISTENER_NAME_{listener.upper()}_PLAIN_SASL_JAAS_CONFIG"]
    for name in ("streaming-sasl", "producer-sasl", "api-sasl"):
        with monkeypatch.context() as patched:
            for key, value in _environment(services[name], SECRETS).items():
                if key.startswith("RECSTREAM_KAFKA_") or key.startswith("RECSTREAM_REDIS_"):
                    patched.setenv(key, value)
            kafka, redis = KafkaSettings(), RedisSettings()
        assert kafka.security_protocol == protocol == "SASL_PLAINTEXT", name
        assert kafka.sasl_mechanism in broker["KAFKA_SASL_ENABLED_MECHANISMS"].split(","), name
        assert kafka.sasl_password is not None and redis.password is not None
        user, password = kafka.sasl_username, kafka.sasl_password.get_secret_value()
        assert (user, password) == ("alice", SECRETS["RECSTREAM_KAFKA_SASL_PASSWORD"]), name
        assert f'user_{user}="{password}"' in jaas  # the broker knows that user
        assert redis.password.get_secret_value() == SECRETS["RECSTREAM_REDIS_PASSWORD"]
    redis_server = services["redis-sasl"]
    assert (
        _environment(redis_server, SECRETS)["REDISCLI_AUTH"] == SECRETS["RECSTREAM_REDIS_PASSWORD"]
    )
    assert "--requirepass" in " ".join(redis_server["command"])
    # the healthcheck logs in with the same user
    assert _environment(services["kafka-sasl"], SECRETS)["KAFKA_HEALTHCHECK_USER"] == "alice"


def test_the_image_bakes_java_the_project_and_the_connector_jars() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", dockerfile, re.MULTILINE)
    assert "openjdk-17-jre-headless" in dockerfile
    assert "pip install -c constraints.txt ." in dockerfile
    assert "python -m recstream_infra.bootstrap" in dockerfile  # jars resolved at build time
    for package in ("recstream_base", "producer", "streaming", "serving", "recstream_infra"):
        assert f"COPY {package} {package}" in dockerfile
