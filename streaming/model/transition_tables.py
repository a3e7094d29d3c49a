"""The tables behind ``TransitionCounts``: its rows as one matrix, pair lookups, recent movies.

``CountMatrix`` holds every source movie's row of counts as one sparse matrix (built once
after a change, for scoring many users in one product); ``PairTable`` looks up the
counts of (recent movie, target) pairs for a few users; ``RecentMovies`` keeps each
user's newest movies in one preallocated array.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt
import scipy.sparse as sparse

from streaming.ids import sorted_lookup

__all__ = ["CountMatrix", "PairTable", "RecentMovies", "row_starts"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class CountMatrix:
    """Every source's row as one sparse matrix over some movies, as of ``observed``."""

    observed: int
    movie_ids: IntArray  # the columns' ids, ascending
    sources: IntArray  # ascending source movie ids: the rows
    totals: FloatArray  # every count out of each source (also those cut or not listed)
    counts: sparse.csr_array  # sources × movies

    @classmethod
    def of(
        cls,
        rows: dict[int, tuple[IntArray, FloatArray]],
        totals: dict[int, float],
        observed: int,
        movie_ids: IntArray,
        column: Callable[[IntArray], IntArray],
    ) -> CountMatrix:
        """The matrix of ``rows`` over ``movie_ids`` (``column`` maps ids to columns)."""
        sources = np.array(sorted(rows), dtype=np.int64)
        held = [rows[source] for source in sources.tolist()]
        lengths = np.array([len(targets) for targets, _ in held], dtype=np.int64)
        if held:
            targets = np.concatenate([targets for targets, _ in held])
            amounts = np.concatenate([counts for _, counts in held])
        else:
            targets, amounts = np.zeros(0, dtype=np.int64), np.zeros(0)
        columns = column(targets)
        known = columns >= 0
        owners = np.repeat(np.arange(len(sources)), lengths)[known]
        # Each row's columns are ascending already (targets ascending), nothing is sorted.
        counts = sparse.csr_array(
            (amounts[known], columns[known], row_starts(owners, len(sources))),
            shape=(len(sources), len(movie_ids)),
        )
        weights = np.array([totals[source] for source in sources.tolist()], dtype=np.float64)
        return cls(observed, np.array(movie_ids, dtype=np.int64), sources, weights, counts)

    def serves(self, observed: int, movie_ids: IntArray) -> bool:
        """Whether this matrix is the counts as of ``observed`` over ``movie_ids``."""
        return self.observed == observed and np.array_equal(self.movie_ids, movie_ids)

    def covers(self, observed: int, targets: IntArray) -> bool:
        """Whether it is the counts as of ``observed``, with every target as a column.

        Negative targets are padding. A target outside the columns would read 0 here and
        its count from the rows, so such a call reads the rows.
        """
        wanted = targets[targets >= 0]
        return self.observed == observed and bool(sorted_lookup(self.movie_ids, wanted)[1].all())

    @cached_property
    def table(self) -> PairTable:
        """The counts as a ``PairTable`` (built once, for ``TransitionCounts.terms``)."""
        return PairTable.of(self.sources, np.diff(self.counts.indptr),
                             self.movie_ids[self.counts.indices], self.counts.data,
                             self.totals)  # fmt: skip


@dataclass(frozen=True)
class PairTable:
    """Counts of (source, follower) pairs, found by one sorted search of their keys.

    A pair's key is ``place << 32 | follower`` (``place``: the source's position in
    ``sources``; movie ids are below 2³¹), so the keys of rows taken in source order,
    each row's followers ascending, are ascending already.
    """

    sources: IntArray  # ascending
    keys: IntArray
    amounts: FloatArray
    totals: FloatArray  # every count out of each source

    @classmethod
    def of(
        cls,
        sources: IntArray,
        lengths: IntArray,
        followers: IntArray,
        amounts: FloatArray,
        totals: FloatArray,
    ) -> PairTable:
        """The table of rows given in source order (``lengths`` followers each, ascending)."""
        owner = np.repeat(np.arange(len(sources), dtype=np.int64), lengths)
        return cls(sources, owner << 32 | followers, amounts, totals)

    def pairs(self, recent: IntArray, targets: IntArray) -> tuple[FloatArray, FloatArray]:
        """(count of each ``recent[u, k] → targets[u, e]``, total out of each ``recent[u, k]``).

        ``recent`` is ``users × memory`` source ids, ``targets`` ``users × E`` movie ids;
        a negative id, a source without a row or a pair never seen counts 0. The wanted
        keys are searched source by source: in the users' order they ran about 2.5 times
        slower (cache misses in a table of millions of pairs), and sorting them all cost
        as much as the search.
        """
        users, memory = recent.shape
        counts = np.zeros((users * memory, targets.shape[1]))
        totals = np.zeros(users * memory)
        if not len(self.keys) or not recent.size:
            return counts.reshape(users, memory, -1), totals.reshape(recent.shape)
        place, has_row = sorted_lookup(self.sources, recent.ravel())
        has_row &= recent.ravel() >= 0
        by_source = np.flatnonzero(has_row)[np.argsort(place[has_row], kind="stable")]
        owner = by_source // memory  # the user of each (user, age)
        wanted = place[by_source].astype(np.int64)[:, None] << 32 | np.maximum(targets, 0)[owner]
        at = np.minimum(np.searchsorted(self.keys, wanted), len(self.keys) - 1)
        hit = (self.keys[at] == wanted) & (targets >= 0)[owner]
        counts[by_source] = np.where(hit, self.amounts[at], 0.0)
        totals[has_row] = self.totals[place[has_row]]
        return counts.reshape(users, memory, -1), totals.reshape(recent.shape)


class RecentMovies:
    """Each user's last ``keep`` movies, oldest first, as rows of one int64 matrix.

    One row per user (found through a dict) instead of a list of Python ints per user:
    about ``8 · keep`` bytes a user instead of several times that.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._row: dict[int, int] = {}
        self._movies = np.zeros((0, keep), dtype=np.int64)
        self._lengths = np.zeros(0, dtype=np.int64)

    @property
    def nbytes(self) -> int:
        """Bytes of the kept rows (allocated ahead by half again as users come)."""
        return self._movies.nbytes + self._lengths.nbytes

    def oldest_first(self, user: int) -> IntArray:
        """The user's kept movies, oldest first (empty for a user never seen)."""
        row = self._row.get(user)
        if row is None:
            return np.zeros(0, dtype=np.int64)
        kept: IntArray = self._movies[row, : self._lengths[row]]
        return kept

    def newest_first(self, users: IntArray, count: int) -> tuple[IntArray, npt.NDArray[np.bool_]]:
        """Each user's last ``count`` movies, newest first, as ``users × count`` arrays.

        (movies, present): ``present`` is false past the movies a user has (those
        entries of ``movies`` are 0).
        """
        rows = np.array([self._row.get(user, -1) for user in users.tolist()], dtype=np.int64)
        seen = rows >= 0
        lengths = np.zeros(len(rows), dtype=np.int64)
        lengths[seen] = self._lengths[rows[seen]]
        back = lengths[:, None] - 1 - np.arange(count)[None, :]  # index in the oldest-first row
        present = back >= 0
        movies = np.zeros((len(users), count), dtype=np.int64)
        movies[present] = self._movies[np.broadcast_to(rows[:, None], back.shape)[present],
                                       back[present]]  # fmt: skip
        return movies, present

    def put(self, user: int, movies: IntArray) -> None:
        """Keep the last ``keep`` of ``movies`` (oldest first) as the user's."""
        row = self._row.get(user)
        if row is None:
            row = self._row[user] = len(self._row)
            if row == len(self._movies):  # full: grow by half again
                more = max(64, len(self._movies) // 2)
                self._movies = np.vstack([self._movies, np.zeros((more, self.keep), np.int64)])
                self._lengths = np.concatenate([self._lengths, np.zeros(more, np.int64)])
        tail = movies[len(movies) - min(len(movies), self.keep) :]
        self._movies[row, : len(tail)] = tail
        self._lengths[row] = len(tail)


def row_starts(rows: IntArray, count: int) -> IntArray:
    """CSR row pointers of entries whose (ascending) rows are ``rows``, for ``count`` rows."""
    starts = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=count), out=starts[1:])
    return starts
