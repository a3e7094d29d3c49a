"""Ratings over HTTP: the body of ``POST /ratings`` checked by the job's rules, sent to Kafka.

A body is one rating or a list of at most ``MAX_RATINGS`` of them, each a JSON object
with ``user_id``, ``movie_id``, ``rating`` and optionally ``timestamp`` (epoch seconds;
default: now) and ``source`` (the dataset whose scale the rating is on; default:
``RECSTREAM_API_INGEST_SOURCE``). Each becomes a rating event of the producer's
contract (``producer.events``) and is checked with the streaming job's own rules
(``producer.validation``); one bad rating refuses the whole body, naming the rating
and the field, and nothing is sent. The events go to the ratings topic through an
idempotent producer, keyed by user id like the replay's, and the answer carries their
event ids. The id is derived from (source, user, movie, timestamp): a client that
resends a body with its timestamps gets the same ids, and the job stores each rating
once.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import Request
from kafka import KafkaProducer
from kafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from producer.broker import client_options
from producer.events import RATING_SCALES, SCHEMA_VERSION, RatingEvent
from producer.settings import KafkaSettings
from producer.validation import FUTURE_TOLERANCE_S, event_problem
from serving.errors import (
    IngestOffError,
    IngestRejectedError,
    IngestTokenError,
    KafkaUnavailableError,
)

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_RATINGS",
    "RATINGS_BODY",
    "Accepted",
    "RatingIn",
    "RatingSender",
    "check_token",
    "events_from_body",
    "json_body",
]

MAX_RATINGS = 1_000
_log = logging.getLogger("recstream.serving")


class RatingIn(BaseModel):
    """One rating as a client posts it (the request body's schema, for the docs)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"user_id": 196, "movie_id": 242, "rating": 4}]},
    )

    user_id: int = Field(description="The user's id, 1..2147483647.")
    movie_id: int = Field(description="The movie's id, 1..2147483647.")
    rating: float = Field(description="Stars on the source's scale, e.g. 1-5 in steps of 1.")
    timestamp: int | None = Field(
        None, description="When the user rated, epoch seconds; default: now."
    )
    source: str | None = Field(
        None,
        description=f"Dataset whose scale the rating is on: one of {', '.join(RATING_SCALES)}; "
        "default: the API's RECSTREAM_API_INGEST_SOURCE.",
    )


class Accepted(BaseModel):
    """What ``POST /ratings`` answers with 202: the events now in the ratings topic."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"accepted": 1, "event_ids": ["0b5cc8a4-9c3e-5a8e-8d0f-3f1e6f0b1d2a"]},
    ]})  # fmt: skip

    accepted: int = Field(description="How many ratings were sent.")
    event_ids: list[str] = Field(description="Their event ids, in the body's order.")


def check_token(expected: SecretStr | None, authorization: str | None) -> None:
    """Refuse a write unless ``authorization`` is ``Bearer <expected>``.

    Raises:
        IngestOffError: no token is configured, so rating over HTTP is off.
        IngestTokenError: the header is missing or carries another token.
    """
    if expected is None:
        msg = "POST /ratings refused: RECSTREAM_API_INGEST_TOKEN is not set"
        raise IngestOffError(msg)
    scheme, _, given = (authorization or "").partition(" ")
    wanted = expected.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), wanted):
        msg = "POST /ratings refused: no or wrong ingest token"
        raise IngestTokenError(msg)


def _event(position: int, item: Any, default_source: str, now_s: int) -> RatingEvent:
    where = f"rating {position}"
    if not isinstance(item, dict):
        msg = f"{where} is not a JSON object"
        raise IngestRejectedError(msg)
    unknown = sorted(set(item) - set(RatingIn.model_fields))
    if unknown:
        msg = (
            f"{where}: unknown field {unknown[0]!r}; a rating has user_id, movie_id, rating "
            "and optionally timestamp and source"
        )
        raise IngestRejectedError(msg)
    fields: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "event_id": "",  # derived below, once the fields it comes from are valid
        "source": default_source if item.get("source") is None else item["source"],
        "user_id": item.get("user_id"),
        "movie_id": item.get("movie_id"),
        "rating": item.get("rating"),
        "timestamp": now_s if item.get("timestamp") is None else item["timestamp"],
    }
    problem = event_problem(fields, latest_s=now_s + FUTURE_TOLERANCE_S)
    if problem is not None:
        msg = f"{where}: {problem}"
        raise IngestRejectedError(msg)
    return RatingEvent(
        source=fields["source"],
        user_id=fields["user_id"],
        movie_id=fields["movie_id"],
        rating=float(fields["rating"]),
        timestamp=fields["timestamp"],
    )


def events_from_body(body: Any, *, default_source: str, now_s: int) -> list[RatingEvent]:
    """The rating events of a request body (one rating or a list), checked.

    Raises:
        IngestRejectedError: the body or one of its ratings is refused; nothing is kept.
    """
    items = body if isinstance(body, list) else [body]
    if not items:
        msg = "the body holds no rating; send one object or a list"
        raise IngestRejectedError(msg)
    if len(items) > MAX_RATINGS:
        msg = f"the body holds {len(items)} ratings; send at most {MAX_RATINGS} per request"
        raise IngestRejectedError(msg)
    return [_event(position, item, default_source, now_s) for position, item in enumerate(items)]


class RatingSender:
    """Sends rating events to the ratings topic; opens its producer on first use.

    The producer is idempotent with ``acks=all``, like the replay's. When Kafka cannot
    be reached it is dropped and opened again on the next call, so the API needs no
    restart once the broker is back. Blocking: call it from a worker thread.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        timeout_s: float,
        opener: Callable[[dict[str, Any]], KafkaProducer] | None = None,
    ) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self._open = opener or (lambda options: KafkaProducer(**options))
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    def _options(self) -> dict[str, Any]:
        options = client_options(self.settings, connect_timeout_s=self.timeout_s)
        timeout_ms = int(self.timeout_s * 1000)
        options.update(
            client_id="recstream-api",
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            max_block_ms=timeout_ms,
            request_timeout_ms=timeout_ms,
        )
        return options

    def _unavailable(self, exc: BaseException) -> KafkaUnavailableError:
        return KafkaUnavailableError(
            f"Kafka at {self.settings.bootstrap_servers} did not take the ratings within "
            f"{self.timeout_s:g} s ({type(exc).__name__}: {exc}); check that the broker "
            "runs (`make services`) and RECSTREAM_KAFKA_BOOTSTRAP_SERVERS"
        )

    def send(self, events: list[RatingEvent]) -> None:
        """Send ``events`` and wait until Kafka has every one.

        Raises:
            KafkaUnavailableError: Kafka did not acknowledge them in ``timeout_s``; some
                may have arrived (a resend with the same timestamps is stored once).
        """
        with self._lock:
            try:
                if self._producer is None:
                    self._producer = self._open(self._options())
                producer = self._producer
                deadline = time.monotonic() + self.timeout_s
                futures = [
                    producer.send(self.settings.topic, key=event.key, value=event.to_json())
                    for event in events
                ]
                for future in futures:
                    future.get(timeout=max(0.0, deadline - time.monotonic()))
            except KafkaError as exc:
                self._drop()
                raise self._unavailable(exc) from exc

    def _drop(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=0)
            except KafkaError:  # closing a producer that never connected
                _log.debug("closing the API's Kafka producer failed", exc_info=True)
            self._producer = None

    def close(self) -> None:
        """Flush and close the producer, if one is open."""
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=self.timeout_s)
                self._producer = None


MAX_BODY_BYTES = 1024 * 1024
RATINGS_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "anyOf": [
                    RatingIn.model_json_schema(),
                    {"type": "array", "items": RatingIn.model_json_schema(),
                     "minItems": 1, "maxItems": MAX_RATINGS},
                ]
            },
            "examples": {
                "one": {"value": {"user_id": 196, "movie_id": 242, "rating": 4}},
                "several": {"value": [
                    {"user_id": 196, "movie_id": 242, "rating": 4, "timestamp": 881250949},
                    {"user_id": 196, "movie_id": 302, "rating": 3, "source": "ml-100k"},
                ]},
            },
        }
    },
}  # fmt: skip


async def json_body(request: Request) -> Any:
    """The request's JSON body, read up to ``MAX_BODY_BYTES`` and no further."""
    too_large = f"the body is larger than {MAX_BODY_BYTES} bytes; send fewer ratings per request"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise IngestRejectedError(too_large)
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise IngestRejectedError(too_large)
    try:
        return json.loads(raw)
    except ValueError as exc:
        msg = f"the body is not JSON ({exc})"
        raise IngestRejectedError(msg) from None
