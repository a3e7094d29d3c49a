"""Fold-in: a user's factor recomputed from their whole history, item factors held fixed.

This is exactly the user half-step of Spark MLlib's ALS (``ALS.computeFactors``), so a
folded-in user is where the next ALS iteration would put them:

- explicit feedback: ``x = (Σ y yᵀ + λ n I)⁻¹ Σ r y`` over the user's n ratings;
- implicit feedback (Hu, Koren, Volinsky with Spark's extension to r ≤ 0): with
  ``c = α |r|``, ``x = (YᵀY + Σ c y yᵀ + λ n⁺ I)⁻¹ Σ_{r>0} (1 + c) y``, where ``YᵀY``
  runs over all items and n⁺ counts the positive ratings.

λ is weighted by the number of ratings as in Spark (the ALS-WR paper).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["fold_in_user", "gramian"]

FloatMatrix = npt.NDArray[np.float64]


def gramian(item_factors: FloatMatrix) -> FloatMatrix:
    """``YᵀY`` over all items; computed once per model for implicit fold-in."""
    factors = np.asarray(item_factors, dtype=np.float64)
    return factors.T @ factors


def fold_in_user(
    rated_factors: FloatMatrix,
    ratings: npt.NDArray[np.float64],
    reg_param: float,
    *,
    implicit: bool = False,
    alpha: float = 1.0,
    item_gramian: FloatMatrix | None = None,
) -> npt.NDArray[np.float64]:
    """The user's factor given the factors of the items they rated and their ratings.

    Args:
        rated_factors: one row per rating, the factor of the rated item.
        ratings: the user's ratings, aligned with ``rated_factors``.
        reg_param: ALS ``regParam``.
        implicit: the model was trained with ``implicitPrefs=True``.
        alpha: ALS ``alpha`` (implicit only).
        item_gramian: ``gramian(all item factors)``; required when ``implicit``.
    """
    y = np.asarray(rated_factors, dtype=np.float64)
    r = np.asarray(ratings, dtype=np.float64)
    rank = y.shape[1]
    if not implicit:
        normal = y.T @ y
        rhs = y.T @ r
        count = len(r)
    else:
        if item_gramian is None:
            msg = "implicit fold-in needs item_gramian (YᵀY of all item factors)"
            raise ValueError(msg)
        confidence = alpha * np.abs(r)
        normal = np.asarray(item_gramian, dtype=np.float64) + (y * confidence[:, None]).T @ y
        positive = r > 0
        rhs = y[positive].T @ (1.0 + confidence[positive])
        count = int(positive.sum())
    normal = normal + reg_param * count * np.eye(rank)
    if count == 0:
        return np.zeros(rank)
    return np.asarray(np.linalg.solve(normal, rhs), dtype=np.float64)
