"""Errors raised by the streaming side of recstream."""

from __future__ import annotations

__all__ = ["ConnectorMissingError", "StreamingError"]


class StreamingError(RuntimeError):
    """Base of every error the streaming package raises."""


class ConnectorMissingError(StreamingError):
    """Spark's Kafka connector jars are not where the settings say."""
