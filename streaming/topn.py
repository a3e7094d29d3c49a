"""Top-K movies for a block of users: vectorised numpy, deterministic ties, rated movies out.

Scores are user factors times item factors. Items are held sorted by movie id, and the
ranking sorts by score with a stable sort, so equal scores rank by ascending movie id,
the same on every run and every machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["ItemIndex", "top_k"]


class ItemIndex:
    """Item factors sorted by movie id, with a lookup from movie id to row."""

    def __init__(self, movie_ids: npt.ArrayLike, factors: npt.ArrayLike) -> None:
        ids = np.asarray(movie_ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        self.movie_ids: npt.NDArray[np.int64] = ids[order]
        self.factors: npt.NDArray[np.float64] = np.asarray(factors, dtype=np.float64)[order]
        self._row = {int(movie): row for row, movie in enumerate(self.movie_ids)}

    def __len__(self) -> int:
        return len(self.movie_ids)

    def rows(self, movie_ids: Sequence[int] | npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
        """Rows of the given movies; movies the model has not seen are left out."""
        found = [self._row[int(m)] for m in movie_ids if int(m) in self._row]
        return np.asarray(found, dtype=np.intp)


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
    scores = np.asarray(user_factors, dtype=np.float64) @ items.factors.T
    for user, rows in enumerate(rated_rows):
        scores[user, rows] = -np.inf
    width = min(k, len(items))
    # Stable sort on the negated scores: ties keep ascending movie-id order.
    order = np.argsort(-scores, axis=1, kind="stable")[:, :width]
    best = np.take_along_axis(scores, order, axis=1)
    ids = np.where(np.isfinite(best), items.movie_ids[order], -1)
    if width < k:
        pad = k - width
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        best = np.pad(best, ((0, 0), (0, pad)), constant_values=-np.inf)
    return ids.astype(np.int64), best
