"""One way to open a Redis connection from settings, and a PING probe."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio

from serving.errors import RedisUnavailableError
from serving.settings import RedisSettings

__all__ = ["open_async_redis", "open_redis", "ping"]


def _options(settings: RedisSettings) -> dict[str, Any]:
    password = settings.password.get_secret_value() if settings.password else None
    return {
        "username": settings.username,
        "password": password,
        "socket_timeout": settings.socket_timeout_s,
        "socket_connect_timeout": settings.socket_timeout_s,
        "decode_responses": False,
    }


def open_redis(settings: RedisSettings) -> redis.Redis:
    """A pooled client for the configured Redis; connects lazily on first use."""
    return redis.Redis.from_url(settings.url, **_options(settings))


def open_async_redis(settings: RedisSettings) -> redis.asyncio.Redis:
    """The same for asyncio code (the HTTP API)."""
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
        msg = (
            f"no Redis answered at {settings.url} ({type(exc).__name__}); start the local one "
            "with `make services` or point RECSTREAM_REDIS_URL at a running server"
        )
        raise RedisUnavailableError(msg) from exc
    finally:
        client.close()
