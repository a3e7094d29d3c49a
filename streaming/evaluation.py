"""How good a retrain is, on the most recent ratings held out of its fit.

The newest share of the stored ratings (by timestamp) is kept out of the fit. On those:

- RMSE of the model's predictions, over the held-out pairs whose user and movie the
  model knows (the rest are counted, not guessed);
- precision@10, recall@10 and NDCG@10 of the lists the model would publish from its
  training data (training-rated movies excluded), a held-out movie rated at least the
  relevance threshold counting as relevant; beside the same figures of a most-popular
  list built from the training data, which explicit ALS often fails to beat.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from streaming.topn import ItemIndex, top_k

__all__ = ["Evaluation", "RankingScores", "evaluate", "holdout_cutoff", "popularity"]

CUTOFF = 10
_USERS_PER_BLOCK = 1024


@dataclass(frozen=True)
class RankingScores:
    """Mean precision, recall and NDCG at 10 over the evaluated users."""

    precision: float
    recall: float
    ndcg: float


@dataclass(frozen=True)
class Evaluation:
    """The figures of one retrain, stored with the model's metadata."""

    held_out: int
    rmse: float | None
    rmse_pairs: int
    ranked_users: int
    model: RankingScores | None
    popular: RankingScores | None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return asdict(self)


def holdout_cutoff(timestamps: npt.NDArray[np.int64], fraction: float) -> int | None:
    """The timestamp from which ratings are held out, or None when nothing can be.

    Ratings at or after the cutoff are held out; a cutoff that would leave the training
    set empty (all ratings at one instant) holds nothing out.
    """
    if fraction <= 0 or len(timestamps) < 2:
        return None
    ordered = np.sort(timestamps)
    cutoff = int(ordered[int(len(ordered) * (1 - fraction))])
    return cutoff if cutoff > ordered[0] else None


def popularity(frame: pd.DataFrame) -> pd.Series:
    """Ratings per movie, most rated first, ties by ascending movie id."""
    counts = frame.groupby("movie_id").size()
    order = np.lexsort((counts.index.to_numpy(), -counts.to_numpy()))
    return counts.iloc[order]


def evaluate(
    train: pd.DataFrame,
    held_out: pd.DataFrame,
    users: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]],
    items: ItemIndex,
    relevant_rating: float,
) -> Evaluation:
    """Score a model (user ids and factors, item factors) on ratings it did not see."""
    by_user = ItemIndex(*users)  # the same sorted lookup serves users
    user_ids, user_factors = by_user.movie_ids, by_user.factors
    rows, known_user = by_user.lookup(held_out["user_id"].to_numpy())
    item_rows, known_item = items.lookup(held_out["movie_id"].to_numpy())
    both = known_user & known_item
    rmse = None
    if both.any():
        predicted = np.einsum("ij,ij->i", user_factors[rows[both]], items.factors[item_rows[both]])
        rmse = float(np.sqrt(np.mean((predicted - held_out["rating"].to_numpy()[both]) ** 2)))

    relevant = held_out[held_out["rating"] >= relevant_rating]
    wanted = relevant.groupby("user_id")["movie_id"].apply(lambda movies: set(movies.tolist()))
    wanted = wanted[wanted.index.isin(user_ids)]
    if wanted.empty:
        return Evaluation(len(held_out), rmse, int(both.sum()), 0, None, None)
    rated = train.groupby("user_id")["movie_id"].apply(lambda movies: movies.to_numpy())
    counts = popularity(train)
    popular_items = ItemIndex(counts.index.to_numpy(), counts.to_numpy(dtype=np.float64)[:, None])
    model_hits, popular_hits = [], []
    targets = wanted.index.to_numpy()
    for first in range(0, len(targets), _USERS_PER_BLOCK):
        block = targets[first : first + _USERS_PER_BLOCK]
        seen = [rated.get(user, np.zeros(0, dtype=np.int64)) for user in block.tolist()]
        factors = user_factors[by_user.lookup(block)[0]]
        model_lists, _ = top_k(factors, items, [items.rows(s) for s in seen], CUTOFF)
        popular_lists, _ = top_k(
            np.ones((len(block), 1)), popular_items, [popular_items.rows(s) for s in seen], CUTOFF
        )
        for position, user in enumerate(block.tolist()):
            model_hits.append(_hits(model_lists[position], wanted[user]))
            popular_hits.append(_hits(popular_lists[position], wanted[user]))
    sizes = [len(wanted[user]) for user in targets.tolist()]
    return Evaluation(
        held_out=len(held_out),
        rmse=rmse,
        rmse_pairs=int(both.sum()),
        ranked_users=len(targets),
        model=_scores(model_hits, sizes),
        popular=_scores(popular_hits, sizes),
    )


def _hits(listed: npt.NDArray[np.int64], relevant: set[int]) -> npt.NDArray[np.bool_]:
    return np.array([movie in relevant for movie in listed.tolist()], dtype=np.bool_)


def _scores(hits: list[npt.NDArray[np.bool_]], sizes: list[int]) -> RankingScores:
    discount = 1.0 / np.log2(np.arange(2, CUTOFF + 2))
    precision, recall, ndcg = [], [], []
    for hit, size in zip(hits, sizes, strict=True):
        found = float(hit.sum())
        precision.append(found / CUTOFF)
        recall.append(found / size)
        ideal = discount[: min(size, CUTOFF)].sum()
        ndcg.append(float((hit * discount[: len(hit)]).sum() / ideal))
    return RankingScores(
        precision=round(float(np.mean(precision)), 6),
        recall=round(float(np.mean(recall)), 6),
        ndcg=round(float(np.mean(ndcg)), 6),
    )
