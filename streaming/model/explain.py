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
equal parts go to the rating that comes first in the history.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from streaming.ingest.history import UserRatings
from streaming.model.blend import ShortTerm
from streaming.model.topn import ItemIndex

__all__ = ["NONE", "because", "rating_parts"]

NONE = -1
"""The explanation of a slot with none (padding, or no rated movie with a positive part)."""

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def because(history: UserRatings, parts: FloatArray, listed: IntArray) -> IntArray:
    """The rated movie behind each listed movie (``users × E``, ``NONE`` where none).

    ``parts`` are each rating's parts of the ``listed`` movies' scores (``rating_parts``);
    a negative listed movie is padding.
    """
    found = np.full(listed.shape, NONE, dtype=np.int64)
    lengths = np.diff(history.start)
    rated = np.flatnonzero(lengths > 0)
    if not len(rated):
        return found
    starts = history.start[rated]
    best = np.maximum.reduceat(parts, starts, axis=0)  # users with ratings × E
    owner = np.repeat(np.arange(len(rated)), lengths[rated])
    position = np.arange(len(parts))[:, None]
    first = np.minimum.reduceat(
        np.where(parts == best[owner], position, len(parts)), starts, axis=0
    )
    explained = np.where(best > 0, history.movies[np.minimum(first, len(parts) - 1)], NONE)
    found[rated] = explained
    found[listed < 0] = NONE
    return found


def rating_parts(
    history: UserRatings,
    items: ItemIndex,
    targets: FloatArray,
    normals: FloatArray,
    listed: IntArray,
    short_term: tuple[ShortTerm, FloatArray] | None = None,
) -> FloatArray:
    """Each rating's part of each listed movie's score: ``ratings × E`` (module doc).

    Row ``j`` belongs to the history's rating ``j``; column ``e`` to each owner's listed
    movie ``e``. A padding column's parts are meaningless.

    Args:
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
    users, width = listed.shape
    parts = np.zeros((len(history.movies), width))
    rows, known = items.lookup(np.maximum(listed, 0))
    listed_factors = items.factors[np.where(known, rows, 0)]  # users × E × rank
    solvable = np.flatnonzero(normals.any(axis=(1, 2)))
    if len(solvable):
        z = np.zeros((users, items.factors.shape[1], width))
        z[solvable] = np.linalg.solve(normals[solvable],
                                      np.swapaxes(listed_factors[solvable], 1, 2))  # fmt: skip
        rated_rows, rated_known = items.lookup(history.movies)
        rated_factors = items.factors[np.where(rated_known, rated_rows, 0)]
        weights = np.where(rated_known, targets, 0.0)
        for user in solvable.tolist():
            mine = slice(int(history.start[user]), int(history.start[user + 1]))
            parts[mine] = (rated_factors[mine] @ z[user]) * weights[mine, None]
    if short_term is not None:
        _add_recent_parts(parts, history, items, listed, *short_term)
    return parts


def _add_recent_parts(
    parts: FloatArray,
    history: UserRatings,
    items: ItemIndex,
    listed: IntArray,
    short_term: ShortTerm,
    transitions: FloatArray,
) -> None:
    """Add each recent movie's scaled transition term to its rating's row of ``parts``."""
    top = transitions.max(axis=1, initial=0.0)
    scale = np.divide(short_term.weight, top, out=np.zeros_like(top), where=top > 0)
    recent, terms = short_term.counts.terms(history.users, listed, short_term.decay,
                                            short_term.source_norm)  # fmt: skip
    users, ages = np.nonzero(recent >= 0)
    place = _rating_place(history, users, recent[users, ages])
    found = place >= 0
    np.add.at(parts, place[found],
              terms[users[found], ages[found]] * scale[users[found], None])  # fmt: skip


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
