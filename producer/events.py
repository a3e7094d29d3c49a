"""The rating event: the contract between the producer and everything downstream.

One JSON object per Kafka message, keyed by the user id::

    {"schema_version":1,"event_id":"…","source":"ml-100k","user_id":196,
     "movie_id":242,"rating":3.0,"timestamp":881250949}

``event_id`` is a UUID derived from (source, user, movie, timestamp), so replaying the
same data twice yields the same ids, and ``source`` names the dataset, which fixes the
rating scale a consumer validates against (``RATING_SCALES``).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass

__all__ = [
    "EVENT_NAMESPACE",
    "RATING_SCALES",
    "SCHEMA_VERSION",
    "RatingEvent",
    "RatingScale",
    "event_id",
]

SCHEMA_VERSION = 1

# Fixed forever: changing it would change every event id ever produced.
EVENT_NAMESPACE = uuid.UUID("5f0b6a2e-3c1d-4f7e-9a8b-7d2c1e0f4a6b")


@dataclass(frozen=True)
class RatingScale:
    """The values a dataset's ratings may take: ``low`` to ``high`` in steps of ``step``."""

    low: float
    high: float
    step: float

    def contains(self, rating: float) -> bool:
        """True when ``rating`` is on the scale (within float tolerance)."""
        if not self.low <= rating <= self.high:
            return False
        steps = (rating - self.low) / self.step
        return abs(steps - round(steps)) < 1e-9

    def describe(self) -> str:
        """e.g. ``1-5 in steps of 1``."""
        return f"{self.low:g}-{self.high:g} in steps of {self.step:g}"


# Keyed by the ``source`` field of the event.
RATING_SCALES: dict[str, RatingScale] = {
    "ml-100k": RatingScale(1.0, 5.0, 1.0),
    "ml-1m": RatingScale(1.0, 5.0, 1.0),
    "ml-latest": RatingScale(0.5, 5.0, 0.5),
    "ml-latest-small": RatingScale(0.5, 5.0, 0.5),
    "synthetic": RatingScale(1.0, 5.0, 1.0),
}


_NAMESPACE_BYTES = EVENT_NAMESPACE.bytes


def event_id(source: str, user_id: int, movie_id: int, timestamp: int) -> str:
    """The deterministic id of one rating: the same inputs give the same id on every run.

    It is ``uuid.uuid5(EVENT_NAMESPACE, "source:user:movie:timestamp")``, computed
    from SHA-1 directly because this runs once per replayed rating and the ``uuid``
    module's objects cost three times as much.
    """
    name = f"{source}:{user_id}:{movie_id}:{timestamp}".encode()
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


@dataclass(frozen=True)
class RatingEvent:
    """One rating as it travels through Kafka."""

    source: str
    user_id: int
    movie_id: int
    rating: float
    timestamp: int
    schema_version: int = SCHEMA_VERSION

    @property
    def event_id(self) -> str:
        """See :func:`event_id`."""
        return event_id(self.source, self.user_id, self.movie_id, self.timestamp)

    def to_json(self) -> bytes:
        """The message value: compact JSON with the keys in contract order.

        Built without a dict (this runs once per replayed rating): ``source`` is one of
        our own dataset names (letters, digits, '-'), the ids and the timestamp are ints
        and the rating a float, so no value needs JSON escaping.
        """
        return (
            f'{{"schema_version":{self.schema_version},"event_id":"{self.event_id}",'
            f'"source":"{self.source}","user_id":{self.user_id},"movie_id":{self.movie_id},'
            f'"rating":{float(self.rating)!r},"timestamp":{self.timestamp}}}'
        ).encode()

    @property
    def key(self) -> bytes:
        """The message key: the user id as decimal text."""
        return str(self.user_id).encode()

    @classmethod
    def from_json(cls, value: bytes) -> RatingEvent:
        """Parse a message value (a strict inverse of :meth:`to_json` for valid events)."""
        data = json.loads(value)
        return cls(
            source=data["source"],
            user_id=data["user_id"],
            movie_id=data["movie_id"],
            rating=data["rating"],
            timestamp=data["timestamp"],
            schema_version=data["schema_version"],
        )
