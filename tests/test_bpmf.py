"""The rating model (Bayesian MF by Gibbs sampling) on small planted data it must recover."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import streaming.bpmf as bpmf
from streaming.bpmf import FloatArray, IntArray, RatingModel, fit_rating_model
from streaming.history import RatingHistory, UserRatings
from streaming.settings import ModelSettings

SMALL: dict[str, Any] = {
    "rank": 3,
    "sweeps": 60,
    "burn_in": 20,
    "samples": 10,
    "noise_precision": 2.0,
    "seed": 5,
}


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
    assert model.draws == 10 and model.factors.shape == (10, 60, 3)


def test_same_seed_same_model_and_the_chunking_does_not_change_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    users, movies, ratings, _ = _planted(users=40, movies=20, per_user=10)
    first = fit_rating_model(users, movies, ratings, **SMALL)
    monkeypatch.setattr(bpmf, "_RATINGS_PER_CHUNK", 7)  # many chunks, runs split at owners
    again = fit_rating_model(users, movies, ratings, **SMALL)
    np.testing.assert_allclose(again.factors, first.factors, rtol=1e-9, atol=1e-12)
    other = fit_rating_model(users, movies, ratings, **{**SMALL, "seed": 6})
    assert not np.allclose(other.factors, first.factors)


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
    stranger = _history(np.array([7, 7]), np.array([500, 501]), np.array([5.0, 1.0]))
    stars = model.predict(stranger.of_users([7]), np.zeros(3, dtype=np.int64), [1, 500, 2])
    assert np.isnan(stars[1]) and np.isfinite(stars[[0, 2]]).all()
    factors = model.user_factors(stranger.of_users([7]))
    np.testing.assert_allclose(factors[0], model.user_mean)  # only unknown movies: the prior


def test_bad_sampler_settings_are_refused_with_what_to_change() -> None:
    with pytest.raises(ValueError, match="at least one rating"):
        fit_rating_model(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), **SMALL)
    with pytest.raises(ValueError, match=r"rating_samples \(50\) must be between 1 and"):
        fit_rating_model(np.array([1]), np.array([1]), np.array([4.0]),
                         **{**SMALL, "samples": 50})  # fmt: skip
    with pytest.raises(ValueError, match="raise RECSTREAM_MODEL_RATING_SWEEPS or keep fewer"):
        ModelSettings(rating_sweeps=30, rating_burn_in=20, rating_samples=11)
    assert ModelSettings(rating_samples=0, rating_sweeps=1, rating_burn_in=5).rating_samples == 0


@pytest.mark.parametrize("group", [3, 8_192])  # users solved a few at a time, or all at once
def test_user_factors_are_each_draws_conditional_mean(
    monkeypatch: pytest.MonkeyPatch, group: int
) -> None:
    users, movies, ratings, _ = _planted(users=30, movies=20, per_user=8)
    model = fit_rating_model(users, movies, ratings, **SMALL)
    monkeypatch.setattr(bpmf, "_RATINGS_PER_GROUP", group)
    extra = _history(np.array([4, 4, 31]), np.array([999, 5, 998]), np.array([5.0, 2.0, 3.0]))
    everyone = _history(np.concatenate([users, extra.frame()["user_id"].to_numpy()]),
                        np.concatenate([movies, extra.frame()["movie_id"].to_numpy()]),
                        np.concatenate([ratings, extra.frame()["rating"].to_numpy()]))  # fmt: skip
    ratings_of = everyone.everyone()
    factors = model.user_factors(ratings_of)
    alpha = model.noise_precision
    for position in range(len(ratings_of.users)):
        rated, given = ratings_of.of(position)
        rows, known = model.rows(rated)  # movies 998 and 999 are unknown: left out
        for draw in range(model.draws):
            y = model.factors[draw][rows[known]]
            precision = model.user_precision[draw] + alpha * y.T @ y
            target = alpha * y.T @ (given[known] - model.global_mean)
            target += model.user_precision[draw] @ model.user_mean[draw]
            expected = np.linalg.solve(precision, target)
            np.testing.assert_allclose(factors[position, draw], expected, rtol=1e-8, atol=1e-10)
