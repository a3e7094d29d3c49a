"""One way to open a Redis connection from settings, and a PING probe."""

from __future__ import annotations

from typing import Any, cast

import redis
import redis.asyncio

from recstream_base.net import speaks_tls, tls_problem
from serving.errors import RedisUnavailableError
from serving.settings import RedisSettings

__all__ = ["open_async_redis", "open_redis", "ping", "tls_failure"]


def _options(settings: RedisSettings) -> dict[str, Any]:
    password = settings.password.get_secret_value() if settings.password else None
    options: dict[str, Any] = {
        "username": settings.username,
        "password": password,
        "socket_timeout": settings.socket_timeout_s,
        "socket_connect_timeout": settings.socket_timeout_s,
        "decode_responses": False,
    }
    if settings.tls:
        options["ssl_cert_reqs"] = "required"
        options["ssl_check_hostname"] = True
        if settings.tls_ca_file is not None:
            options["ssl_ca_certs"] = str(settings.tls_ca_file)
    return options


def open_redis(settings: RedisSettings) -> redis.Redis:
    """A pooled client for the configured Redis; connects lazily on first use.

    With ``RECSTREAM_REDIS_CLUSTER`` it is a ``RedisCluster``, which answers the same
    commands recstream sends (every multi-key command and script stays in one slot: see
    ``serving.layout``), so it is typed as the single-server client.
    """
    if settings.cluster:
        cluster = redis.RedisCluster.from_url(settings.url, **_options(settings))
        return cast(redis.Redis, cluster)
    return redis.Redis.from_url(settings.url, **_options(settings))


def open_async_redis(settings: RedisSettings) -> redis.asyncio.Redis:
    """The same for asyncio code (the HTTP API)."""
    if settings.cluster:
        cluster = redis.asyncio.RedisCluster.from_url(settings.url, **_options(settings))
        return cast(redis.asyncio.Redis, cluster)
    return redis.asyncio.Redis.from_url(settings.url, **_options(settings))


def ping(settings: RedisSettings) -> None:
    """Check that Redis answers PING with our credentials.

    Raises:
        RedisUnavailableError: no answer, or the credentials were refused; the
            message names the URL (never the password) and what to check.
    """
    client = open_redis(settings)
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        msg = (
            f"Redis at {settings.url} refused the credentials ({type(exc).__name__}); "
            "check RECSTREAM_REDIS_USERNAME and RECSTREAM_REDIS_PASSWORD"
        )
        raise RedisUnavailableError(msg) from exc
    except redis.ResponseError as exc:
        # NOAUTH: the server wants a password and none was configured.
        msg = f"Redis at {settings.url} refused PING: {exc}; is RECSTREAM_REDIS_PASSWORD set?"
        raise RedisUnavailableError(msg) from exc
    except redis.RedisError as exc:
        msg = tls_failure(settings) or (
            f"no Redis answered at {settings.url} ({type(exc).__name__}); start the local one "
            "with `make services` or point RECSTREAM_REDIS_URL at a running server"
        )
        raise RedisUnavailableError(msg) from exc
    finally:
        client.close()


def tls_failure(settings: RedisSettings) -> str | None:
    """Why a connection fails when TLS is the reason (the message names the setting).

    None when TLS is not the problem; it probes the server, so it takes up to ~2 s.
    """
    if settings.tls:
        problem = tls_problem(
            settings.host, settings.port, settings.tls_ca_file, "RECSTREAM_REDIS_TLS_CA_FILE"
        )
        if problem is None:
            return None
        msg = f"TLS to Redis at {settings.url} failed: {problem}"
        if "does not speak TLS" in problem:
            msg += "; if the server listens without TLS, use a redis:// URL"
        return msg
    if speaks_tls(settings.host, settings.port):
        return (
            f"Redis at {settings.url} speaks TLS and this client does not; use a rediss:// "
            "URL in RECSTREAM_REDIS_URL and RECSTREAM_REDIS_TLS_CA_FILE for the CA that "
            "signed its certificate"
        )
    return None
