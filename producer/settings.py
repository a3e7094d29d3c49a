"""Settings of the Kafka side: where the broker is and which topic carries ratings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from recstream_base.settings import StrictSettings

__all__ = ["KafkaSettings", "ProducerSettings", "jaas_quote", "parse_bootstrap_servers"]

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def parse_bootstrap_servers(value: str) -> list[tuple[str, int]]:
    """Split ``"host:port,host:port"`` into pairs, naming the first malformed entry.

    Raises:
        ValueError: an entry is not ``host:port`` with a port in 1..65535.
    """
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    if not entries:
        msg = f"bootstrap servers must be a comma-separated list of host:port, got {value!r}"
        raise ValueError(msg)
    servers = []
    for entry in entries:
        host, sep, port = entry.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            msg = (
                f"bootstrap servers must be host:port with a port in 1..65535, "
                f"got {entry!r} (e.g. '127.0.0.1:9092')"
            )
            raise ValueError(msg)
        servers.append((host.strip("[]"), int(port)))
    return servers


class KafkaSettings(StrictSettings):
    """How recstream reaches Kafka (``RECSTREAM_KAFKA_*``)."""

    model_config = SettingsConfigDict(env_prefix="RECSTREAM_KAFKA_")

    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Comma-separated host:port list of Kafka brokers."
    )
    topic: str = Field("ratings", description="Topic that carries the rating events.")
    partitions: int = Field(3, ge=1, le=10_000, description="Partitions of a topic we create.")
    replication_factor: int = Field(
        1, ge=1, le=32, description="Replication factor of a topic we create."
    )
    min_insync_replicas: int | None = Field(
        None,
        ge=1,
        le=32,
        description=(
            "min.insync.replicas of a topic we create (unset: the broker's default); with "
            "acks=all a write needs this many copies."
        ),
    )
    connect_timeout_s: float = Field(
        5.0, gt=0, le=300, description="How long to wait for a broker before giving up."
    )
    request_timeout_s: float = Field(
        30.0, gt=0, le=600, description="Timeout of one request to the broker."
    )
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description=(
            "PLAINTEXT; SASL_PLAINTEXT to log in with the user below; SSL for TLS; SASL_SSL "
            "for both (the password then never crosses the network in the clear)."
        ),
    )
    ssl_cafile: Path | None = Field(
        None,
        description=(
            "With SSL or SASL_SSL: PEM file of the CA that signed the brokers' certificates "
            "(unset: the system's CAs); the local broker's is made by `make services`."
        ),
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism (the local broker offers all three)."
    )
    sasl_username: str | None = Field(
        None, pattern=r"^[A-Za-z0-9._-]{1,64}$", description="SASL user name."
    )
    sasl_password: SecretStr | None = Field(None, description="SASL password (a secret).")

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_bootstrap_servers(cls, value: str) -> str:
        parse_bootstrap_servers(value)
        return value

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, value: str) -> str:
        if not _TOPIC_NAME.match(value) or value in {".", ".."}:
            msg = (
                f"topic must be 1-249 characters of letters, digits, '.', '_' or '-', got {value!r}"
            )
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _check_replicas(self) -> KafkaSettings:
        if self.min_insync_replicas is not None and (
            self.min_insync_replicas > self.replication_factor
        ):
            msg = (
                f"RECSTREAM_KAFKA_MIN_INSYNC_REPLICAS={self.min_insync_replicas} is more than "
                f"RECSTREAM_KAFKA_REPLICATION_FACTOR={self.replication_factor}: no write could "
                "ever succeed; lower it or raise the replication factor"
            )
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _check_credentials(self) -> KafkaSettings:
        given = self.sasl_username is not None or self.sasl_password is not None
        if self.sasl and (self.sasl_username is None or self.sasl_password is None):
            msg = (
                f"RECSTREAM_KAFKA_SECURITY_PROTOCOL={self.security_protocol} needs both "
                "RECSTREAM_KAFKA_SASL_USERNAME and RECSTREAM_KAFKA_SASL_PASSWORD"
            )
            raise ValueError(msg)
        if given and not self.sasl:
            wanted = "SASL_SSL" if self.tls else "SASL_PLAINTEXT"
            msg = (
                "RECSTREAM_KAFKA_SASL_USERNAME or _PASSWORD is set but the security protocol is "
                f"{self.security_protocol}, so they would not be used; set "
                f"RECSTREAM_KAFKA_SECURITY_PROTOCOL={wanted} or unset them"
            )
            raise ValueError(msg)
        if self.ssl_cafile is not None and not self.tls:
            msg = (
                "RECSTREAM_KAFKA_SSL_CAFILE is set but the security protocol is "
                f"{self.security_protocol}, which does not use TLS; set "
                "RECSTREAM_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL, or unset it"
            )
            raise ValueError(msg)
        return self

    @property
    def servers(self) -> list[tuple[str, int]]:
        """The bootstrap servers as (host, port) pairs."""
        return parse_bootstrap_servers(self.bootstrap_servers)

    @property
    def sasl(self) -> bool:
        """Clients log in with SASL."""
        return self.security_protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        """Clients speak TLS to the brokers (and verify their certificates)."""
        return self.security_protocol.endswith("SSL")

    def jaas_config(self) -> str:
        """The ``sasl.jaas.config`` line of a Java client: holds the password, never log it."""
        if self.sasl_username is None or self.sasl_password is None:
            msg = "a JAAS line needs both RECSTREAM_KAFKA_SASL_USERNAME and _PASSWORD"
            raise ValueError(msg)
        module = (
            "org.apache.kafka.common.security.plain.PlainLoginModule"
            if self.sasl_mechanism == "PLAIN"
            else "org.apache.kafka.common.security.scram.ScramLoginModule"
        )
        username = jaas_quote(self.sasl_username)
        password = jaas_quote(self.sasl_password.get_secret_value())
        return f"{module} required username={username} password={password};"


def jaas_quote(value: str) -> str:
    """``value`` as a double-quoted JAAS option value (backslash and quote escaped)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


class ProducerSettings(StrictSettings):
    """How the producer replays (``RECSTREAM_PRODUCER_*``); CLI options override these."""

    model_config = SettingsConfigDict(env_prefix="RECSTREAM_PRODUCER_")

    source: str = Field(
        "tfds:movielens/1m-ratings",
        min_length=1,
        description=(
            "What to replay: tfds:<name>, a GroupLens folder or zip, 'synthetic', or 'auto' "
            "(MovieLens-1M through tensorflow-datasets, else the synthetic feed)."
        ),
    )
    tfds_data_dir: Path | None = Field(
        None, description="TFDS data folder; unset means TFDS's default (~/tensorflow_datasets)."
    )
    synthetic_events: int = Field(
        1_000_000, ge=1, le=1_000_000_000, description="Events of the synthetic feed."
    )
    synthetic_users: int = Field(
        0, ge=0, le=100_000_000, description="Users of the synthetic feed (0: events / 150)."
    )
    synthetic_movies: int = Field(
        0,
        ge=0,
        le=10_000_000,
        description="Movies of the synthetic feed (0: events / 250, at most 20,000).",
    )
    synthetic_arrivals: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description=(
            "Share of the synthetic feed's span over which its users arrive (0: all on day one)."
        ),
    )
    synthetic_seed: int = Field(42, description="Seed of the synthetic feed.")
    pace: Literal["max", "speed", "rate"] = Field(
        "max", description="'max' = as fast as the broker takes them; 'speed' or 'rate' below."
    )
    speed: float = Field(
        1000.0, gt=0, description="With pace 'speed': replay at this many times real time."
    )
    rate: float = Field(1000.0, gt=0, description="With pace 'rate': events per second.")
    compression: Literal["none", "gzip", "lz4", "zstd"] = Field(
        "lz4", description="Compression of produced batches."
    )
    linger_ms: int = Field(20, ge=0, le=10_000, description="How long a batch may wait to fill up.")
    batch_size_kb: int = Field(256, ge=1, le=16_384, description="Maximum size of one batch.")
