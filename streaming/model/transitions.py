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
how often). With ``followers`` set, a row keeps at most that many of them: once a
batch's merge leaves a row with more than twice as many, it is cut back to its largest
counts (ties: the lower movie id). So memory is bounded by the movies, like the item
factors, not by the distinct pairs the ratings form (84.6M on an ML-25M-shaped feed);
each row's total still counts everything that followed it. The cut depends on the order
the batches came in, so a rebuild after a restart observes the stored ratings batch by
batch, as they came (``streaming.ingest.store.RatingStore.arrivals``). The recent movies
kept per user are at most ``max(window, memory)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import scipy.sparse as sparse

from streaming.ids import sorted_lookup
from streaming.model.transition_tables import CountMatrix, PairTable, RecentMovies

__all__ = ["TransitionCounts"]

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
    their counts). A batch of ratings is counted vectorised: its pairs are formed and
    summed with numpy, then merged into each source's row once, so the Python work
    follows the batch's users and source movies, not its ratings times the window.
    """

    def __init__(
        self, window: int = 5, memory: int = 20, reverse: float = 0.0, followers: int = 0
    ) -> None:
        if window < 1 or memory < 1:
            msg = f"window and memory must be at least 1, got {window} and {memory}"
            raise ValueError(msg)
        if followers < 0:
            msg = f"followers must be 0 (keep all) or more, got {followers}"
            raise ValueError(msg)
        self.window = window
        self.memory = memory
        self.reverse = reverse
        self.followers = followers
        self._rows: dict[int, tuple[IntArray, FloatArray]] = {}
        self._totals: dict[int, float] = {}  # every count out of a movie
        self._recent = RecentMovies(max(window, memory))
        self._matrix: CountMatrix | None = None  # the rows as one matrix, until a change
        self.pairs = 0  # transitions counted so far
        self.observed = 0  # ratings observed so far (each changes a user's recent movies)

    def __getstate__(self) -> dict[str, object]:
        """Pickled (broadcast, copied for a build) without the kept matrix."""
        return {**self.__dict__, "_matrix": None}

    def observe(self, users: npt.ArrayLike, movies: npt.ArrayLike) -> None:
        """Count ratings given in arrival order (the caller passes first ratings only).

        Each rating follows its user's previous ``window`` movies: those kept from
        earlier calls, then the user's earlier ratings in this one.
        """
        users = np.asarray(users, dtype=np.int64)
        movies = np.asarray(movies, dtype=np.int64)
        if not len(users):
            return
        order = np.argsort(users, kind="stable")  # by user, each user's in arrival order
        distinct, starts = np.unique(users[order], return_index=True)
        sequences: list[IntArray] = []  # per user: the kept tail, then the new movies
        tails: list[int] = []
        for user, mine in zip(distinct.tolist(), np.split(movies[order], starts[1:]), strict=True):
            kept = self._recent.oldest_first(user)
            tail = kept[len(kept) - min(len(kept), self.window) :]
            sequences.append(np.concatenate([tail, mine]))
            tails.append(len(tail))
            self._recent.put(user, np.concatenate([kept, mine]))
        self.observed += len(users)
        sequence = np.concatenate(sequences)
        lengths = np.array([len(part) for part in sequences])
        first_of = np.repeat(np.cumsum(lengths) - lengths, lengths)  # each one's user's start
        place = np.arange(len(sequence)) - first_of  # position within the user's sequence
        new = np.flatnonzero(place >= np.repeat(tails, lengths))
        sources, targets = [], []
        for lag in range(1, self.window + 1):
            following = new[place[new] >= lag]
            sources.append(sequence[following - lag])
            targets.append(sequence[following])
        source, target = np.concatenate(sources), np.concatenate(targets)
        weight = np.ones(len(source))
        if self.reverse:
            source, target = np.concatenate([source, target]), np.concatenate([target, source])
            weight = np.concatenate([weight, np.full(len(weight), self.reverse)])
        self.pairs += len(source)
        if len(source):
            self._add(source, target, weight)

    def _add(self, source: IntArray, target: IntArray, weight: FloatArray) -> None:
        """Add ``weight`` to each (source → target) count and to its source's total."""
        order = np.lexsort((target, source))
        source, target, weight = source[order], target[order], weight[order]
        change = np.flatnonzero((source[1:] != source[:-1]) | (target[1:] != target[:-1])) + 1
        pair_starts = np.concatenate([[0], change])
        source, target = source[pair_starts], target[pair_starts]
        summed = np.add.reduceat(weight, pair_starts)
        row_starts = np.concatenate([[0], np.flatnonzero(source[1:] != source[:-1]) + 1])
        row_ends = np.append(row_starts[1:], len(source))
        for movie, first, last in zip(source[row_starts].tolist(), row_starts.tolist(),
                                      row_ends.tolist(), strict=True):  # fmt: skip
            counts = summed[first:last]
            self._totals[movie] = self._totals.get(movie, 0.0) + float(counts.sum())
            self._merge(movie, target[first:last], counts)
            if self.followers and len(self._rows[movie][0]) > 2 * self.followers:
                self._cut(movie)

    def _cut(self, movie: int) -> None:
        """Keep ``movie``'s ``followers`` largest counts (ties: lower id), ids ascending."""
        targets, counts = self._rows[movie]
        best = np.lexsort((targets, -counts))[: self.followers]
        best.sort()  # positions ascending keep the targets ascending
        self._rows[movie] = (targets[best], counts[best])

    def footprint(self) -> tuple[int, int]:
        """(distinct pairs held, bytes of their arrays)."""
        rows = self._rows.values()
        return sum(len(targets) for targets, _ in rows), sum(
            targets.nbytes + counts.nbytes for targets, counts in rows
        )

    def held_bytes(self) -> int:
        """Bytes of the arrays these counts hold: rows, recent movies, the kept matrix.

        They grow with the distinct pairs seen (up to the cut) and the users, not with
        the ratings; the soak subtracts them from the driver's memory for that reason.
        """
        held = self.footprint()[1] + self._recent.nbytes
        matrix = self._matrix
        if matrix is not None:
            counts = matrix.counts
            held += counts.data.nbytes + counts.indices.nbytes + counts.indptr.nbytes
            held += matrix.movie_ids.nbytes + matrix.sources.nbytes + matrix.totals.nbytes
            table = matrix.__dict__.get("table")  # the cached_property, once built
            if table is not None:
                held += table.keys.nbytes + table.amounts.nbytes
        return held

    def recent(self, user: int) -> list[int]:
        """The user's last ``memory`` movies, newest first."""
        kept: list[int] = self._recent.oldest_first(int(user))[::-1][: self.memory].tolist()
        return kept

    def following(self, movie: int) -> tuple[IntArray, FloatArray]:
        """Movies that followed ``movie`` (ascending) and how often."""
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
        asked = np.asarray(users, dtype=np.int64)
        if len(asked) >= _USERS_FOR_PRODUCT:
            return self._product(asked, movie_ids, column, decay, source_norm)
        reads = [  # (row of the answer, source movie, its weight) for each recent movie
            (position, movie, decay**age / total**source_norm)
            for position, user in enumerate(asked.tolist())
            for age, movie in enumerate(self.recent(user))
            if (total := self._totals.get(movie))
        ]
        out = np.zeros((len(asked), len(movie_ids)))  # a few users: one pass over each one's rows
        for position, group in itertools.groupby(reads, key=lambda read: read[0]):
            followers: list[IntArray] = []
            amounts: list[FloatArray] = []
            for _, movie, scale in group:
                targets, counts = self.following(movie)
                followers.append(targets)
                amounts.append(counts * scale)
            columns = column(np.concatenate(followers))
            known = columns >= 0
            out[position] = np.bincount(columns[known], np.concatenate(amounts)[known],
                                        minlength=len(movie_ids))  # fmt: skip
        return out

    def terms(
        self,
        users: Sequence[int] | IntArray,
        targets: IntArray,
        decay: float,
        source_norm: float = 0.0,
    ) -> tuple[IntArray, FloatArray]:
        """Each recent movie's term of each user's transition score of some movies.

        ``targets`` is ``users × E`` movie ids (any order; negative ones get 0). Returns
        (recent, terms): ``recent`` is each user's last ``memory`` movies, newest first,
        ``users × memory`` with -1 past the movies a user has; ``terms[u, k, e]`` is
        ``decay^k · count(recent[u, k] → targets[u, e]) / total^β``, the part of
        ``scores``' sum that movie brings. Summed over ``k`` they are ``scores``.
        """
        asked = np.asarray(users, dtype=np.int64)
        recent, present = self._recent.newest_first(asked, self.memory)
        recent = np.where(present, recent, -1)
        targets = np.asarray(targets, dtype=np.int64).reshape(len(asked), -1)
        matrix = self._matrix
        if matrix is not None and matrix.covers(self.observed, targets):  # the scores' matrix
            table = matrix.table
        else:
            table = self._table_of(np.unique(recent[present]))
        counts, totals = table.pairs(recent, targets)
        usable = totals > 0
        ages = np.broadcast_to(np.arange(self.memory, dtype=np.float64), recent.shape)
        scale = np.zeros(recent.shape)
        scale[usable] = decay ** ages[usable] / totals[usable] ** source_norm
        return recent, counts * scale[:, :, None]

    def _table_of(self, sources: IntArray) -> PairTable:
        """The rows of ``sources`` (ascending) alone: for a few users, few rows to read."""
        rows = [self.following(movie) for movie in sources.tolist()]
        lengths = np.array([len(followers) for followers, _ in rows], dtype=np.int64)
        empty = np.zeros(0, dtype=np.int64)
        followers = np.concatenate([held for held, _ in rows] or [empty])
        amounts = np.concatenate([held for _, held in rows] or [np.zeros(0)])
        totals = np.array([self._totals.get(movie, 0.0) for movie in sources.tolist()])
        return PairTable.of(sources, lengths, followers, amounts, totals)

    def _product(
        self,
        users: IntArray,
        movie_ids: IntArray,
        column: Callable[[IntArray], IntArray],
        decay: float,
        source_norm: float,
    ) -> FloatArray:
        """The scores of many users as one sparse product ``W @ R``, made dense.

        ``W`` (users × sources) holds each user's weight of each of their recent movies,
        ``R`` (sources × movies) every source's counts, built once and kept until the
        counts change (so the blocks of one publication share it); both are as sparse
        as the counts, and ``W`` is formed without a loop over the users.
        """
        matrix = self._matrix
        if matrix is None or not matrix.serves(self.observed, movie_ids):
            matrix = self._matrix = CountMatrix.of(self._rows, self._totals, self.observed,
                                                    movie_ids, column)  # fmt: skip
        recent, present = self._recent.newest_first(users, self.memory)
        owner, age = np.nonzero(present)
        place, known = sorted_lookup(matrix.sources, recent[owner, age])
        owner, age, place = owner[known], age[known], place[known]
        weights = sparse.csr_array(
            (decay ** age.astype(np.float64) / matrix.totals[place] ** source_norm,
             (owner, place)),
            shape=(len(users), len(matrix.sources)),
        )  # fmt: skip
        dense: FloatArray = (weights @ matrix.counts).toarray()
        return dense

    def _merge(self, source: int, targets: IntArray, counts: FloatArray) -> None:
        """Merge counts into ``source``'s row (``targets`` ascending, each once)."""
        held = self._rows.get(source)
        if held is None:
            self._rows[source] = (targets.copy(), counts.copy())
            return
        held_targets, held_counts = held
        slots = np.searchsorted(held_targets, targets)
        present = slots < len(held_targets)
        present[present] = held_targets[slots[present]] == targets[present]
        held_counts[slots[present]] += counts[present]
        if not present.all():
            absent = ~present
            self._rows[source] = (
                np.insert(held_targets, slots[absent], targets[absent]),
                np.insert(held_counts, slots[absent], counts[absent]),
            )
