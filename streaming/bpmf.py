"""recstream's rating model: Bayesian matrix factorisation, sampled by Gibbs (predicted stars).

The lists rank by implicit-feedback ALS, which scores preferences, not ratings. The stars
a user is told they would give a movie come from this model: Bayesian probabilistic
matrix factorisation (Salakhutdinov and Mnih, ICML 2008), with

- a rating ``r = mean + uᵀv + noise``, noise precision ``α`` (``rating_noise_precision``),
  ``mean`` the mean training rating;
- user factors ``u ~ N(μ_U, Λ_U⁻¹)`` and movie factors ``v ~ N(μ_V, Λ_V⁻¹)``, whose means
  and precisions have Gaussian-Wishart hyperpriors (``β₀ = 2``, ``ν₀ = rank``,
  ``W₀ = I``, ``μ₀ = 0``), so the data set the amount of regularisation;
- Gibbs sampling: each sweep draws both hyperparameter pairs, then every user given the
  movies, then every movie given the users; after ``rating_burn_in`` sweeps,
  ``rating_samples`` draws spread evenly over the remaining sweeps are kept.

What is kept of a draw is the movie factors and the user hyperparameters, not the user
factors: a user's stars average, over the kept draws, the mean of their factor's
conditional posterior given that draw and **their ratings now** (Rao-Blackwellised), so a
user who has just rated is predicted from those ratings without a retrain, and a trained
user gets what the sampler would. Movies the model has not seen get no prediction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streaming.history import UserRatings
from streaming.topn import sorted_lookup

__all__ = ["FitCancelledError", "RatingModel", "fit_rating_model"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

SCALE = (1.0, 5.0)
_BETA0 = 2.0
_RATINGS_PER_CHUNK = 50_000  # ratings whose movie factors are gathered at once
_PAIRS_PER_CHUNK = 4_096  # pairs predicted at once: pairs × draws × rank floats
_RATINGS_PER_GROUP = 8_192  # ratings of the users solved at once: ratings × draws × rank floats
_USERS_PER_GROUP = 256  # and at most this many users: users × draws × rank² floats


class FitCancelledError(Exception):
    """The sampler was asked to stop (``should_stop``) before its last sweep."""


@dataclass(frozen=True)
class RatingModel:
    """Kept posterior draws: movie factors and user hyperparameters, one row per draw."""

    movie_ids: IntArray  # sorted
    factors: FloatArray  # (draws, movies, rank)
    user_mean: FloatArray  # (draws, rank): μ_U of each draw
    user_precision: FloatArray  # (draws, rank, rank): Λ_U of each draw
    global_mean: float
    noise_precision: float

    @property
    def draws(self) -> int:
        """Number of kept posterior draws."""
        return int(self.factors.shape[0])

    def rows(self, movie_ids: npt.ArrayLike) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
        """Row of each movie and whether the model knows it."""
        return sorted_lookup(self.movie_ids, movie_ids)

    def user_factors(self, users: UserRatings) -> FloatArray:
        """(users, draws, rank): each user's conditional posterior mean under each draw.

        Ratings of movies the model does not know are left out; a user with none left
        gets the prior mean ``μ_U`` of each draw. Users are solved in groups of at most
        ``_USERS_PER_GROUP`` whose ratings fit ``_RATINGS_PER_GROUP`` (a user with more
        ratings is a group alone); each user's terms are summed for every draw at once.
        """
        draws, rank = self.draws, self.factors.shape[2]
        alpha = self.noise_precision
        prior_rhs = np.einsum("sde,se->sd", self.user_precision, self.user_mean)
        out = np.empty((len(users.users), draws, rank))
        first = 0
        while first < len(users.users):
            limit = users.start[first] + _RATINGS_PER_GROUP
            last = int(np.searchsorted(users.start, limit, side="right")) - 1
            last = min(max(last, first + 1), first + _USERS_PER_GROUP, len(users.users))
            window = slice(int(users.start[first]), int(users.start[last]))
            rows, known = self.rows(users.movies[window])
            counts = np.diff(users.start[first : last + 1])
            owner = np.repeat(np.arange(last - first), counts)[known]
            picked = self.factors[:, rows[known]]  # (draws, ratings, rank)
            centred = users.ratings[window][known] - self.global_mean
            normal = np.broadcast_to(self.user_precision, (last - first, draws, rank, rank)).copy()
            rhs = np.broadcast_to(prior_rhs, (last - first, draws, rank)).copy()
            present, run_start = np.unique(owner, return_index=True)
            run_end = np.append(run_start[1:], len(owner))[: len(present)]
            for at, begin, end in zip(present.tolist(), run_start.tolist(), run_end.tolist(),
                                      strict=True):  # fmt: skip
                block = picked[:, begin:end]  # (draws, this user's ratings, rank)
                normal[at] += alpha * (np.transpose(block, (0, 2, 1)) @ block)
                rhs[at] += alpha * (np.transpose(block, (0, 2, 1)) @ centred[begin:end])
            out[first:last] = np.linalg.solve(normal, rhs[..., None])[..., 0]
            first = last
        return out

    def predict(
        self, users: UserRatings, positions: npt.ArrayLike, movie_ids: npt.ArrayLike
    ) -> FloatArray:
        """Predicted stars (clipped to 1-5) of pairs: user ``users.users[positions[i]]``
        and movie ``movie_ids[i]``; ``nan`` where the model does not know the movie.
        """
        at = np.asarray(positions, dtype=np.int64)
        rows, known = self.rows(movie_ids)
        stars = np.full(len(rows), np.nan)
        if not known.any():
            return stars
        factors = self.user_factors(users)
        chosen = np.flatnonzero(known)
        for first in range(0, len(chosen), _PAIRS_PER_CHUNK):
            part = chosen[first : first + _PAIRS_PER_CHUNK]
            picked = self.factors[:, rows[part]]  # (draws, pairs, rank)
            raw = np.einsum("psd,spd->p", factors[at[part]], picked) / self.draws
            stars[part] = np.clip(raw + self.global_mean, *SCALE)
        return stars


def fit_rating_model(
    users: IntArray,
    movies: IntArray,
    ratings: FloatArray,
    *,
    rank: int,
    sweeps: int,
    burn_in: int,
    samples: int,
    noise_precision: float,
    seed: int,
    should_stop: Callable[[], bool] | None = None,
) -> RatingModel:
    """Run the Gibbs sampler on (user, movie, rating) triples and keep ``samples`` draws.

    ``should_stop`` is asked before each sweep; when it answers True the fit ends.

    Raises:
        ValueError: no ratings, or ``samples`` does not fit in ``sweeps - burn_in``.
        FitCancelledError: ``should_stop`` answered True.
    """
    if len(ratings) == 0:
        msg = "the rating model needs at least one rating to fit"
        raise ValueError(msg)
    if not 1 <= samples <= sweeps - burn_in:
        msg = (
            f"rating_samples ({samples}) must be between 1 and rating_sweeps - "
            f"rating_burn_in ({sweeps} - {burn_in}); raise the sweeps or keep fewer draws"
        )
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    user_ids, user_of = np.unique(users, return_inverse=True)
    movie_ids, movie_of = np.unique(movies, return_inverse=True)
    mean = float(np.mean(ratings))
    centred = np.asarray(ratings, dtype=np.float64) - mean
    alpha = noise_precision
    order = np.argsort(user_of, kind="stable")  # each side's terms, grouped by owner
    by_user = (user_of[order], movie_of[order], centred[order])
    order = np.argsort(movie_of, kind="stable")
    by_movie = (movie_of[order], user_of[order], centred[order])
    u = rng.normal(0.0, 0.1, (len(user_ids), rank))
    v = rng.normal(0.0, 0.1, (len(movie_ids), rank))
    keep = set(np.linspace(burn_in, sweeps - 1, samples).round().astype(int).tolist())
    kept: list[tuple[FloatArray, FloatArray, FloatArray]] = []
    for sweep in range(sweeps):
        if should_stop is not None and should_stop():
            msg = f"rating model fit stopped at sweep {sweep} of {sweeps}"
            raise FitCancelledError(msg)
        mu_u, lambda_u = _hyperparameters(rng, u)
        mu_v, lambda_v = _hyperparameters(rng, v)
        u = _draw(rng, *_normal_equations(*by_user, v, len(user_ids), mu_u, lambda_u, alpha))
        v = _draw(rng, *_normal_equations(*by_movie, u, len(movie_ids), mu_v, lambda_v, alpha))
        if sweep in keep:
            kept.append((v.copy(), mu_u, lambda_u))
    return RatingModel(
        movie_ids=movie_ids.astype(np.int64),
        factors=np.stack([draw[0] for draw in kept]),
        user_mean=np.stack([draw[1] for draw in kept]),
        user_precision=np.stack([draw[2] for draw in kept]),
        global_mean=mean,
        noise_precision=noise_precision,
    )


def _normal_equations(
    owner: IntArray,
    other_rows: npt.NDArray[np.intp] | IntArray,
    values: FloatArray,
    other: FloatArray,
    count: int,
    mu: FloatArray,
    precision: FloatArray,
    alpha: float,
) -> tuple[FloatArray, FloatArray]:
    """(precision, right-hand side) of the conditional posterior of ``count`` factors.

    Factor ``i`` sees the terms whose ``owner`` is ``i`` (``owner`` sorted): precision
    ``Λ + α Σ y yᵀ``, mean ``precision⁻¹ (α Σ r y + Λ μ)``, y the rows of ``other``.
    """
    rank = other.shape[1]
    normal = np.broadcast_to(precision, (count, rank, rank)).copy()
    rhs = np.broadcast_to(precision @ mu, (count, rank)).copy()
    first = 0
    while first < len(owner):
        last = min(first + _RATINGS_PER_CHUNK, len(owner))
        if last < len(owner):  # end the chunk where an owner's run ends
            cut = int(np.searchsorted(owner, owner[last], side="left"))
            last = cut if cut > first else int(np.searchsorted(owner, owner[first], side="right"))
        y = other[other_rows[first:last]]
        present, run_start = np.unique(owner[first:last], return_index=True)
        run_end = np.append(run_start[1:], last - first)
        for at, begin, end in zip(present.tolist(), run_start.tolist(), run_end.tolist(),
                                  strict=True):  # fmt: skip
            block = y[begin:end]
            normal[at] += alpha * (block.T @ block)
        rhs[present] += alpha * np.add.reduceat(y * values[first:last, None], run_start, axis=0)
        first = last
    return normal, rhs


def _draw(rng: np.random.Generator, normal: FloatArray, rhs: FloatArray) -> FloatArray:
    """One Gibbs draw of every factor on one side, from its ``_normal_equations``:
    mean + L⁻ᵀ z, where precision = L Lᵀ and z is standard normal."""
    chol = np.linalg.cholesky(normal)
    mean = np.linalg.solve(normal, rhs[:, :, None])[:, :, 0]
    noise = rng.standard_normal(mean.shape)
    upper = np.transpose(chol, (0, 2, 1))
    drawn: FloatArray = mean + np.linalg.solve(upper, noise[:, :, None])[:, :, 0]
    return drawn


def _hyperparameters(
    rng: np.random.Generator, factors: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Draw (μ, Λ) from their Gaussian-Wishart posterior given the current factors."""
    count, rank = factors.shape
    average = factors.mean(axis=0)
    spread = np.cov(factors.T, bias=True).reshape(rank, rank)
    beta = _BETA0 + count
    centre = count * average / beta
    scale_inv = np.eye(rank) + count * spread + (_BETA0 * count / beta) * np.outer(average, average)
    scale = np.linalg.inv(scale_inv)
    precision = _wishart(rng, rank + count, (scale + scale.T) / 2)
    covariance = np.linalg.inv(beta * precision)
    mu = rng.multivariate_normal(centre, (covariance + covariance.T) / 2)
    return mu, precision


def _wishart(rng: np.random.Generator, dof: float, scale: FloatArray) -> FloatArray:
    """One Wishart(dof, scale) draw by the Bartlett decomposition."""
    rank = scale.shape[0]
    lower = np.linalg.cholesky(scale)
    bartlett = np.zeros((rank, rank))
    for i in range(rank):
        bartlett[i, i] = np.sqrt(rng.chisquare(dof - i))
        bartlett[i, :i] = rng.standard_normal(i)
    factor = lower @ bartlett
    return factor @ factor.T
