"""Why a movie is on a user's list: the rated movie that raised its score the most.

A listed movie ``i``'s hybrid score (``streaming.model.blend``) is a sum of parts, and
every part but the popularity prior belongs to one of the user's rated movies ``j``:

- **ALS.** The folded-in factor is ``x = A⁻¹ b`` with ``b = Σ_j t_j y_j``
  (``streaming.model.foldin``: ``t_j = r_j`` for explicit feedback, ``1 + α|r_j|`` for a
  positive implicit rating and 0 for a non-positive one). So the ALS score
  ``yᵢᵀx = Σ_j t_j · y_jᵀ A⁻¹ yᵢ`` (``A`` is symmetric): movie ``j``'s part is
  ``t_j · y_jᵀ zᵢ`` with ``zᵢ = A⁻¹ yᵢ``, one solve per listed movie.
- **Short term.** The transition score is ``Σ_k decay^k · count(m_k → i) / total(m_k)^β``
  over the user's recent movies ``m_k``, and the blend scales it by
  ``weight / max_i(score)``: recent movie ``m_k``'s part is its term times that scale.

A movie's parts over the user's ratings add up to the score less the prior (a unit
test checks it). The explanation of a listed movie is the rated movie with the largest
part, when that part is positive (a list filled by the prior alone explains nothing);
equal parts go to the rating that comes first in the history (the lower movie id).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streaming.ingest.history import UserRatings
from streaming.model.blend import ShortTerm
from streaming.model.topn import ItemIndex

__all__ = ["NONE", "ScoreParts"]

NONE = -1
"""The explanation of a slot with none (padding, or no rated movie with a positive part)."""

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ScoreParts:
    """What splits the listed movies' scores over the users' ratings (module doc).

    Attributes:
        history: the users' ratings (each user's rows ``start[u]:start[u+1]``).
        items: the model's item factors.
        targets: each rating's weight ``t_j`` in the fold-in's right-hand side (aligned
            with ``history.movies``; movies the model does not know bring nothing).
        normals: each user's fold-in matrix ``A`` (``users × rank × rank``; all zeros
            for a user without a factor).
        listed: the listed movies to explain, ``users × E`` (negative: padding).
        short_term: the blend's short-term part and its transition scores of every
            movie of ``items`` (``users × movies``), when the lists were blended.
    """

    history: UserRatings
    items: ItemIndex
    targets: FloatArray
    normals: FloatArray
    listed: IntArray
    short_term: tuple[ShortTerm, FloatArray] | None = None

    def because(self) -> IntArray:
        """The rated movie behind each listed movie (``users × E``, ``NONE`` where none)."""
        history, listed = self.history, self.listed
        found = np.full(listed.shape, NONE, dtype=np.int64)
        slots = np.arange(listed.shape[1])
        for user, mine in self._by_user():
            best = mine.argmax(axis=0)  # of equal parts the first: the lower movie id
            movies = history.movies[history.start[user] : history.start[user + 1]]
            found[user] = np.where(mine[best, slots] > 0, movies[best], NONE)
        found[listed < 0] = NONE
        return found

    def of_ratings(self) -> FloatArray:
        """Each rating's part of each listed movie's score: ``ratings × E``.

        Row ``j`` belongs to the history's rating ``j``; column ``e`` to each owner's
        listed movie ``e``. A padding column's parts are meaningless.
        """
        history = self.history
        parts = np.zeros((len(history.movies), self.listed.shape[1]))
        for user, mine in self._by_user():
            parts[history.start[user] : history.start[user + 1]] = mine
        return parts

    def _by_user(self) -> Iterator[tuple[int, FloatArray]]:
        """(user position, the parts of their ratings) of each user with ratings, in order.

        Everything that vectorises over the users is done first; the loop is one small
        matrix product per user and the recent movies' terms added to their rows, so no
        ``ratings × E`` array of the whole block is made (such an array with a
        per-segment argmax ran slower).
        """
        history, items, listed = self.history, self.items, self.listed
        users, width = listed.shape
        rows, known = items.lookup(np.maximum(listed, 0))
        listed_factors = items.factors[np.where(known, rows, 0)]  # users × E × rank
        solvable = np.any(self.normals, axis=(1, 2)).astype(np.bool_)
        z = np.zeros((users, items.factors.shape[1], width))  # A⁻¹ yᵢ of each listed movie
        if solvable.any():
            z[solvable] = np.linalg.solve(self.normals[solvable],
                                          np.swapaxes(listed_factors[solvable], 1, 2))  # fmt: skip
        rated_rows, rated_known = items.lookup(history.movies)
        rated_factors = items.factors[np.where(rated_known, rated_rows, 0)]
        weights = np.where(rated_known, self.targets, 0.0)[:, None]
        recent = None if self.short_term is None else _recent_parts(history, listed,
                                                                    *self.short_term)  # fmt: skip
        bounds = history.start.tolist()
        for user, has_factor in enumerate(solvable.tolist()):
            first, last = bounds[user], bounds[user + 1]
            if first == last:
                continue
            if has_factor:
                mine = rated_factors[first:last] @ z[user]
                mine *= weights[first:last]
            else:
                mine = np.zeros((last - first, width))
            if recent is not None:
                at, terms = recent[0][user], recent[1][user]
                kept = at >= 0
                mine[at[kept]] += terms[kept]  # a user's recent movies are distinct
            yield user, mine


def _recent_parts(
    history: UserRatings, listed: IntArray, short_term: ShortTerm, transitions: FloatArray
) -> tuple[IntArray, FloatArray]:
    """Each user's recent movies' scaled transition terms, and their rows among the user's.

    (rows, terms): ``users × memory`` rows within each user's ratings (-1: none), and
    ``users × memory × E`` the terms scaled as the blend scales the transition score.
    """
    top = transitions.max(axis=1, initial=0.0)
    scale = np.divide(short_term.weight, top, out=np.zeros_like(top), where=top > 0)
    recent, terms = short_term.counts.terms(history.users, listed, short_term.decay,
                                            short_term.source_norm)  # fmt: skip
    users, ages = np.nonzero(recent >= 0)
    place = _rating_place(history, users, recent[users, ages])
    rows = np.full(recent.shape, -1, dtype=np.int64)
    rows[users, ages] = np.where(place >= 0, place - history.start[users], -1)
    return rows, terms * scale[:, None, None]


def _rating_place(history: UserRatings, users: IntArray, movies: IntArray) -> IntArray:
    """Row in ``history`` of each (user position, movie); -1 where the user has no such rating."""
    if not len(history.movies):
        return np.full(len(users), -1, dtype=np.int64)
    owner = np.repeat(np.arange(len(history.users), dtype=np.int64), np.diff(history.start))
    keys = owner << 32 | history.movies  # movie ids are below 2**31 (``MAX_ID``)
    order = np.argsort(keys, kind="stable")
    wanted = users.astype(np.int64) << 32 | movies
    at = np.minimum(np.searchsorted(keys[order], wanted), len(keys) - 1)
    return np.where(keys[order][at] == wanted, order[at], -1)
