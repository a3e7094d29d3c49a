"""How good a retrain is, on the most recent ratings held out of its fit.

The newest share of the stored ratings (by timestamp) is kept out of the fit. On those:

- RMSE of the predicted ratings: the rating model's stars (``streaming.rating.fm``) when
  there is one, else the ALS model's own predictions (explicit feedback only: an
  implicit model scores preferences, not ratings); over the held-out pairs the model
  can predict (the rest are counted, not guessed);
- precision, recall, NDCG and MAP at 10 (``streaming.model.metrics``) of the lists the model
  would publish from its training data (training-rated movies excluded), a held-out
  movie rated at least the relevance threshold counting as relevant; beside the same
  figures of a most-popular list built from the training data (all-time counts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from streaming.model.metrics import RankingFigures, rank_figures
from streaming.model.topn import ItemIndex, top_k
from streaming.rating.fitter import stars_rmse

__all__ = ["Evaluation", "evaluate", "holdout_cutoff", "ordered_counts", "popularity"]

CUTOFF = 10
_USERS_PER_BLOCK = 1024


@dataclass(frozen=True)
class Evaluation:
    """The figures of one retrain, stored with the model's metadata."""

    held_out: int
    rmse: float | None  # None without predicted ratings (implicit ALS, no rating model)
    rmse_pairs: int
    rmse_model: str | None  # "rating-model" (stars) or "als"
    ranked_users: int
    model: RankingFigures | None
    popular: RankingFigures | None

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


def popularity(frame: pd.DataFrame, half_life_days: float = 0.0) -> pd.Series:
    """Ratings per movie, most rated first, ties by ascending movie id.

    With a half-life, a rating counts ``2^(-age / half_life_days)``, its age measured
    in days before the newest rating of ``frame``: recent ratings count more.
    """
    if half_life_days > 0 and len(frame):
        stamps = frame["timestamp"].to_numpy(dtype=np.float64)
        weight = np.exp2(-(stamps.max() - stamps) / (86_400.0 * half_life_days))
        counts = pd.Series(weight).groupby(frame["movie_id"].to_numpy()).sum()
    else:
        counts = frame.groupby("movie_id").size()
    return ordered_counts(counts.index.to_numpy(), counts.to_numpy())


def ordered_counts(movies: npt.ArrayLike, counts: npt.ArrayLike) -> pd.Series:
    """Counts indexed by movie, most first, ties by ascending movie id (``popularity``'s order)."""
    ids = np.asarray(movies)
    values = np.asarray(counts)
    order = np.lexsort((ids, -values))
    return pd.Series(values[order], index=ids[order])


def evaluate(
    train: pd.DataFrame,
    held_out: pd.DataFrame,
    users: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]],
    items: ItemIndex,
    relevant_rating: float,
    *,
    predicts_ratings: bool = True,
    stars: npt.NDArray[np.float64] | None = None,
    popular: pd.Series | None = None,
    held_out_total: int | None = None,
) -> Evaluation:
    """Score a model (user ids and factors, item factors) on ratings it did not see.

    ``stars``, aligned with ``held_out``, are the rating model's predictions (``nan``
    where it has none); RMSE is then theirs. Without them, ``predicts_ratings=False``
    (implicit feedback) leaves RMSE out.

    ``train`` needs to hold the training ratings of ``held_out``'s users only: when both
    are a sample of the users, ``popular`` gives the all-time training counts of every
    movie (``popularity`` of the whole training set; by default ``train``'s), and
    ``held_out_total`` the size of the whole held-out set (by default ``held_out``'s).
    """
    by_user = ItemIndex(*users)  # the same sorted lookup serves users
    user_ids, user_factors = by_user.movie_ids, by_user.factors
    rows, known_user = by_user.lookup(held_out["user_id"].to_numpy())
    item_rows, known_item = items.lookup(held_out["movie_id"].to_numpy())
    both = known_user & known_item
    actual = held_out["rating"].to_numpy()
    rmse, rmse_pairs, rmse_model = None, 0, None
    if stars is not None:
        rmse, rmse_pairs = stars_rmse(stars, actual)
        rmse_model = "rating-model" if rmse_pairs else None
    elif predicts_ratings and both.any():
        predicted = np.einsum("ij,ij->i", user_factors[rows[both]], items.factors[item_rows[both]])
        rmse = float(np.sqrt(np.mean((predicted - actual[both]) ** 2)))
        rmse_pairs, rmse_model = int(both.sum()), "als"

    relevant = held_out[held_out["rating"] >= relevant_rating]
    wanted = relevant.groupby("user_id")["movie_id"].apply(lambda movies: set(movies.tolist()))
    wanted = wanted[wanted.index.isin(user_ids)]
    total = len(held_out) if held_out_total is None else held_out_total
    if wanted.empty:
        return Evaluation(total, rmse, rmse_pairs, rmse_model, 0, None, None)
    rated = train.groupby("user_id")["movie_id"].apply(lambda movies: movies.to_numpy())
    counts = popularity(train) if popular is None else popular
    popular_items = ItemIndex(counts.index.to_numpy(), counts.to_numpy(dtype=np.float64)[:, None])
    model_lists: list[list[int]] = []
    popular_lists: list[list[int]] = []
    targets = wanted.index.to_numpy()
    for first in range(0, len(targets), _USERS_PER_BLOCK):
        block = targets[first : first + _USERS_PER_BLOCK]
        seen = [rated.get(user, np.zeros(0, dtype=np.int64)) for user in block.tolist()]
        factors = user_factors[by_user.lookup(block)[0]]
        ours, _ = top_k(factors, items, [items.rows(s) for s in seen], CUTOFF)
        theirs, _ = top_k(
            np.ones((len(block), 1)), popular_items, [popular_items.rows(s) for s in seen], CUTOFF
        )
        model_lists.extend(row[row >= 0].tolist() for row in ours)
        popular_lists.extend(row[row >= 0].tolist() for row in theirs)
    sets = [wanted[user] for user in targets.tolist()]
    return Evaluation(
        held_out=total,
        rmse=rmse,
        rmse_pairs=rmse_pairs,
        rmse_model=rmse_model,
        ranked_users=len(targets),
        model=rank_figures(model_lists, sets, CUTOFF),
        popular=rank_figures(popular_lists, sets, CUTOFF),
    )
