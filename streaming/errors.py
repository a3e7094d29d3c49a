"""Errors raised by the streaming side of recstream."""

from __future__ import annotations

from recstream_base.errors import RecstreamError

__all__ = ["ConnectorMissingError", "StreamingError"]


class StreamingError(RecstreamError):
    """Base of every error the streaming package raises."""


class ConnectorMissingError(StreamingError):
    """Spark's Kafka connector jars are not where the settings say."""
