"""Ranking and rating metrics, defined once for every protocol.

A ranked list is scored against the set of movies the user found relevant (by default
a held-out rating of at least 4). At cutoff k, with ``hit_j`` = 1 when the j-th listed
movie is relevant and R the number of relevant movies:

- precision@k = (hits in the top k) / k: a list shorter than k still divides by k;
- recall@k = (hits in the top k) / R;
- NDCG@k = Σ hit_j / log2(j + 1) over the top k, divided by the same sum for an ideal
  list (min(R, k) hits first);
- AP@k = Σ precision@j · hit_j over the top k, divided by min(R, k); MAP is its mean;
- hit@k (prequential) = 1 when the one movie rated next is in the top k.

Users with no relevant movie have no defined recall, NDCG or AP, so they are left out
of the means (and counted). Lists are taken as given: ties must already be broken by
whoever ranked them (recstream breaks them by ascending movie id).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["RankingFigures", "mae", "rank_figures", "rmse"]


@dataclass(frozen=True)
class RankingFigures:
    """Means over the users that had at least one relevant movie."""

    users: int
    skipped: int  # users without a relevant movie
    precision: float
    recall: float
    ndcg: float
    map: float


def rank_figures(
    lists: Iterable[Sequence[int]], relevant: Iterable[set[int]], k: int = 10
) -> RankingFigures:
    """Mean precision, recall, NDCG and AP at ``k`` of ranked lists against relevant sets."""
    if k < 1:
        msg = f"k must be at least 1, got {k}"
        raise ValueError(msg)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    rows: list[tuple[float, float, float, float]] = []
    skipped = 0
    for listed, wanted in zip(lists, relevant, strict=True):
        if not wanted:
            skipped += 1
            continue
        hit = np.array([movie in wanted for movie in list(listed)[:k]], dtype=np.float64)
        found = hit.sum()
        ideal = discount[: min(len(wanted), k)].sum()
        precision_at = np.cumsum(hit) / np.arange(1, len(hit) + 1)
        rows.append(
            (
                found / k,
                found / len(wanted),
                float((hit * discount[: len(hit)]).sum() / ideal),
                float((precision_at * hit).sum() / min(len(wanted), k)),
            )
        )
    if not rows:
        return RankingFigures(0, skipped, 0.0, 0.0, 0.0, 0.0)
    means = np.mean(np.array(rows), axis=0)
    return RankingFigures(len(rows), skipped, *(round(float(m), 6) for m in means))


def rmse(predicted: npt.ArrayLike, actual: npt.ArrayLike) -> float:
    """Root mean squared error."""
    error = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return float(np.sqrt(np.mean(error**2)))


def mae(predicted: npt.ArrayLike, actual: npt.ArrayLike) -> float:
    """Mean absolute error."""
    error = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return float(np.mean(np.abs(error)))
