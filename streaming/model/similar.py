"""Each movie's nearest movies by the model's item factors (cosine), for ``/movies/{id}/similar``.

Computed once per model version, a block of movies at a time, and published with the
version (``serving.layout``'s ``similar`` hash). Ranking reuses ``topn.best_k``: ties
rank by ascending movie id, so the lists are the same on every run. A movie whose
factors are all zero (the model learned nothing about it) has no neighbours and is
nobody's neighbour.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from streaming.model.topn import ItemIndex, best_k

__all__ = ["similar_movies"]

# Scores held at once (32 MB of doubles): blocks of 512 movies up to 8,192 movies, of
# 71 at ML-25M's 59,047.
_CELLS = 2**22


def similar_movies(
    items: ItemIndex, k: int, *, block: int | None = None
) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]]:
    """Blocks of (movie ids, their ``k`` nearest movie ids, cosines), best first.

    Slots past a movie's last neighbour hold id ``-1`` and cosine ``-inf``. ``block``
    movies are scored at a time (default: as many as keep 32 MB of scores).
    """
    block = block or max(1, min(512, _CELLS // max(1, len(items))))
    norms = np.linalg.norm(items.factors, axis=1)
    known = norms > 0
    unit = np.divide(items.factors, norms[:, None], out=np.zeros_like(items.factors),
                     where=known[:, None])  # fmt: skip
    unknown_columns = np.flatnonzero(~known)
    for first in range(0, len(items), block):
        rows = np.arange(first, min(first + block, len(items)))
        scores = unit[rows] @ unit.T
        scores[~known[rows]] = -np.inf
        excluded = [np.append(unknown_columns, row) for row in rows]  # itself, and the unknown
        ids, cosines = best_k(scores, items, excluded, k)
        yield items.movie_ids[rows], ids, cosines
