"""Errors raised on the serving side of recstream."""

from __future__ import annotations

__all__ = ["NoModelError", "RedisUnavailableError", "ServingError"]


class ServingError(RuntimeError):
    """Base of every error the serving package raises."""


class RedisUnavailableError(ServingError):
    """Redis did not answer, or refused our credentials."""


class NoModelError(ServingError):
    """Redis answers, but the streaming job has not published a model yet."""
