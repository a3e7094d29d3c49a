"""Settings of the Redis side: where the lists live and how to log in."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from producer.events import RATING_SCALES
from recstream_base.settings import StrictSettings

__all__ = ["ApiSettings", "RedisSettings"]

_MIN_TOKEN_CHARS = 16
_KEY_PREFIX = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class RedisSettings(StrictSettings):
    """How recstream reaches Redis (``RECSTREAM_REDIS_*``)."""

    model_config = SettingsConfigDict(env_prefix="RECSTREAM_REDIS_")

    url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="redis:// or rediss:// URL with host, port and database; no password in it.",
    )
    username: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="ACL user name; unset means the default user.",
    )
    password: SecretStr | None = Field(None, description="Password (or ACL user's password).")
    cluster: bool = Field(
        False,
        description=(
            "The URL names one node of a Redis Cluster: clients find the others and follow "
            "failovers (database 0 only)."
        ),
    )
    tls_ca_file: Path | None = Field(
        None,
        description=(
            "With a rediss:// URL: PEM file of the CA that signed the server's certificate "
            "(unset: the system's CAs); the local Redis's is made by `make services`."
        ),
    )
    key_prefix: str = Field("recstream", description="Prefix of every key recstream writes.")
    socket_timeout_s: float = Field(
        2.0, gt=0, le=60, description="Connect and read timeout of one Redis call."
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"redis", "rediss"} or not parts.hostname:
            msg = f"Redis URL must look like redis://host:port/db, got {value!r}"
            raise ValueError(msg)
        if parts.password or parts.username:
            msg = (
                "put the Redis user and password in RECSTREAM_REDIS_USERNAME and "
                "RECSTREAM_REDIS_PASSWORD, not in the URL, so they are never logged"
            )
            raise ValueError(msg)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if port is not None and not 1 <= port <= 65535:
            msg = f"Redis URL port must be in 1..65535, got {value!r}"
            raise ValueError(msg)
        database = parts.path.lstrip("/")
        if database and not database.isdigit():
            msg = f"Redis URL database must be a number such as /0, got {value!r}"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _check_cluster(self) -> RedisSettings:
        if self.cluster and self.database != 0:
            msg = (
                f"Redis Cluster has database 0 only, but RECSTREAM_REDIS_URL names database "
                f"{self.database}; end the URL with /0"
            )
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _check_tls(self) -> RedisSettings:
        if self.tls_ca_file is not None and not self.tls:
            msg = (
                "RECSTREAM_REDIS_TLS_CA_FILE is set but RECSTREAM_REDIS_URL is redis://, "
                "which does not use TLS; use rediss:// or unset it"
            )
            raise ValueError(msg)
        return self

    @field_validator("key_prefix")
    @classmethod
    def _check_key_prefix(cls, value: str) -> str:
        if not _KEY_PREFIX.match(value):
            msg = f"key prefix must be 1-64 of letters, digits, '.', '_', ':' or '-', got {value!r}"
            raise ValueError(msg)
        return value

    @property
    def tls(self) -> bool:
        """The URL is rediss://: TLS, the server's certificate verified."""
        return urlsplit(self.url).scheme == "rediss"

    @property
    def host(self) -> str:
        """Host part of the URL."""
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        """Port part of the URL (6379 when the URL names none)."""
        return urlsplit(self.url).port or 6379

    @property
    def database(self) -> int:
        """Database number of the URL (0 when the URL names none)."""
        database = urlsplit(self.url).path.lstrip("/")
        return int(database) if database else 0


class ApiSettings(StrictSettings):
    """The HTTP API (``RECSTREAM_API_*``)."""

    model_config = SettingsConfigDict(env_prefix="RECSTREAM_API_")

    host: str = Field("127.0.0.1", min_length=1, description="Address the HTTP API listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port of the HTTP API.")
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes.")
    retry_after_s: int = Field(
        5, ge=1, le=3600, description="Retry-After (seconds) sent with 503 answers."
    )
    ingest_token: SecretStr | None = Field(
        None,
        description="Token a client must send (Authorization: Bearer) to POST /ratings; "
        "unset, rating over HTTP is off.",
    )
    ingest_source: str = Field(
        "ml-1m",
        description="Dataset name given to ratings posted without one; it fixes their scale.",
    )
    ingest_timeout_s: float = Field(
        5.0, gt=0, le=120, description="How long POST /ratings waits for Kafka before a 503."
    )

    @field_validator("ingest_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """An empty value (``VAR=`` in a compose file) leaves rating over HTTP off."""
        return None if value in ("", b"") else value

    @field_validator("ingest_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < _MIN_TOKEN_CHARS:
            msg = (
                f"ingest_token must be at least {_MIN_TOKEN_CHARS} characters (for example "
                "`openssl rand -hex 16`); leave it unset to keep rating over HTTP off"
            )
            raise ValueError(msg)
        return value

    @field_validator("ingest_source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        if value not in RATING_SCALES:
            msg = f"ingest_source must be one of {', '.join(RATING_SCALES)}, got {value!r}"
            raise ValueError(msg)
        return value
