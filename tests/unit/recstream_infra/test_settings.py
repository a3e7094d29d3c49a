"""Settings: defaults point at the local services, bad values say how to fix them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from producer.broker import client_options
from producer.settings import KafkaSettings, jaas_quote, parse_bootstrap_servers
from recstream_infra.settings import LocalServicesSettings
from serving.connection import open_redis
from serving.settings import RedisSettings
from streaming.ingest.topics import spark_source_options
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


def test_kafka_sasl_settings_need_both_credentials_and_a_sasl_protocol() -> None:
    with pytest.raises(ValidationError, match="needs both") as caught:
        KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_username="rec")
    with pytest.raises(ValidationError, match="would not be used"):
        KafkaSettings(sasl_username="rec", sasl_password="Pa55-word")
    with pytest.raises(ValidationError, match="sasl_mechanism"):
        KafkaSettings(sasl_mechanism="GSSAPI")
    settings = KafkaSettings(
        security_protocol="SASL_PLAINTEXT", sasl_username="rec", sasl_password="Pa55-word"
    )
    assert "Pa55-word" not in repr(settings)
    assert "Pa55-word" not in str(caught.value)


def test_kafka_client_options_carry_the_login_only_with_sasl() -> None:
    assert client_options(KafkaSettings())["security_protocol"] == "PLAINTEXT"
    assert "sasl_plain_password" not in client_options(KafkaSettings())
    settings = KafkaSettings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="rec",
        sasl_password="Pa55-word",
    )
    options = client_options(settings)
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("rec", "Pa55-word")


def test_jaas_line_quotes_the_password_and_names_the_mechanism_module() -> None:
    assert jaas_quote('a"b\\c') == '"a\\"b\\\\c"'
    plain = KafkaSettings(
        security_protocol="SASL_PLAINTEXT", sasl_username="rec", sasl_password='x"y'
    )
    assert plain.jaas_config() == (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        'username="rec" password="x\\"y";'
    )
    scram = plain.model_copy(update={"sasl_mechanism": "SCRAM-SHA-512"})
    assert scram.jaas_config().startswith("org.apache.kafka.common.security.scram.ScramLoginModule")
    with pytest.raises(ValueError, match="needs both"):
        KafkaSettings().jaas_config()


def test_secrets_come_from_files_in_the_secrets_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "recstream_redis_password").write_text("from-a-file\n")
    (tmp_path / "RECSTREAM_KAFKA_SASL_PASSWORD").write_text("kafka-file")
    monkeypatch.setenv("RECSTREAM_SECRETS_DIR", str(tmp_path))
    password = RedisSettings().password
    assert password is not None
    assert password.get_secret_value() == "from-a-file"  # the trailing newline is dropped
    monkeypatch.setenv("RECSTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("RECSTREAM_KAFKA_SASL_USERNAME", "rec")
    kafka_password = KafkaSettings().sasl_password
    assert kafka_password is not None
    assert kafka_password.get_secret_value() == "kafka-file"
    monkeypatch.setenv("RECSTREAM_REDIS_PASSWORD", "from-the-environment")
    password = RedisSettings().password
    assert password is not None
    assert password.get_secret_value() == "from-the-environment"  # the environment wins


def test_a_misnamed_secret_file_or_a_missing_secrets_dir_is_rejected(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "recstream_redis_pasword").write_text("typo")
    (tmp_path / "unrelated.txt").write_text("ignored: no recstream prefix")
    monkeypatch.setenv("RECSTREAM_SECRETS_DIR", str(tmp_path))
    with pytest.raises(ValidationError, match=r"unknown secret file.*recstream_redis_pasword"):
        RedisSettings()
    assert KafkaSettings().topic == "ratings"  # other prefixes do not mind it
    monkeypatch.setenv("RECSTREAM_SECRETS_DIR", str(tmp_path / "missing"))
    with pytest.raises(ValidationError, match="RECSTREAM_SECRETS_DIR must name a folder"):
        RedisSettings()


def test_tls_settings_need_a_tls_protocol_or_url() -> None:
    with pytest.raises(ValidationError, match="does not use TLS; set RECSTREAM_KAFKA_SECURITY"):
        KafkaSettings(ssl_cafile=Path("ca.pem"))
    with pytest.raises(ValidationError, match="set RECSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL"):
        KafkaSettings(security_protocol="SSL", sasl_username="rec", sasl_password="Pa55-word")
    with pytest.raises(ValidationError, match="SASL_SSL needs both"):
        KafkaSettings(security_protocol="SASL_SSL", sasl_username="rec")
    with pytest.raises(ValidationError, match="use rediss:// or unset it"):
        RedisSettings(tls_ca_file=Path("ca.pem"))
    assert RedisSettings(url="rediss://127.0.0.1:6380/0", tls_ca_file=Path("ca.pem")).tls


def test_tls_options_reach_kafka_python_and_sparks_kafka_source(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    settings = KafkaSettings(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="rec",
        sasl_password="Pa55-word", ssl_cafile=ca,
    )  # fmt: skip
    assert (settings.tls, settings.sasl) == (True, True)
    options = client_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert (options["ssl_cafile"], options["ssl_check_hostname"]) == (str(ca), True)
    spark = spark_source_options(settings)
    assert spark["kafka.ssl.truststore.type"] == "PEM"
    assert spark["kafka.ssl.truststore.location"] == str(ca.resolve())
    assert "ScramLoginModule" in spark["kafka.sasl.jaas.config"]
    plain = spark_source_options(KafkaSettings())
    assert not [key for key in plain if "ssl" in key]
    assert "ssl_cafile" not in client_options(KafkaSettings())


def test_redis_tls_options_verify_the_certificate(tmp_path: Path) -> None:
    settings = RedisSettings(url="rediss://127.0.0.1:6380/0", tls_ca_file=tmp_path / "ca.pem")
    pool = open_redis(settings).connection_pool
    assert pool.connection_kwargs["ssl_ca_certs"] == str(tmp_path / "ca.pem")
    assert pool.connection_kwargs["ssl_cert_reqs"] == "required"
    assert "ssl_ca_certs" not in open_redis(RedisSettings()).connection_pool.connection_kwargs
