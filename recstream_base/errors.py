"""The root of every error recstream raises on purpose."""

from __future__ import annotations

__all__ = ["RecstreamError"]


class RecstreamError(RuntimeError):
    """Base of every recstream error.

    Each package derives its own base from it (``ProducerError``, ``StreamingError``,
    ``ServingError``, ``ServiceStartError``), so ``except RecstreamError`` tells our
    failures from bugs.
    """
