"""Ids looked up in sorted id arrays.

The one lookup the list, transition and rating models share (movie ids to rows of their
factor tables).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["sorted_lookup"]


def sorted_lookup(
    sorted_ids: npt.NDArray[np.int64], wanted_ids: npt.ArrayLike
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """Row of each wanted id in ``sorted_ids`` (ascending) and whether it is there."""
    wanted = np.asarray(wanted_ids, dtype=np.int64)
    if wanted.size == 0 or len(sorted_ids) == 0:
        return np.zeros(wanted.size, dtype=np.intp), np.zeros(wanted.size, dtype=np.bool_)
    rows = np.minimum(np.searchsorted(sorted_ids, wanted), len(sorted_ids) - 1)
    return rows.astype(np.intp), sorted_ids[rows] == wanted
