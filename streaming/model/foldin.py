"""Fold-in: a user's factor recomputed from their whole history, item factors held fixed.

``streaming.model.lists.fold_in_users`` solves it for many users at once.

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

__all__ = ["gramian"]

FloatMatrix = npt.NDArray[np.float64]


def gramian(item_factors: FloatMatrix) -> FloatMatrix:
    """``YᵀY`` over all items; computed once per model for implicit fold-in."""
    factors = np.asarray(item_factors, dtype=np.float64)
    return factors.T @ factors
