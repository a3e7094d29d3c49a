"""Errors raised on the producing side of recstream."""

from __future__ import annotations

__all__ = ["BrokerUnavailableError", "ProducerError"]


class ProducerError(RuntimeError):
    """Base of every error the producer package raises."""


class BrokerUnavailableError(ProducerError):
    """No Kafka broker answered at the configured bootstrap address in time."""
