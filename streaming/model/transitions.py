"""The short-term part of the hybrid lists: which movie followed which, kept current per batch.

People rate in sessions: the movie someone rates next is often one that others rated
soon after the movies this person just rated. ``TransitionCounts`` keeps, over every
user's ratings in the order they arrived, how often movie ``b`` followed movie ``a``:
each new rating counts once as following each of the user's previous ``window``
movies. A user's transition score of a movie is then the decayed sum, over their last
``memory`` movies (the newest weighted 1, the one before ``decay``, then ``decay²`` …),
of the counts out of those movies into it.

Only a user's first rating of a movie counts (a re-rating moves nothing), so counting
the ratings a micro-batch added to the history is exactly-once whenever the history is:
a batch replayed after a crash adds nothing new to the history, hence nothing here.
Counts live in one sorted row per movie (numpy arrays: the movies that followed it and
how often); memory grows with the distinct pairs seen,
and the recent movies kept per user are at most ``memory``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import scipy.sparse as sparse

from streaming.ids import sorted_lookup

__all__ = ["TransitionCounts"]

_PENDING_PER_ROW = 64
_USERS_FOR_PRODUCT = 16  # from this many users on, scores are one matrix product

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def _column_lookup(movie_ids: IntArray) -> Callable[[IntArray], IntArray]:
    """A function from movie ids to their position in ``movie_ids`` (ascending), -1 where absent.

    One gather through a dense table when the ids are dense enough, else a binary search.
    """
    if len(movie_ids) == 0:
        return lambda wanted: np.full(len(wanted), -1, dtype=np.int64)
    top = int(movie_ids[-1])
    if movie_ids[0] < 0 or top > 8 * len(movie_ids) + 1_024:

        def search(wanted: IntArray) -> IntArray:
            rows, known = sorted_lookup(movie_ids, wanted)
            return np.where(known, rows, -1)

        return search
    table = np.full(top + 2, -1, dtype=np.int64)  # the last slot answers every id above top
    table[movie_ids] = np.arange(len(movie_ids))
    return lambda wanted: table[np.minimum(wanted, top + 1)]


class TransitionCounts:
    """Movie → next-movie counts and each user's most recent movies.

    Each source movie's row is a pair of sorted arrays (the movies that followed it,
    their counts) plus a small dict of increments not merged yet; a row's dict is
    merged into its arrays once it holds ``_PENDING_PER_ROW`` movies, so an update is a
    dict operation and a read is one vectorised pass.
    """

    def __init__(self, window: int = 5, memory: int = 20, reverse: float = 0.0) -> None:
        if window < 1 or memory < 1:
            msg = f"window and memory must be at least 1, got {window} and {memory}"
            raise ValueError(msg)
        self.window = window
        self.memory = memory
        self.reverse = reverse
        self._rows: dict[int, tuple[IntArray, FloatArray]] = {}
        self._pending: dict[int, dict[int, float]] = {}
        self._totals: dict[int, float] = {}  # every count out of a movie
        self._recent: dict[int, list[int]] = {}  # oldest first, at most max(window, memory)
        self.pairs = 0  # transitions counted so far
        self.observed = 0  # ratings observed so far (each changes a user's recent movies)

    def observe(self, users: npt.ArrayLike, movies: npt.ArrayLike) -> None:
        """Count ratings given in arrival order (the caller passes first ratings only)."""
        keep = max(self.window, self.memory)
        for user, movie in zip(
            np.asarray(users, dtype=np.int64).tolist(),
            np.asarray(movies, dtype=np.int64).tolist(),
            strict=True,
        ):
            recent = self._recent.setdefault(user, [])
            for earlier in recent[-self.window :]:
                self._count(earlier, movie, 1.0)
                if self.reverse:
                    self._count(movie, earlier, self.reverse)
            recent.append(movie)
            self.observed += 1
            if len(recent) > keep:
                del recent[0]

    def footprint(self) -> tuple[int, int]:
        """(distinct pairs held, bytes of their arrays); increments not merged yet apart."""
        rows = self._rows.values()
        return sum(len(targets) for targets, _ in rows), sum(
            targets.nbytes + counts.nbytes for targets, counts in rows
        )

    def recent(self, user: int) -> list[int]:
        """The user's last ``memory`` movies, newest first."""
        return self._recent.get(int(user), [])[::-1][: self.memory]

    def following(self, movie: int) -> tuple[IntArray, FloatArray]:
        """Movies that followed ``movie`` (ascending) and how often."""
        self._flush(int(movie))
        return self._rows.get(int(movie), (np.zeros(0, dtype=np.int64), np.zeros(0)))

    def scores(
        self,
        users: Sequence[int] | IntArray,
        movie_ids: IntArray,
        decay: float,
        source_norm: float = 0.0,
    ) -> FloatArray:
        """Each user's transition score of each movie of ``movie_ids`` (ascending ids).

        Row ``u``, column ``j``: Σ_k decay^k · count(m_k → movie_ids[j]) / total(m_k)^β
        over the user's recent movies m_0 (newest), m_1, …, where total(m) is every
        count out of m and β is ``source_norm`` (0: raw counts; 1: the share of what
        followed m); zero for movies that never followed them.
        """
        column = _column_lookup(movie_ids)
        asked = np.asarray(users, dtype=np.int64).tolist()
        reads = [  # (row of the answer, source movie, its weight) for each recent movie
            (position, movie, decay**age / total**source_norm)
            for position, user in enumerate(asked)
            for age, movie in enumerate(self.recent(user))
            if (total := self._totals.get(movie))
        ]
        if len(asked) >= _USERS_FOR_PRODUCT:
            return self._product(reads, len(asked), column, len(movie_ids))
        out = np.zeros((len(asked), len(movie_ids)))  # a few users: one pass over each one's rows
        for position, group in itertools.groupby(reads, key=lambda read: read[0]):
            followers: list[IntArray] = []
            amounts: list[FloatArray] = []
            for _, movie, scale in group:
                for part_targets, part_counts in self._parts(movie):
                    followers.append(part_targets)
                    amounts.append(part_counts * scale)
            columns = column(np.concatenate(followers))
            known = columns >= 0
            out[position] = np.bincount(columns[known], np.concatenate(amounts)[known],
                                        minlength=len(movie_ids))  # fmt: skip
        return out

    def _product(
        self,
        reads: list[tuple[int, int, float]],
        users: int,
        column: Callable[[IntArray], IntArray],
        width: int,
    ) -> FloatArray:
        """The scores of many users as one sparse product ``W @ R``, made dense.

        ``W`` (users × sources) holds each user's scale of each of their recent movies,
        ``R`` (sources × movies) the counts out of each source. Both are as sparse as
        the counts, so the cost follows the rows read, not sources × movies.
        """
        sources: dict[int, int] = {}  # source movie → its row in R
        read_sources = [sources.setdefault(movie, len(sources)) for _, movie, _ in reads]
        read_rows = np.fromiter((position for position, _, _ in reads), np.int64, len(reads))
        weights = sparse.csr_array(  # built row by row: ``reads`` come ordered by user
            (np.fromiter((scale for _, _, scale in reads), np.float64, len(reads)),
             np.asarray(read_sources, dtype=np.int64), _row_starts(read_rows, users)),
            shape=(users, len(sources)),
        )  # fmt: skip
        targets: list[IntArray] = []
        amounts: list[FloatArray] = []
        lengths: list[int] = []
        for movie in sources:  # in row order: dicts keep insertion order
            parts = self._parts(movie)
            targets.extend(part for part, _ in parts)
            amounts.extend(part for _, part in parts)
            lengths.append(sum(len(part) for part, _ in parts))
        if not sum(lengths):
            return np.zeros((users, width))
        columns = column(np.concatenate(targets))
        known = columns >= 0
        owners = np.repeat(np.arange(len(sources)), lengths)[known]
        # A row's merged and pending parts may share a movie: CSR sums such duplicates,
        # and the product needs neither sorted nor unique columns, so none are sorted.
        counts = sparse.csr_array(
            (np.concatenate(amounts)[known], columns[known], _row_starts(owners, len(sources))),
            shape=(len(sources), width),
        )
        dense: FloatArray = (weights @ counts).toarray()
        return dense

    def _parts(self, movie: int) -> list[tuple[IntArray, FloatArray]]:
        """The counts out of ``movie`` as (targets, counts) parts: merged, then pending."""
        parts = []
        held = self._rows.get(movie)
        if held is not None:
            parts.append(held)
        pending = self._pending.get(movie)
        if pending:
            parts.append((np.fromiter(pending.keys(), np.int64, len(pending)),
                          np.fromiter(pending.values(), np.float64, len(pending))))  # fmt: skip
        return parts

    def _count(self, source: int, target: int, weight: float) -> None:
        self.pairs += 1
        self._totals[source] = self._totals.get(source, 0.0) + weight
        row = self._pending.setdefault(source, {})
        row[target] = row.get(target, 0.0) + weight
        if len(row) >= _PENDING_PER_ROW:
            self._flush(source)

    def _flush(self, source: int) -> None:
        """Merge a row's pending increments into its sorted arrays."""
        pending = self._pending.pop(source, None)
        if not pending:
            return
        new_targets = np.fromiter(pending.keys(), dtype=np.int64, count=len(pending))
        new_counts = np.fromiter(pending.values(), dtype=np.float64, count=len(pending))
        order = np.argsort(new_targets)
        new_targets, new_counts = new_targets[order], new_counts[order]
        held = self._rows.get(source)
        if held is None:
            self._rows[source] = (new_targets, new_counts)
            return
        held_targets, held_counts = held
        slots = np.searchsorted(held_targets, new_targets)
        present = slots < len(held_targets)
        present[present] = held_targets[slots[present]] == new_targets[present]
        held_counts[slots[present]] += new_counts[present]
        if not present.all():
            absent = ~present
            self._rows[source] = (
                np.insert(held_targets, slots[absent], new_targets[absent]),
                np.insert(held_counts, slots[absent], new_counts[absent]),
            )


def _row_starts(rows: IntArray, count: int) -> IntArray:
    """CSR row pointers of entries whose (ascending) rows are ``rows``, for ``count`` rows."""
    starts = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=count), out=starts[1:])
    return starts
