"""Settings: defaults point at the local services, bad values say how to fix them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from producer.settings import KafkaSettings, parse_bootstrap_servers
from recstream_infra.settings import LocalServicesSettings
from serving.settings import RedisSettings
from streaming.settings import SparkSettings


def test_defaults_point_at_the_local_services() -> None:
    assert KafkaSettings().servers == [("127.0.0.1", 9092)]
    redis = RedisSettings()
    assert (redis.host, redis.port, redis.database) == ("127.0.0.1", 6379, 0)
    assert redis.password is None
    assert SparkSettings().master == "local[*]"
    assert LocalServicesSettings().kafka_version.startswith("4.")


def test_environment_overrides_a_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSTREAM_KAFKA_BOOTSTRAP_SERVERS", "broker-a:9092,broker-b:19092")
    monkeypatch.setenv("RECSTREAM_SPARK_EXTRA_CONF", '{"spark.executor.memory": "4g"}')
    assert KafkaSettings().servers == [("broker-a", 9092), ("broker-b", 19092)]
    assert SparkSettings().extra_conf == {"spark.executor.memory": "4g"}


def test_unknown_prefixed_environment_variable_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSTREAM_KAFKA_BOOTSTRAP_SERVER", "typo:9092")
    with pytest.raises(ValidationError, match="RECSTREAM_KAFKA_BOOTSTRAP_SERVER") as caught:
        KafkaSettings()
    assert "RECSTREAM_KAFKA_BOOTSTRAP_SERVERS" in str(caught.value)  # the accepted name is listed


def test_unknown_keyword_is_rejected() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        RedisSettings(hostname="x")  # type: ignore[call-arg]


def test_settings_are_frozen() -> None:
    settings = KafkaSettings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.topic = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("localhost", "host:port"), ("a:0", "1..65535"), ("a:port", "host:port"), (" , ", "comma")],
)
def test_bad_bootstrap_servers_name_the_entry(value: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        parse_bootstrap_servers(value)
    with pytest.raises(ValidationError, match=expected):
        KafkaSettings(bootstrap_servers=value)


def test_bad_topic_name_is_rejected() -> None:
    with pytest.raises(ValidationError, match="topic must be"):
        KafkaSettings(topic="has space")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:6379", "redis://host:port/db"),
        ("redis://:secret@127.0.0.1:6379/0", "not in the URL"),
        ("redis://127.0.0.1:99999/0", "1..65535"),
        ("redis://127.0.0.1:6379/zero", "database must be a number"),
    ],
)
def test_bad_redis_url_says_what_is_expected(url: str, expected: str) -> None:
    with pytest.raises(ValidationError, match=expected) as caught:
        RedisSettings(url=url)
    assert "secret" not in str(caught.value)


def test_redis_password_is_a_secret() -> None:
    settings = RedisSettings(password="hunter2")
    assert "hunter2" not in repr(settings)
    assert settings.password is not None
    assert settings.password.get_secret_value() == "hunter2"


def test_bad_key_prefix_and_username_are_rejected() -> None:
    with pytest.raises(ValidationError, match="key prefix"):
        RedisSettings(key_prefix="has space")
    with pytest.raises(ValidationError, match="username"):
        RedisSettings(username="bad user")


def test_bad_spark_choices_are_rejected() -> None:
    with pytest.raises(ValidationError, match="connector"):
        SparkSettings(connector="maven")
    with pytest.raises(ValidationError, match="driver_memory"):
        SparkSettings(driver_memory="lots")
