"""The rating model (a Bayesian factorization machine, myfm) on small planted data."""

from __future__ import annotations

from typing import Any

import myfm
import numpy as np
import pytest
import scipy.sparse as sparse

from streaming.ingest.history import RatingHistory, UserRatings
from streaming.rating.fm import (
    FitCancelledError,
    FloatArray,
    IntArray,
    RatingModel,
    fit_in_process,
    fit_rating_model,
)
from streaming.settings import ModelSettings

SMALL: dict[str, Any] = {"rank": 3, "sweeps": 60, "burn_in": 20, "samples": 10, "seed": 5}


def _planted(
    users: int = 150, movies: int = 60, per_user: int = 30, seed: int = 1
) -> tuple[IntArray, IntArray, FloatArray, FloatArray]:
    """Ratings 1-5 from a rank-2 taste plus noise: (users, movies, ratings, truth)."""
    rng = np.random.default_rng(seed)
    truth = 3.2 + rng.normal(0, 0.8, (users, 2)) @ rng.normal(0, 0.8, (2, movies))
    pairs = [(u, m) for u in range(users) for m in rng.choice(movies, per_user, replace=False)]
    user_col = np.array([u for u, _ in pairs], dtype=np.int64) + 1
    movie_col = np.array([m for _, m in pairs], dtype=np.int64) + 1
    noisy = truth[user_col - 1, movie_col - 1] + rng.normal(0, 0.3, len(pairs))
    return user_col, movie_col, np.clip(np.round(noisy), 1, 5), truth


def _history(users: IntArray, movies: IntArray, ratings: FloatArray) -> RatingHistory:
    return RatingHistory.from_arrays(users, movies, ratings, np.zeros(len(users), dtype=np.int64))


def _predict_pairs(
    model: RatingModel, history: RatingHistory, users: IntArray, movies: IntArray
) -> FloatArray:
    ids, positions = np.unique(users, return_inverse=True)
    return model.predict(history.of_users(ids), positions, movies)


def test_held_out_ratings_are_predicted_far_better_than_the_mean() -> None:
    users, movies, ratings, _ = _planted()
    test = np.random.default_rng(0).random(len(ratings)) < 0.2
    model = fit_rating_model(users[~test], movies[~test], ratings[~test], **SMALL)
    history = _history(users[~test], movies[~test], ratings[~test])
    predicted = _predict_pairs(model, history, users[test], movies[test])
    assert np.isfinite(predicted).all() and ((predicted >= 1) & (predicted <= 5)).all()
    error = np.sqrt(np.mean((predicted - ratings[test]) ** 2))
    baseline = np.sqrt(np.mean((ratings[~test].mean() - ratings[test]) ** 2))
    assert error < 0.6 * baseline  # the planted taste explains most of the spread
    assert model.draws == 10 and model.movie_factors.shape == (10, 60, 3)


def _blocks(users: IntArray, movies: IntArray, with_user_ids: bool) -> tuple[list[Any], list[int]]:
    """myfm's relation blocks for the pairs, as ``streaming.rating.fm`` lays them out."""
    user_ids, user_of = np.unique(users, return_inverse=True)
    movie_ids, movie_of = np.unique(movies, return_inverse=True)
    rated = sparse.csr_matrix((np.ones(len(users)), (user_of, movie_of)))
    rated = sparse.diags(1 / np.sqrt(rated.sum(axis=1).A1)) @ rated
    raters = sparse.csr_matrix((np.ones(len(users)), (movie_of, user_of)))
    raters = sparse.diags(1 / np.sqrt(raters.sum(axis=1).A1)) @ raters
    ids = sparse.identity(len(user_ids)) * (1.0 if with_user_ids else 0.0)
    blocks = [
        myfm.RelationBlock(user_of, sparse.hstack([ids, rated]).tocsr()),
        myfm.RelationBlock(
            movie_of, sparse.hstack([sparse.identity(len(movie_ids)), raters]).tocsr()
        ),
    ]  # fmt: skip
    return blocks, [len(user_ids), len(movie_ids), len(movie_ids), len(user_ids)]


def test_the_movie_side_and_rated_movies_are_exactly_myfm_s_own_model() -> None:
    """Keep only the last draw; a user with their id features zeroed must get exactly what
    myfm itself predicts from the same relation blocks."""
    users, movies, ratings, _ = _planted(users=50, movies=30, per_user=12)
    last = {**SMALL, "burn_in": SMALL["sweeps"] - 1, "samples": 1}
    model = fit_rating_model(users, movies, ratings, **last)
    blocks, shapes = _blocks(users, movies, with_user_ids=True)
    theirs = myfm.MyFMRegressor(rank=SMALL["rank"], random_seed=SMALL["seed"])
    theirs.fit(None, ratings, X_rel=blocks, n_iter=SMALL["sweeps"], n_kept_samples=1,
               group_shapes=shapes, callback=lambda *_: (False, None))  # fmt: skip
    expected = theirs.predict(None, _blocks(users, movies, with_user_ids=False)[0])
    ids, positions = np.unique(users, return_inverse=True)
    summed, own = model.implicit_side(_history(users, movies, ratings).of_users(ids))
    rows, _ = model.rows(movies)
    interaction = np.einsum("pd,pd->p", summed[positions, 0], model.movie_factors[0, rows])
    ours = model.movie_bias[0, rows] + own[positions, 0] + interaction
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-9)


def test_a_user_s_own_terms_are_each_draw_s_conditional_posterior_mean() -> None:
    users, movies, ratings, _ = _planted(users=30, movies=20, per_user=8)
    model = fit_rating_model(users, movies, ratings, **SMALL)
    extra = _history(np.array([4, 4, 31]), np.array([999, 5, 998]), np.array([5.0, 2.0, 3.0]))
    everyone = _history(np.concatenate([users, extra.frame()["user_id"].to_numpy()]),
                        np.concatenate([movies, extra.frame()["movie_id"].to_numpy()]),
                        np.concatenate([ratings, extra.frame()["rating"].to_numpy()]))  # fmt: skip
    ratings_of = everyone.everyone()
    vector, scalar = model.user_side(ratings_of)
    summed, own = model.implicit_side(ratings_of)
    for position in (0, 3, len(ratings_of.users) - 1):  # user 31 knows one movie, 998 is not
        rated, given = ratings_of.of(position)
        rows, known = model.rows(rated)  # movies 998 and 999 are unknown: left out
        weights = []
        for draw in range(model.draws):
            p, q = summed[position, draw], model.movie_factors[draw, rows[known]]
            design = np.column_stack([np.ones(known.sum()), p + q])
            rest = model.movie_bias[draw, rows[known]] + own[position, draw] + q @ p
            alpha, precision = model.noise_precision[draw], model.prior_precision[draw]
            solved = np.linalg.solve(
                np.diag(precision) + alpha * design.T @ design,
                precision * model.prior_mean[draw] + alpha * design.T @ (given[known] - rest),
            )
            np.testing.assert_allclose(vector[position, draw], p + solved[1:], rtol=1e-8)
            weights.append(own[position, draw] + solved[0] + solved[1:] @ p)
        np.testing.assert_allclose(scalar[position], np.mean(weights), rtol=1e-8)


def test_same_seed_same_model_in_this_process_or_a_spawned_one() -> None:
    users, movies, ratings, _ = _planted(users=40, movies=20, per_user=10)
    first = fit_rating_model(users, movies, ratings, **SMALL)
    spawned = fit_in_process(users, movies, ratings, should_stop=lambda: False, **SMALL)
    for name, array in first.arrays().items():
        np.testing.assert_array_equal(getattr(spawned, name), array, err_msg=name)
    other = fit_rating_model(users, movies, ratings, **{**SMALL, "seed": 6})
    assert not np.allclose(other.movie_factors, first.movie_factors)


def test_a_user_who_just_rated_is_predicted_from_those_ratings_without_a_refit() -> None:
    users, movies, ratings, truth = _planted()
    model = fit_rating_model(users, movies, ratings, **SMALL)
    newcomer = truth[0] + 0.3  # not in the fit: tastes like user 1, a little kinder
    rated = np.arange(1, 21)  # rates movies 1-20, then wants stars for 21-60
    history = _history(np.full(20, 999), rated, np.clip(np.round(newcomer[:20]), 1, 5))
    wanted = np.arange(21, 61)
    stars = model.predict(history.of_users([999]), np.zeros(40, dtype=np.int64), wanted)
    nobody = UserRatings(np.array([999]), np.zeros(2, dtype=np.int64),
                         np.zeros(0, dtype=np.int64), np.zeros(0))  # fmt: skip
    prior = model.predict(nobody, np.zeros(40, dtype=np.int64), wanted)
    expected = np.clip(newcomer[20:], 1, 5)
    assert np.corrcoef(stars, expected)[0, 1] > 0.8  # the ratings told the model the taste
    assert np.mean(np.abs(stars - expected)) < np.mean(np.abs(prior - expected))


def test_an_unknown_movie_gets_no_stars_and_a_user_with_none_known_gets_the_prior() -> None:
    users, movies, ratings, _ = _planted(users=40, movies=20, per_user=10)
    model = fit_rating_model(users, movies, ratings, **SMALL)
    stranger = _history(np.array([777, 777]), np.array([500, 501]), np.array([5.0, 1.0]))
    stars = model.predict(stranger.of_users([777]), np.zeros(3, dtype=np.int64), [1, 500, 2])
    assert np.isnan(stars[1]) and np.isfinite(stars[[0, 2]]).all()
    vector, scalar = model.user_side(stranger.of_users([777]))
    np.testing.assert_allclose(vector[0], model.prior_mean[:, 1:])  # only unknown movies
    np.testing.assert_allclose(scalar, [model.prior_mean[:, 0].mean()])
    expected = [model.movie_bias[:, row].mean() + scalar[0]
                + np.mean(np.sum(vector[0] * model.movie_factors[:, row], axis=1))
                for row in (0, 1)]  # fmt: skip
    np.testing.assert_allclose(stars[[0, 2]], np.clip(expected, 1, 5))


def test_a_cancelled_fit_raises_in_this_process_and_in_a_spawned_one() -> None:
    users, movies, ratings, _ = _planted(users=40, movies=20, per_user=10)
    asked: list[int] = []

    def after_three() -> bool:
        asked.append(1)
        return len(asked) >= 3

    with pytest.raises(FitCancelledError, match="stopped at sweep 3 of 60"):
        fit_rating_model(users, movies, ratings, should_stop=after_three, **SMALL)
    with pytest.raises(FitCancelledError, match="process was told to end"):
        fit_in_process(users, movies, ratings, should_stop=lambda: True, **SMALL)


def test_bad_sampler_settings_are_refused_with_what_to_change() -> None:
    with pytest.raises(ValueError, match="at least one rating"):
        fit_rating_model(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), **SMALL)
    with pytest.raises(ValueError, match=r"rating_samples \(50\) must be between 1 and"):
        fit_rating_model(np.array([1]), np.array([1]), np.array([4.0]),
                         **{**SMALL, "samples": 50})  # fmt: skip
    with pytest.raises(RuntimeError, match=r"ValueError: rating_samples \(50\).*after"):
        fit_in_process(np.array([1]), np.array([1]), np.array([4.0]),
                       should_stop=lambda: False, **{**SMALL, "samples": 50})  # fmt: skip
    with pytest.raises(ValueError, match="raise RECSTREAM_MODEL_RATING_SWEEPS or keep fewer"):
        ModelSettings(rating_sweeps=30, rating_burn_in=20, rating_samples=11)
    assert ModelSettings(rating_samples=0, rating_sweeps=1, rating_burn_in=5).rating_samples == 0
