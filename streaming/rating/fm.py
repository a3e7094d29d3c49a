"""recstream's rating model: a Bayesian factorization machine (``myfm``), the predicted stars.

The lists rank by implicit-feedback ALS, which scores preferences, not ratings. The stars
a user is told they would give a movie come from this model: a factorization machine
fitted by Gibbs sampling in the maintained ``myfm`` package (C++), over two blocks of
features per rating (Rendle's relation blocks, so each user's and movie's row is built
once, not once per rating):

- the **user block**: the user's id, and the set of movies they rated, each weighted
  ``1/√n`` (SVD++'s implicit feedback);
- the **movie block**: the movie's id, and the set of users who rated it, ``1/√n`` each.

The rating is ``w₀ + Σ wᵢxᵢ + Σ_{i<j} ⟨vᵢ, vⱼ⟩ xᵢxⱼ`` over both blocks' features. After
``rating_burn_in`` sweeps, ``rating_samples`` draws spread evenly over the remaining
sweeps are kept, and a prediction averages the draws.

Split by block, a draw's rating is ``w₀ + a(user) + b(movie) + ⟨p(user), q(movie)⟩`` with
``p`` the sum of the user block's factors and ``a`` its linear and within-block terms
(and ``q``, ``b`` the movie block's). The movie side is computed once at the fit. The
user side is computed at prediction from **the user's ratings now**: their rated-movie
features, and their own id terms as the conditional posterior mean given those ratings
under each draw (``RatingModel.user_side``). So a user who has just rated, or whom the
fit never saw, is predicted from their ratings without a refit. Movies the model has not
seen (and ratings of them) are left out; they get no prediction.

The fit holds the Python GIL for its whole run, so the job fits in a separate process
(``fit_in_process``), not in a thread beside the micro-batches.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sparse

from streaming.ids import sorted_lookup
from streaming.ingest.history import UserRatings
from streaming.linalg import Terms, add_grouped

__all__ = ["FitCancelledError", "RatingModel", "fit_in_process", "fit_rating_model"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

SCALE = (1.0, 5.0)
_PAIRS_PER_CHUNK = 4_096  # pairs predicted at once: pairs × draws × rank floats


class FitCancelledError(Exception):
    """The fit was asked to stop (``should_stop``) before its last sweep."""


@dataclass(frozen=True)
class RatingModel:
    """Kept draws of a fitted factorization machine.

    Its movie side, the factors of the "rated this movie" features, and the prior of a
    user's own (id) terms.

    ``(draws, n, rank)`` arrays hold factors, ``(draws, n)`` arrays per-draw scalars.
    """

    movie_ids: IntArray  # sorted: the movies of the fit
    rated_factors: FloatArray  # (draws, movies, rank): "the user rated this movie"
    rated_weights: FloatArray  # (draws, movies)
    movie_factors: FloatArray  # (draws, movies, rank): q, the movie block's summed factor
    movie_bias: FloatArray  # (draws, movies): w₀ + the movie block's own terms
    prior_mean: FloatArray  # (draws, rank + 1): a user id's (w, v) prior mean ...
    prior_precision: FloatArray  # (draws, rank + 1): ... and precision
    noise_precision: FloatArray  # (draws,): α

    @property
    def draws(self) -> int:
        """Number of kept posterior draws."""
        return int(self.movie_factors.shape[0])

    def rows(self, movie_ids: npt.ArrayLike) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
        """Row of each movie and whether the model knows it."""
        return sorted_lookup(self.movie_ids, movie_ids)

    def implicit_side(self, users: UserRatings) -> tuple[FloatArray, FloatArray]:
        """``P`` (users, draws, rank) and ``A`` (users, draws).

        The summed factors and the own terms of each user's "rated this movie" features,
        from the movies they have rated that the model knows (each once, weighted 1/√n).
        """
        count, movies = len(users.users), len(self.movie_ids)
        owner = np.repeat(np.arange(count), np.diff(users.start))
        rows, known = self.rows(users.movies)
        rated = _implicit(owner[known], rows[known].astype(np.int64), (count, movies))
        squared = rated.multiply(rated).tocsr()
        summed = np.empty((count, self.draws, self.movie_factors.shape[2]))
        own = np.empty((count, self.draws))
        for draw in range(self.draws):
            factors = self.rated_factors[draw]
            summed[:, draw] = rated @ factors
            own[:, draw] = rated @ self.rated_weights[draw] + 0.5 * (
                np.sum(summed[:, draw] ** 2, axis=1) - squared @ np.sum(factors**2, axis=1)
            )
        return summed, own

    def user_side(self, users: UserRatings) -> tuple[FloatArray, FloatArray]:
        """Each user's vector (users, draws, rank) and scalar (users,).

        A draw predicts ``movie_bias + scalar + vector · movie_factors``.

        A user's own terms ``(w, v)`` are not the fit's draw but, for each draw, their
        conditional posterior mean given the user's ratings now (Rao-Blackwellised, as
        in Bayesian linear regression): a rating ``r`` of movie ``m`` is
        ``c + w + v · (P + q_m)`` with ``c`` what the rest of the draw predicts. A user
        without a known rating gets the prior mean.
        """
        summed, own = self.implicit_side(users)
        count, draws, rank = summed.shape
        normal = np.broadcast_to(
            _diagonal(self.prior_precision), (count, draws, rank + 1, rank + 1)
        ).copy()
        rhs = np.broadcast_to(
            self.prior_precision * self.prior_mean, (count, draws, rank + 1)
        ).copy()
        owner = np.repeat(np.arange(count), np.diff(users.start))
        rows, known = self.rows(users.movies)
        owner, rows, given = owner[known], rows[known], users.ratings[known]
        alpha = self.noise_precision

        def terms(part: slice) -> Terms:
            # Per draw and rating: the regressors (1, P + q_m) of the user's own terms
            # (w, v) and what the rest of the draw leaves to explain, weighted by α.
            at, row = owner[part], rows[part]
            q = self.movie_factors[:, row]  # (draws, ratings, rank)
            p = np.transpose(summed[at], (1, 0, 2))
            design = np.concatenate([np.ones((draws, len(at), 1)), p + q], axis=2)
            rest = self.movie_bias[:, row] + own[at].T + np.einsum("srd,srd->sr", p, q)
            weight = np.broadcast_to(alpha[:, None], (draws, len(at)))
            return design, weight, weight * (given[part][None, :] - rest)

        add_grouped(normal, rhs, owner, terms)
        solved = np.linalg.solve(normal, rhs[..., None])[..., 0]  # (users, draws, rank + 1)
        weight, vector = solved[..., 0], solved[..., 1:]
        scalar = np.mean(own + weight + np.einsum("udr,udr->ud", vector, summed), axis=1)
        return summed + vector, scalar

    def predict(
        self, users: UserRatings, positions: npt.ArrayLike, movie_ids: npt.ArrayLike
    ) -> FloatArray:
        """Predicted stars (clipped to 1-5) of pairs.

        User ``users.users[positions[i]]`` and movie ``movie_ids[i]``; ``nan`` where the
        model does not know the movie.
        """
        at = np.asarray(positions, dtype=np.int64)
        rows, known = self.rows(movie_ids)
        stars = np.full(len(rows), np.nan)
        if not known.any():
            return stars
        vector, scalar = self.user_side(users)
        bias = self.movie_bias.mean(axis=0)
        chosen = np.flatnonzero(known)
        for first in range(0, len(chosen), _PAIRS_PER_CHUNK):
            part = chosen[first : first + _PAIRS_PER_CHUNK]
            picked = self.movie_factors[:, rows[part]]  # (draws, pairs, rank)
            raw = np.einsum("psd,spd->p", vector[at[part]], picked) / self.draws
            stars[part] = np.clip(raw + scalar[at[part]] + bias[rows[part]], *SCALE)
        return stars

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        """The model as named arrays (``np.savez`` them; ``from_arrays`` reads them back)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_arrays(cls, arrays: dict[str, npt.NDArray[Any]]) -> RatingModel:
        """The model ``arrays`` describes."""
        return cls(**{name: np.asarray(arrays[name]) for name in cls.__dataclass_fields__})


def _diagonal(values: FloatArray) -> FloatArray:
    """(..., n) → (..., n, n) diagonal matrices."""
    return values[..., None] * np.eye(values.shape[-1])


def fit_rating_model(
    users: IntArray,
    movies: IntArray,
    ratings: FloatArray,
    *,
    rank: int,
    sweeps: int,
    burn_in: int,
    samples: int,
    seed: int,
    should_stop: Callable[[], bool] | None = None,
) -> RatingModel:
    """Fit the factorization machine on (user, movie, rating) triples.

    Keep ``samples`` draws spread evenly from sweep ``burn_in`` to the last.

    ``should_stop`` is asked after each sweep; when it answers True the fit ends.

    Raises:
        ValueError: no ratings, or ``samples`` does not fit in ``sweeps - burn_in``.
        FitCancelledError: ``should_stop`` answered True.
    """
    import myfm

    if len(ratings) == 0:
        msg = "the rating model needs at least one rating to fit"
        raise ValueError(msg)
    if not 1 <= samples <= sweeps - burn_in:
        msg = (
            f"rating_samples ({samples}) must be between 1 and rating_sweeps - "
            f"rating_burn_in ({sweeps} - {burn_in}); raise the sweeps or keep fewer draws"
        )
        raise ValueError(msg)
    user_ids, user_of = np.unique(np.asarray(users, dtype=np.int64), return_inverse=True)
    movie_ids, movie_of = np.unique(np.asarray(movies, dtype=np.int64), return_inverse=True)
    n_users, n_movies = len(user_ids), len(movie_ids)
    rated = _implicit(user_of, movie_of, (n_users, n_movies))  # user → rated movies
    raters = _implicit(movie_of, user_of, (n_movies, n_users))  # movie → its raters
    user_block = sparse.hstack([sparse.identity(n_users, format="csr"), rated], format="csr")
    movie_block = sparse.hstack([sparse.identity(n_movies, format="csr"), raters], format="csr")

    keep = set(np.linspace(burn_in, sweeps - 1, samples).round().astype(int).tolist())
    kept: list[_Draw] = []
    stopped: list[int] = []

    def after_sweep(sweep: int, fm: Any, hyper: Any, *_: Any) -> tuple[bool, str | None]:
        if sweep in keep:  # group 0 is the user ids: their prior, for the fold-in
            prior_mean = np.r_[hyper.mu_w[0], hyper.mu_V[0]]
            prior_precision = np.r_[hyper.lambda_w[0], hyper.lambda_V[0]]
            kept.append(_Draw(float(fm.w0), np.array(fm.w), np.array(fm.V),
                              prior_mean, prior_precision, float(hyper.alpha)))  # fmt: skip
        if should_stop is not None and should_stop() and sweep < sweeps - 1:
            stopped.append(sweep)
            return True, None
        return False, None

    fm = myfm.MyFMRegressor(rank=rank, random_seed=seed)
    with _quiet(myfm):
        fm.fit(
            None,
            np.asarray(ratings, dtype=np.float64),
            X_rel=[
                myfm.RelationBlock(user_of, user_block),
                myfm.RelationBlock(movie_of, movie_block),
            ],
            n_iter=sweeps,
            n_kept_samples=1,
            group_shapes=[n_users, n_movies, n_movies, n_users],
            callback=after_sweep,
        )
    if stopped:
        msg = f"rating model fit stopped at sweep {stopped[0] + 1} of {sweeps}"
        raise FitCancelledError(msg)
    return _split(kept, n_users, movie_ids, raters)


@contextlib.contextmanager
def _quiet(myfm: Any) -> Iterator[None]:
    """Without myfm's progress bar (its ``fit`` has no switch for it).

    The job logs its own lines, and a bar per retrain would fill them.
    """
    shown = myfm.base.tqdm
    myfm.base.tqdm = functools.partial(shown, disable=True)
    try:
        yield
    finally:
        myfm.base.tqdm = shown


def _implicit(owner: IntArray, other: IntArray, shape: tuple[int, int]) -> sparse.csr_matrix:
    """Each owner's set of others (a pair counted once), each weighted 1/√(set size)."""
    pairs = np.unique(owner * shape[1] + other)
    owner, other = pairs // shape[1], pairs % shape[1]
    norm = 1.0 / np.sqrt(np.maximum(np.bincount(owner, minlength=shape[0]), 1))
    return sparse.csr_matrix((norm[owner], (owner, other)), shape=shape)


@dataclass(frozen=True)
class _Draw:
    w0: float
    w: FloatArray  # (features,)
    v: FloatArray  # (features, rank)
    prior_mean: FloatArray
    prior_precision: FloatArray
    alpha: float


def _split(
    kept: list[_Draw], n_users: int, movie_ids: IntArray, raters: sparse.csr_matrix
) -> RatingModel:
    """The kept draws split into the model's sides.

    Features are laid out as [user ids, rated movies, movie ids, raters] (the relation
    blocks in order).
    """
    n_movies = len(movie_ids)
    movie_start, raters_start = n_users + n_movies, n_users + 2 * n_movies
    squared = raters.multiply(raters).tocsr()
    movie_factors, movie_bias = [], []
    for draw in kept:
        w, v = draw.w, draw.v
        q = v[movie_start:raters_start] + raters @ v[raters_start:]
        own_squares = np.sum(v[movie_start:raters_start] ** 2, axis=1)
        own_squares += squared @ np.sum(v[raters_start:] ** 2, axis=1)
        linear = w[movie_start:raters_start] + raters @ w[raters_start:]
        movie_factors.append(q)
        movie_bias.append(draw.w0 + linear + 0.5 * (np.sum(q**2, axis=1) - own_squares))
    return RatingModel(
        movie_ids=movie_ids,
        rated_factors=np.stack([draw.v[n_users:movie_start] for draw in kept]),
        rated_weights=np.stack([draw.w[n_users:movie_start] for draw in kept]),
        movie_factors=np.stack(movie_factors),
        movie_bias=np.stack(movie_bias),
        prior_mean=np.stack([draw.prior_mean for draw in kept]),
        prior_precision=np.stack([draw.prior_precision for draw in kept]),
        noise_precision=np.array([draw.alpha for draw in kept]),
    )


def fit_in_process(
    users: IntArray,
    movies: IntArray,
    ratings: FloatArray,
    *,
    should_stop: Callable[[], bool],
    poll_s: float = 0.2,
    **options: Any,
) -> RatingModel:
    """``fit_rating_model`` in a fresh (spawned) process.

    The fit then does not hold this process's GIL. ``should_stop`` is asked every
    ``poll_s``; when it answers True the child is told to stop after its current sweep
    (and ended if it has not within 5 s).

    Raises:
        FitCancelledError: ``should_stop`` answered True.
        RuntimeError: the fit failed (its error) or its process died (its exit code).
    """
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(
        target=_fit_and_send, args=(theirs, users, movies, ratings, options),
        name="recstream-rating-model", daemon=True,
    )  # fmt: skip
    child.start()
    theirs.close()
    stopped = False
    try:
        while not ours.poll(poll_s):
            if should_stop():
                stopped = True
                with contextlib.suppress(OSError):  # the child may have just ended
                    ours.send("stop")
                break
            if not child.is_alive() and not ours.poll(0):
                msg = f"the rating model's process exited with code {child.exitcode}"
                raise RuntimeError(msg)
        outcome, value = ("stopped", {}) if stopped else ours.recv()
    finally:
        child.join(5.0)
        if child.is_alive():
            child.terminate()
            child.join(5.0)
        ours.close()
    if stopped:
        msg = "rating model fit stopped: its process was told to end"
        raise FitCancelledError(msg)
    if outcome != "model":
        raise RuntimeError(value)
    return RatingModel.from_arrays(value)


def _fit_and_send(
    parent: Any, users: IntArray, movies: IntArray, ratings: FloatArray, options: dict[str, Any]
) -> None:
    """The child's side: fit, stopping when the parent says so, and send what came of it."""
    began = time.perf_counter()
    try:
        model = fit_rating_model(users, movies, ratings, should_stop=parent.poll, **options)
    except FitCancelledError:
        pass  # the parent asked for it and expects nothing
    except Exception as exc:  # sent back and raised in the job, never lost in the child
        seconds = time.perf_counter() - began
        parent.send(("error", f"{type(exc).__name__}: {exc} (after {seconds:.1f} s)"))
    else:
        parent.send(("model", model.arrays()))
    finally:
        parent.close()
