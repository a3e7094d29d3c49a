"""Errors raised on the serving side of recstream, each with the HTTP answer it gets.

The API has one handler for ``ServingError``: it answers ``status_code``, with
``public_message`` when set (the error's own text may name hosts or keys, which stay in
the log) or else the error's text, and ``Retry-After`` when ``retry_later``.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from recstream_base.errors import RecstreamError

__all__ = [
    "IngestOffError",
    "IngestRejectedError",
    "IngestTokenError",
    "KafkaUnavailableError",
    "NoModelError",
    "RedisUnavailableError",
    "ServingError",
    "UnknownMovieError",
]


class ServingError(RecstreamError):
    """Base of every error the serving package raises."""

    status_code: ClassVar[int] = 500
    public_message: ClassVar[str | None] = "the request failed; see the server's log"
    retry_later: ClassVar[bool] = False
    log_level: ClassVar[int] = logging.ERROR
    metric_kind: ClassVar[str | None] = None  # label of recstream_redis_errors, if one


class RedisUnavailableError(ServingError):
    """Redis did not answer, or refused our credentials."""

    status_code = 503
    public_message = "the recommendation store (Redis) is unavailable; retry later"
    retry_later = True
    log_level = logging.WARNING
    metric_kind = "unavailable"


class NoModelError(ServingError):
    """Redis answers, but the streaming job has not published a model yet."""

    status_code = 503
    public_message = None  # says what to start, and names nothing private
    retry_later = True
    log_level = logging.INFO


class IngestOffError(ServingError):
    """``POST /ratings`` was called, but no ingest token is configured."""

    status_code = 403
    public_message = (
        "rating over HTTP is off; set RECSTREAM_API_INGEST_TOKEN on the API to turn it on"
    )
    log_level = logging.INFO


class IngestTokenError(ServingError):
    """A write came without the ingest token, or with another one."""

    status_code = 401
    public_message = (
        "writing needs the ingest token: send the header 'Authorization: Bearer <token>' "
        "with the value of RECSTREAM_API_INGEST_TOKEN"
    )
    log_level = logging.WARNING


class IngestRejectedError(ServingError):
    """The body of ``POST /ratings`` is not a list of valid ratings; the text says why."""

    status_code = 422
    public_message = None  # names the rating and the field, nothing private
    log_level = logging.INFO


class KafkaUnavailableError(ServingError):
    """Kafka did not take the ratings in time (down, unreachable, or refusing us)."""

    status_code = 503
    public_message = "the ratings topic (Kafka) is unavailable; retry later"
    retry_later = True
    log_level = logging.WARNING


class UnknownMovieError(ServingError):
    """The current model version has no neighbours for the movie asked about."""

    status_code = 404
    public_message = None  # names the movie and the version, nothing private
    log_level = logging.INFO
