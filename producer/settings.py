"""Settings of the Kafka side: where the broker is and which topic carries ratings."""

from __future__ import annotations

import re

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from recstream_infra.settings import StrictSettings

__all__ = ["KafkaSettings", "parse_bootstrap_servers"]

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
    connect_timeout_s: float = Field(
        5.0, gt=0, le=300, description="How long to wait for a broker before giving up."
    )
    request_timeout_s: float = Field(
        30.0, gt=0, le=600, description="Timeout of one request to the broker."
    )

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

    @property
    def servers(self) -> list[tuple[str, int]]:
        """The bootstrap servers as (host, port) pairs."""
        return parse_bootstrap_servers(self.bootstrap_servers)
