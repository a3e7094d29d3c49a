"""Top-K movies for a block of users: vectorised numpy, deterministic ties, rated movies out.

Scores are user factors times item factors, plus an optional per-item prior (the
model's popularity prior, ``streaming.model.versions``; zero when none is set). Items are held
sorted by movie id, and the ranking sorts by score with a stable sort, so equal scores
rank by ascending movie id, the same on every run and every machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from streaming.ids import sorted_lookup

__all__ = ["ItemIndex", "best_k", "top_k"]


class ItemIndex:
    """Item factors sorted by movie id, with a lookup from movie id to row.

    ``prior``, aligned with ``movie_ids``, is added to every user's score of the item
    when ranking (``top_k``); fold-in never sees it.
    """

    def __init__(
        self,
        movie_ids: npt.ArrayLike,
        factors: npt.ArrayLike,
        prior: npt.ArrayLike | None = None,
    ) -> None:
        ids = np.asarray(movie_ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        self.movie_ids: npt.NDArray[np.int64] = ids[order]
        self.factors: npt.NDArray[np.float64] = np.asarray(factors, dtype=np.float64)[order]
        extra = np.zeros(len(ids)) if prior is None else np.asarray(prior, dtype=np.float64)
        if extra.shape != ids.shape:
            msg = f"prior has shape {extra.shape}, expected one value per movie {ids.shape}"
            raise ValueError(msg)
        self.prior: npt.NDArray[np.float64] = extra[order]

    def __len__(self) -> int:
        return len(self.movie_ids)

    def rows(self, movie_ids: Sequence[int] | npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
        """Rows of the given movies; movies the model has not seen are left out."""
        rows, known = self.lookup(movie_ids)
        return rows[known]

    def lookup(
        self, movie_ids: Sequence[int] | npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
        """Row of each movie (aligned with the input) and whether the model knows it."""
        return sorted_lookup(self.movie_ids, movie_ids)


def top_k(
    user_factors: npt.NDArray[np.float64],
    items: ItemIndex,
    rated_rows: Sequence[npt.NDArray[np.intp]],
    k: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The best ``k`` unrated movies per user: (movie ids, scores), each ``users × k``.

    A user with fewer than ``k`` unrated movies gets ``-1`` ids and ``-inf`` scores in
    the slots that remain.
    """
    scores = np.asarray(user_factors, dtype=np.float64) @ items.factors.T + items.prior
    return best_k(scores, items, rated_rows, k)


def best_k(
    scores: npt.NDArray[np.float64],
    items: ItemIndex,
    rated_rows: Sequence[npt.NDArray[np.intp]],
    k: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """``top_k`` of scores already computed (``users × items``, changed in place)."""
    for user, rows in enumerate(rated_rows):
        scores[user, rows] = -np.inf
    width = min(k, len(items))
    order = _best_columns(scores, width)
    best = np.take_along_axis(scores, order, axis=1)
    ids = np.where(np.isfinite(best), items.movie_ids[order], -1)
    if width < k:
        pad = k - width
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        best = np.pad(best, ((0, 0), (0, pad)), constant_values=-np.inf)
    return ids.astype(np.int64), best


def _best_columns(scores: npt.NDArray[np.float64], width: int) -> npt.NDArray[np.intp]:
    """Column indices of the ``width`` best scores per row, best first, ties by column.

    ``argpartition`` finds the candidates in linear time and only they are sorted. A
    row whose ``width``-th score is tied with a column left outside the candidates
    could depend on ``argpartition``'s choice, so such rows take the full stable sort.
    """
    if width == 0:
        return np.zeros((scores.shape[0], 0), dtype=np.intp)
    if width >= scores.shape[1]:
        return np.argsort(-scores, axis=1, kind="stable")
    last = scores.shape[1] - width  # the best ``width`` end up past it (no negated copy)
    candidates = np.sort(np.argpartition(scores, last, axis=1)[:, last:], axis=1)
    candidate_scores = np.take_along_axis(scores, candidates, axis=1)
    order = np.take_along_axis(
        candidates, np.argsort(-candidate_scores, axis=1, kind="stable"), axis=1
    )
    threshold = candidate_scores.min(axis=1, keepdims=True)
    tied_outside = (scores == threshold).sum(axis=1) > (candidate_scores == threshold).sum(axis=1)
    for row in np.flatnonzero(tied_outside):
        order[row] = np.argsort(-scores[row], kind="stable")[:width]
    return order
