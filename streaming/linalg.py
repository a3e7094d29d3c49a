"""Many small regularised least-squares problems at once, one per owner (a user).

The list model's ALS user step (``streaming.model.lists``) and the rating model's
per-user posterior mean (``streaming.rating.fm``) both solve, for every user, normal
equations ``(B + Σᵢ wᵢ xᵢ xᵢᵀ) θ = b + Σᵢ xᵢ tᵢ`` summed over that user's ratings ``i``.
``add_grouped`` adds the sums of many users at once; the caller starts from its prior
(``B``, ``b``) and calls ``np.linalg.solve`` on the stack.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

__all__ = ["FLOATS_PER_CHUNK", "Terms", "add_grouped"]

# Bounds the terms built at once: ratings × ... × d floats (2M floats, 16 MB).
FLOATS_PER_CHUNK = 2_000_000


Terms = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]


def add_grouped(
    normal: npt.NDArray[np.float64],
    rhs: npt.NDArray[np.float64],
    owner: npt.NDArray[np.int64],
    terms: Callable[[slice], Terms],
) -> None:
    """Add each rating's ``w xxᵀ`` to ``normal[owner]`` and ``x t`` to ``rhs[owner]``.

    Args:
        normal: ``(owners, ..., d, d)``, added to in place.
        rhs: ``(owners, ..., d)``, added to in place.
        owner: ``(n,)`` the owner of each rating, ascending (each owner's ratings one run).
        terms: given a slice of the ratings (``m`` of them), their regressors ``x``
            ``(..., m, d)``, weights ``w`` ``(..., m)`` and targets ``t`` ``(..., m)``
            (already weighted as the caller needs).

    The ``...`` axes (for example posterior draws) are solved side by side. Ratings are
    taken in chunks so that the terms of one chunk stay within ``FLOATS_PER_CHUNK``; an
    owner whose run straddles two chunks gets both parts. Each owner's sums are one
    matrix product: a reduce over a ``d × d`` outer product per rating was several times
    slower, for the memory it moves.
    """
    step = max(1, FLOATS_PER_CHUNK // int(np.prod(rhs.shape[1:])))
    for first in range(0, len(owner), step):
        part = slice(first, first + step)
        x, weight, target = terms(part)
        weighted = np.swapaxes(x * weight[..., None], -1, -2)  # (..., d, m)
        present, starts = np.unique(owner[part], return_index=True)
        ends = np.append(starts[1:], len(owner[part]))
        for who, begin, end in zip(present.tolist(), starts.tolist(), ends.tolist(),
                                   strict=True):  # fmt: skip
            block = x[..., begin:end, :]
            normal[who] += weighted[..., begin:end] @ block
            rhs[who] += np.einsum("...md,...m->...d", block, target[..., begin:end])
