"""Errors raised on the producing side of recstream."""

from __future__ import annotations

from recstream_base.errors import RecstreamError

__all__ = [
    "BadInputError",
    "BrokerAuthenticationError",
    "BrokerUnavailableError",
    "DatasetUnavailableError",
    "ProducerError",
    "ResumeError",
    "UnknownLayoutError",
]


class ProducerError(RecstreamError):
    """Base of every error the producer package raises."""


class BrokerUnavailableError(ProducerError):
    """No Kafka broker answered at the configured bootstrap address in time."""


class BrokerAuthenticationError(BrokerUnavailableError):
    """A broker answered but refused the SASL login (wrong user, password or mechanism)."""


class BadInputError(ProducerError):
    """A malformed line in a local dataset (raised only with ``--strict``)."""


class UnknownLayoutError(ProducerError):
    """A folder or zip that holds none of the MovieLens layouts we read."""


class DatasetUnavailableError(ProducerError):
    """A dataset could not be loaded (no internet for TFDS, missing path, ...)."""


class ResumeError(ProducerError):
    """The topic holds events that do not belong to the replay being resumed."""
