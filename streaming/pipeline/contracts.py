"""What the batch pipeline needs from the stores, the models, Redis and the topic.

Narrow protocols: the job wires Spark, Kafka and Redis behind them (``streaming.job``),
unit tests in-memory ones (``tests/memory.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import pandas as pd

from serving.layout import BatchStats
from streaming.ingest.history import RecentRatings
from streaming.ingest.intake import TakenBatch
from streaming.ingest.segments import Compaction
from streaming.ingest.store import BatchCommit
from streaming.model.blend import ShortTerm
from streaming.model.versions import ModelVersion
from streaming.publish.publisher import PublishOutcome
from streaming.rating.fitter import FittedStars, StarsInput

__all__ = ["BatchStore", "ListPublisher", "Models", "StarsFitting", "Topic"]


class BatchStore(Protocol):
    """Where a batch's records go: validated and stored, then its commit record."""

    def take(self, records: Any, batch_id: int) -> TakenBatch:
        """Store ``records`` under ``batch_id``; the valid ratings and their users' past."""
        ...

    def ratings(self, through_batch: int | None = None) -> pd.DataFrame:
        """What the batches through ``through_batch`` (None: all) stored, into the driver.

        The latest rating per (user, movie): user_id, movie_id, rating, timestamp. For a
        fit on the driver, for as long as it runs.
        """
        ...

    def commit(self, record: BatchCommit) -> None:
        """Write the batch's commit record (last, once everything else is done)."""
        ...

    def compact(self, through_batch: int) -> Compaction | None:
        """Fold what the committed batches through ``through_batch`` stored into fewer files.

        Called before a build reads the store, on the thread that builds.
        """
        ...


class Models(Protocol):
    """Saved model versions, and new ones fitted on the stored ratings."""

    def saved(self, version: int) -> ModelVersion | None:
        """The version saved under ``version``, if any."""
        ...

    def train(self, *, version: int, batch_id: int, reason: str, fit_stars: bool) -> ModelVersion:
        """Fit and evaluate a new version on everything stored through ``batch_id``."""
        ...

    def save(self, model: ModelVersion) -> None:
        """Save ``model`` (replacing a saved one of the same version)."""
        ...


class ListPublisher(Protocol):
    """Where the lists go (Redis): queued work, flushed once a batch."""

    @property
    def has_pending(self) -> bool:
        """Whether anything waits to be published."""
        ...

    @property
    def pending_users(self) -> int:
        """Users whose fold-in lists wait."""
        ...

    def new_model(
        self, model: ModelVersion, *, staged: int | None = None, users: Sequence[int] = (),
        through_batch: int | None = None,
    ) -> None:  # fmt: skip
        """Queue the switch to ``model``.

        With its lists for every user unless ``staged`` lists are written already; then
        with fold-in lists for ``users``, who rated since they were, up to batch
        ``through_batch``.
        """
        ...

    def stage(
        self, model: ModelVersion, through_batch: int, short_term: ShortTerm | None
    ) -> int | None:
        """Write ``model``'s lists of everyone stored through ``through_batch``, before the switch.

        Called from the build's thread. How many; None when they could not be written.
        """
        ...

    def users_changed(self, users: Sequence[int], batch_id: int) -> None:
        """Queue fold-in lists for ``users`` (who rated in ``batch_id``)."""
        ...

    def served(self, users: Sequence[int], k: int) -> dict[int, list[int]] | None:
        """The first ``k`` movies each of ``users`` is served now (their list, or popular).

        None when the lists' store cannot answer.
        """
        ...

    def catalog(self, movies: list[Any]) -> None:
        """Queue the movie catalog."""
        ...

    def verify(self) -> None:
        """Queue the current version again if the lists' store lost it."""
        ...

    def flush(self, recent: RecentRatings) -> PublishOutcome:
        """Publish what is queued (fold-ins from ``recent``); what fails stays queued."""
        ...

    def record_batch(self, stats: BatchStats) -> bool:
        """Report one micro-batch's figures (best effort); True when written."""
        ...


class Topic(Protocol):
    """What the job reads from Kafka outside the stream."""

    def catalog(self) -> tuple[list[Any], int]:
        """The movie catalog and how many of its entries were unusable."""
        ...

    def end_offsets(self) -> dict[int, int] | None:
        """The ratings topic's end offset per partition; None when unknown."""
        ...


class StarsFitting(Protocol):
    """The rating model's fits beside the stream (``streaming.rating.fitter``)."""

    def request(self, version: int, ratings: StarsInput) -> None:
        """Start fitting the rating model of ``version`` on ``ratings``."""
        ...

    def take(self) -> FittedStars | None:
        """A finished fit not taken yet."""
        ...
