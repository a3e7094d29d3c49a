"""A loaded dataset: ratings as columns in replay order, the movie catalog, bad lines."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from producer.events import RATING_SCALES, RatingScale

__all__ = ["BadRecord", "Dataset", "Movie", "RatingTable"]


@dataclass(frozen=True)
class BadRecord:
    """A line that could not be used, kept with where it was and why."""

    file: str
    line: int
    reason: str
    text: str

    def describe(self) -> str:
        """``file:line: reason``."""
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class Movie:
    """One catalog entry."""

    movie_id: int
    title: str
    genres: tuple[str, ...]


@dataclass(frozen=True)
class RatingTable:
    """Ratings as parallel columns; ``in_replay_order`` sorts them for the replay."""

    user_ids: npt.NDArray[np.int64]
    movie_ids: npt.NDArray[np.int64]
    ratings: npt.NDArray[np.float64]
    timestamps: npt.NDArray[np.int64]

    @classmethod
    def from_columns(
        cls, users: list[int], movies: list[int], ratings: list[float], timestamps: list[int]
    ) -> RatingTable:
        """Build from Python lists (the parsers' output)."""
        return cls(
            np.asarray(users, dtype=np.int64),
            np.asarray(movies, dtype=np.int64),
            np.asarray(ratings, dtype=np.float64),
            np.asarray(timestamps, dtype=np.int64),
        )

    def __len__(self) -> int:
        return int(self.user_ids.shape[0])

    def in_replay_order(self) -> RatingTable:
        """Sorted by timestamp, ties broken by user then movie (a stable, total order)."""
        order = np.lexsort((self.movie_ids, self.user_ids, self.timestamps))
        return self.take(order)

    def take(self, index: npt.NDArray[np.intp] | slice) -> RatingTable:
        """The rows at ``index`` (an index array or a slice)."""
        return RatingTable(
            self.user_ids[index], self.movie_ids[index], self.ratings[index], self.timestamps[index]
        )


@dataclass(frozen=True)
class Dataset:
    """What a source produced: ``name`` is the event ``source`` field, ``label`` is for people."""

    name: str
    label: str
    ratings: RatingTable
    movies: list[Movie] = field(default_factory=list)
    bad_records: list[BadRecord] = field(default_factory=list)

    @property
    def scale(self) -> RatingScale:
        """The rating scale of this dataset."""
        return RATING_SCALES[self.name]
