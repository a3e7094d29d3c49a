"""What one micro-batch reports: its log line, its figures in Redis, the live hit rate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from serving.layout import BatchStats
from streaming.ingest.store import BatchCommit
from streaming.model.holdout import CUTOFF
from streaming.publish.publisher import PublishOutcome

__all__ = [
    "BatchReport",
    "batch_stats",
    "freshness",
    "keep_newest",
    "live_hits",
    "popular_hits",
]


@dataclass(frozen=True)
class BatchReport:
    """What one micro-batch did; its ``line`` is the job's log line."""

    batch_id: int
    records: int
    valid: int
    invalid: int
    lag: int | None
    retrain: str | None
    switched_to: int | None
    fold_in_users: int
    publish: PublishOutcome
    timings_s: dict[str, float]
    seconds: float = 0.0  # the whole micro-batch
    building: bool = False  # a version was being built while it ran

    @property
    def line(self) -> str:
        """One log line: counts, lag, fold-in, retrain, publishing, durations."""
        lag = "?" if self.lag is None else f"{self.lag:,}"
        retrain = f"started ({self.retrain})" if self.retrain else "no"
        if self.switched_to is not None:
            retrain += f", switched to version {self.switched_to}"
        times = " ".join(f"{name} {seconds:.2f}s" for name, seconds in self.timings_s.items())
        publish = self.publish.state
        if self.publish.error:
            publish += f" ({self.publish.error})"
        return (
            f"batch {self.batch_id}: {self.records:,} records, {self.valid:,} valid, "
            f"{self.invalid:,} invalid, lag {lag}, fold-in {self.fold_in_users:,} users, "
            f"retrain {retrain}, redis {publish}, {times} (in {self.seconds:.2f}s)"
        )


def keep_newest(reports: list[BatchReport], report: BatchReport, kept: int) -> None:
    """Append ``report``; past ``2 × kept`` reports, drop all but the newest ``kept``.

    Trimming by halves keeps appends cheap, and a list (unlike a bounded deque) can be
    read by another thread while a micro-batch appends to it.
    """
    reports.append(report)
    if len(reports) > 2 * kept:
        del reports[: len(reports) - kept]


def popular_hits(
    rater: npt.NDArray[np.int64],
    movie: npt.NDArray[np.int64],
    popular: npt.NDArray[np.int64],
    users: npt.NDArray[np.int64],
    held_users: npt.NDArray[np.int64],
    held_movies: npt.NDArray[np.int64],
) -> int:
    """How many (``rater``, ``movie``) ratings the popular baseline lists.

    A user's baseline is the first ``CUTOFF`` of ``popular`` they had not rated before
    (``held``); ``users`` are the raters, ascending and distinct. Vectorised: a mask of
    which popular movies each user had rated, and each movie's rank among the unrated.
    """
    slot = {int(item): position for position, item in enumerate(popular.tolist())}
    rated = np.zeros((len(users), len(popular)), dtype=np.bool_)
    among = np.isin(held_movies, popular) & np.isin(held_users, users)
    rows = np.searchsorted(users, held_users[among])
    rated[rows, [slot[int(item)] for item in held_movies[among].tolist()]] = True
    rank = np.cumsum(~rated, axis=1)  # 1 for the first unrated popular movie, 2 …
    candidate = np.isin(movie, popular)
    row = np.searchsorted(users, rater[candidate])
    column = np.array([slot[int(item)] for item in movie[candidate].tolist()], dtype=np.int64)
    listed = ~rated[row, column] & (rank[row, column] <= CUTOFF)
    return int(listed.sum())


def live_hits(
    batch: pd.DataFrame, held: pd.DataFrame, served: dict[int, list[int]], popular: list[int]
) -> tuple[int, int, int]:
    """(ratings checked, hits, popular hits) of a batch against the lists served before it.

    Each rating of ``batch`` is a hit when its movie is in the top ``CUTOFF`` its user was
    served (``served``), and a popular hit when the popular baseline (``popular`` less
    the movies the user had rated, ``held``) lists it: the baseline the lists must beat.
    """
    rater = batch["user_id"].to_numpy(dtype=np.int64)
    movie = batch["movie_id"].to_numpy(dtype=np.int64)
    listed = {(user, item) for user, items in served.items() for item in items[:CUTOFF]}
    hits = sum(pair in listed for pair in zip(rater.tolist(), movie.tolist(), strict=True))
    return len(batch), hits, popular_hits(
        rater, movie, np.array(popular, dtype=np.int64), np.unique(rater),
        held["user_id"].to_numpy(np.int64), held["movie_id"].to_numpy(np.int64),
    )  # fmt: skip


def batch_stats(commit: BatchCommit, report: BatchReport, now: float) -> BatchStats:
    """The figures of one micro-batch as ``p:pipeline`` keeps them."""
    return BatchStats(
        batch_id=commit.batch_id,
        committed_at=round(now, 3),
        valid=commit.valid,
        invalid=commit.invalid,
        seconds=report.seconds,
        lag=report.lag,
        model_version=commit.model_version,
        building=report.building,
        retrain=report.retrain,
        switched_to=report.switched_to,
        fold_in_lists=report.fold_in_users,
        checked=commit.checked,
        hits_at_10=commit.hits_at_10,
        popular_hits_at_10=commit.popular_hits_at_10,
        freshness_p50_s=commit.freshness_s[0] if commit.freshness_s else None,
    )


def freshness(appended_s: npt.NDArray[np.float64], now: float) -> list[float]:
    """[p50, max] seconds from the Kafka append of each event to ``now``; empty for none."""
    if not len(appended_s):
        return []
    ages = now - appended_s
    return [round(float(np.median(ages)), 3), round(float(ages.max()), 3)]
