"""Lists from histories: fold every given user in against fixed item factors, then top-K.

A retrain publishes, and a micro-batch refreshes, lists the same way: each user's factor
is the exact ALS user step (``streaming.model.foldin``) over their whole accumulated history,
solved for many users at once as a stack of small systems. After a fit that is what
Spark's own last half-step computes for a user whose ratings were all in the training
set, and for a user with newer ratings it folds those in too.

A user none of whose movies the model knows gets no personal list (serving falls back
to the model's popular list) until the next retrain learns those movies. With a rating
model (``streaming.rating.fm``), each listed movie also gets the stars the user is predicted
to give it, from the same ratings.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from streaming.ingest.history import UserRatings
from streaming.linalg import add_grouped
from streaming.model.blend import ShortTerm, blend
from streaming.model.explain import ScoreParts
from streaming.model.foldin import gramian
from streaming.model.topn import ItemIndex, best_k
from streaming.rating.fm import RatingModel

__all__ = ["FoldIn", "UserLists", "fold_in_users", "lists_for"]

_USERS_PER_BLOCK = 512  # users ranked at once: 512 × 10,000 movies is a 40 MB score matrix
_RATINGS_PER_CHUNK = 50_000  # users solved at once: those whose ratings fit in this many


@dataclass(frozen=True)
class FoldIn:
    """The ALS user step of one model: its item factors and regularisation."""

    items: ItemIndex
    reg_param: float
    implicit: bool = False
    alpha: float = 1.0

    @cached_property
    def item_gramian(self) -> npt.NDArray[np.float64]:
        """``YᵀY`` over all items (implicit feedback only needs it); computed once."""
        return gramian(self.items.factors)

    def targets(self, ratings: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Each rating's weight ``t`` in the right-hand side ``Σ t y`` (``streaming.model.foldin``).

        Explicit feedback: the rating. Implicit: ``1 + α|r|`` for a positive rating, else 0.
        """
        if not self.implicit:
            return ratings
        return np.where(ratings > 0, 1.0 + self.alpha * np.abs(ratings), 0.0)


@dataclass(frozen=True)
class UserLists:
    """Top-K lists of some users; rows of users without a personal list are all ``-1``.

    ``stars`` (same shape as ``movies``, ``nan`` where there is none) holds predicted
    ratings when a rating model was given. ``because`` (``users × E``, the first ``E``
    columns of ``movies``; -1 where none) holds the rated movie that raised each listed
    movie's score the most (``streaming.model.explain``), when explanations were asked.
    """

    users: npt.NDArray[np.int64]
    movies: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float64]
    personal: npt.NDArray[np.bool_]
    stars: npt.NDArray[np.float64] | None = None
    because: npt.NDArray[np.int64] | None = None

    def pairs(self, position: int) -> list[tuple[int, float]]:
        """(movie, score) pairs of one user's list, best first, padding dropped."""
        keep = self.movies[position] >= 0
        return list(
            zip(
                self.movies[position][keep].tolist(),
                self.scores[position][keep].tolist(),
                strict=True,
            )
        )

    def stars_of(self, position: int) -> list[float] | None:
        """Predicted stars of one user's listed movies (aligned with ``pairs``), if any."""
        if self.stars is None:
            return None
        chosen: list[float] = self.stars[position][self.movies[position] >= 0].tolist()
        return chosen


def fold_in_users(
    history: UserRatings, model: FoldIn, normals: npt.NDArray[np.float64] | None = None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Factors of every user in ``history`` and whether each has one (knows ≥ 1 movie).

    ``normals`` (``users × rank × rank`` zeros), when given, receives each user's matrix
    ``A`` of the solve (left zero for a user without a factor).
    """
    rank = model.items.factors.shape[1]
    users = len(history.users)
    factors = np.zeros((users, rank))
    solvable = np.zeros(users, dtype=np.bool_)
    base = model.item_gramian if model.implicit else None
    first = 0
    while first < users:
        last = _chunk_end(history.start, first)
        _solve_chunk(history, model, base, first, last, factors, solvable, normals)
        first = last
    return factors, solvable


def lists_for(
    history: UserRatings,
    model: FoldIn,
    k: int,
    stars: RatingModel | None = None,
    short_term: ShortTerm | None = None,
    explain: int = 0,
) -> UserLists:
    """Fold in every user of ``history``, then pick their best ``k`` unrated movies.

    Each listed movie gets its predicted stars when ``stars`` is given, and the first
    ``explain`` of them the rated movie behind them (``UserLists.because``).

    With ``short_term``, movies are ranked by the hybrid score (``streaming.model.blend``),
    and a user the model cannot fold in still gets a personal list when their recent
    movies were followed by any movie of the model.

    Users are scored ``_USERS_PER_BLOCK`` at a time, so the dense users × movies score
    matrices stay small however many users are asked for (a backlog's batch can hold
    tens of thousands).
    """
    count = len(history.users)
    if count <= _USERS_PER_BLOCK:
        return _block_lists(history, model, k, stars, short_term, explain)
    parts = [
        _block_lists(_users_between(history, first, min(first + _USERS_PER_BLOCK, count)),
                     model, k, stars, short_term, explain)
        for first in range(0, count, _USERS_PER_BLOCK)
    ]  # fmt: skip
    return UserLists(
        history.users,
        np.concatenate([part.movies for part in parts]),
        np.concatenate([part.scores for part in parts]),
        np.concatenate([part.personal for part in parts]),
        None if stars is None else np.concatenate([part.stars for part in parts]),
        None if explain <= 0 else np.concatenate([part.because for part in parts]),
    )


def _users_between(history: UserRatings, first: int, last: int) -> UserRatings:
    """The users at positions ``first`` up to ``last`` (excluded), without copying."""
    begin, end = int(history.start[first]), int(history.start[last])
    return UserRatings(history.users[first:last], history.start[first : last + 1] - begin,
                       history.movies[begin:end], history.ratings[begin:end])  # fmt: skip


def _block_lists(
    history: UserRatings,
    model: FoldIn,
    k: int,
    stars: RatingModel | None,
    short_term: ShortTerm | None,
    explain: int = 0,
) -> UserLists:
    """``lists_for`` on one block of users."""
    rank = model.items.factors.shape[1]
    normals = np.zeros((len(history.users), rank, rank)) if explain > 0 else None
    factors, personal = fold_in_users(history, model, normals)
    transitions = None
    if short_term is not None and short_term.weight > 0:
        transitions = short_term.scores(history.users, model.items.movie_ids)
        personal = personal | (transitions.max(axis=1, initial=0.0) > 0)
    rows, known = model.items.lookup(history.movies)
    rated = [
        rows[history.start[u] : history.start[u + 1]][
            known[history.start[u] : history.start[u + 1]]
        ]
        for u in range(len(history.users))
    ]
    scores = blend(factors @ model.items.factors.T, model.items.prior, transitions,
                   0.0 if short_term is None else short_term.weight, in_place=True)  # fmt: skip
    movies, scores = best_k(scores, model.items, rated, k)
    movies[~personal] = -1
    scores[~personal] = -np.inf
    predicted = None
    if stars is not None:
        listed = movies >= 0
        predicted = np.full(movies.shape, np.nan)
        positions = np.repeat(np.arange(len(history.users)), movies.shape[1])[listed.ravel()]
        predicted[listed] = stars.predict(history, positions, movies[listed])
    explained = None
    if normals is not None:
        recent = None if transitions is None or short_term is None else (short_term, transitions)
        explained = ScoreParts(history, model.items, model.targets(history.ratings), normals,
                               movies[:, :explain], recent).because()  # fmt: skip
    return UserLists(history.users, movies, scores, personal, predicted, explained)


def _chunk_end(start: npt.NDArray[np.int64], first: int) -> int:
    """The user after the last one whose ratings fit in a chunk starting at ``first``."""
    limit = start[first] + _RATINGS_PER_CHUNK
    last = int(np.searchsorted(start, limit, side="right")) - 1
    return min(max(last, first + 1), len(start) - 1)


def _solve_chunk(
    history: UserRatings,
    model: FoldIn,
    base: npt.NDArray[np.float64] | None,
    first: int,
    last: int,
    factors: npt.NDArray[np.float64],
    solvable: npt.NDArray[np.bool_],
    normals: npt.NDArray[np.float64] | None,
) -> None:
    window = slice(int(history.start[first]), int(history.start[last]))
    rows, known = model.items.lookup(history.movies[window])
    owner = np.repeat(np.arange(last - first), np.diff(history.start[first : last + 1]))
    owner, y, r = owner[known], model.items.factors[rows[known]], history.ratings[window][known]
    rank = y.shape[1]
    count = last - first
    target = model.targets(r)
    if model.implicit:
        gram = model.item_gramian if base is None else base
        weight = model.alpha * np.abs(r)
        counted = (r > 0).astype(np.float64)
        normal = np.broadcast_to(gram, (count, rank, rank)).copy()
    else:
        weight, counted = np.ones_like(r), np.ones_like(r)
        normal = np.zeros((count, rank, rank))
    rhs = np.zeros((count, rank))
    add_grouped(normal, rhs, owner, lambda part: (y[part], weight[part], target[part]))
    n = np.bincount(owner, weights=counted, minlength=count)
    ok = n > 0
    normal[ok] += model.reg_param * n[ok, None, None] * np.eye(rank)
    if ok.any():
        factors[first:last][ok] = np.linalg.solve(normal[ok], rhs[ok][:, :, None])[:, :, 0]
        if normals is not None:
            normals[first:last][ok] = normal[ok]
    solvable[first:last] = ok
