"""Fold-in is the exact ALS user step; top-K is deterministic and never lists rated movies."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.sql import SparkSession

from streaming.ingest.history import UserRatings
from streaming.model import lists
from streaming.model.blend import ShortTerm
from streaming.model.lists import FoldIn, fold_in_users
from streaming.model.topn import ItemIndex, top_k
from streaming.model.transitions import TransitionCounts

RNG = np.random.default_rng(11)


def fold_in_one(
    items: np.ndarray, rated: np.ndarray, ratings: np.ndarray, reg: float, **implicit: float
) -> np.ndarray:
    """The factor ``fold_in_users`` (the job's batched path) gives one user."""
    index = ItemIndex(np.arange(len(items)), items)
    model = FoldIn(index, reg, implicit=bool(implicit), alpha=implicit.get("alpha", 1.0))
    user = UserRatings(np.array([1]), np.array([0, len(rated)]), rated, ratings)
    factors, solvable = fold_in_users(user, model)
    assert solvable.tolist() == [True]
    return np.asarray(factors[0], dtype=np.float64)


def test_explicit_fold_in_matches_a_least_squares_reference() -> None:
    y = RNG.normal(size=(30, 6))
    r = RNG.integers(1, 6, size=30).astype(float)
    reg = 0.1
    # Reference: min ||Y x - r||² + reg·n·||x||², as one stacked least-squares system.
    stacked = np.vstack([y, np.sqrt(reg * len(r)) * np.eye(6)])
    target = np.concatenate([r, np.zeros(6)])
    expected = np.linalg.lstsq(stacked, target, rcond=None)[0]
    assert np.allclose(fold_in_one(y, np.arange(30), r, reg), expected, atol=1e-6)


def test_implicit_fold_in_matches_weighted_least_squares_over_all_items() -> None:
    items = RNG.normal(size=(40, 5))
    rated = np.array([3, 7, 8, 20, 33])
    r = np.array([5.0, 1.0, -2.0, 3.0, 4.0])
    reg, alpha = 0.05, 2.0
    # Reference: min Σ_i c_i (p_i - x·y_i)² + reg·n⁺·||x||² over every item,
    # c_i = 1 + α|r_i| for rated items (1 otherwise), p_i = 1 where r_i > 0.
    weights, prefs = np.ones(40), np.zeros(40)
    weights[rated] = 1 + alpha * np.abs(r)
    prefs[rated] = (r > 0).astype(float)
    n_pos = int((r > 0).sum())
    stacked = np.vstack([np.sqrt(weights)[:, None] * items, np.sqrt(reg * n_pos) * np.eye(5)])
    target = np.concatenate([np.sqrt(weights) * prefs, np.zeros(5)])
    expected = np.linalg.lstsq(stacked, target, rcond=None)[0]
    got = fold_in_one(items, rated, r, reg, alpha=alpha)
    assert np.allclose(got, expected, atol=1e-6)


def test_top_k_excludes_rated_and_breaks_ties_by_movie_id() -> None:
    items = ItemIndex([40, 10, 30, 20], np.array([[1.0], [1.0], [2.0], [1.0]]))
    ids, scores = top_k(np.array([[1.0], [1.0]]), items, [items.rows([30]), items.rows([])], 3)
    assert ids.tolist() == [[10, 20, 40], [30, 10, 20]]
    assert scores[1].tolist() == [2.0, 1.0, 1.0]


def test_top_k_pads_when_too_few_unrated_movies_remain() -> None:
    items = ItemIndex([1, 2, 3], np.eye(3))
    ids, scores = top_k(np.array([[0.0, 1.0, 0.0]]), items, [items.rows([1, 3, 99])], 4)
    assert ids.tolist() == [[2, -1, -1, -1]]
    assert np.isneginf(scores[0, 1:]).all()


def test_fold_in_reproduces_spark_als_user_factors(spark: SparkSession) -> None:
    from pyspark.ml.recommendation import ALS

    rows = [(u, i, float(RNG.integers(1, 6))) for u in range(1, 31) for i in range(1, 41)
            if RNG.random() < 0.4]  # fmt: skip
    frame = spark.createDataFrame(rows, ["user", "item", "rating"])
    model = ALS(rank=4, maxIter=8, regParam=0.1, seed=3, userCol="user", itemCol="item").fit(frame)
    item_factors = {r["id"]: np.array(r["features"]) for r in model.itemFactors.collect()}
    user_factors = {r["id"]: np.array(r["features"]) for r in model.userFactors.collect()}
    # Spark's last half-step computes users from the final item factors: fold-in must agree.
    ids = sorted(item_factors)
    every_item = np.array([item_factors[i] for i in ids])
    for user in (1, 7, 30):
        history = sorted((i, rating) for u, i, rating in rows if u == user)
        rated = np.searchsorted(ids, [i for i, _ in history])
        r = np.array([rating for _, rating in history])
        assert np.allclose(fold_in_one(every_item, rated, r, 0.1), user_factors[user], atol=1e-4)


def test_withheld_favourite_comes_back_in_the_top_10(spark: SparkSession) -> None:
    from pyspark.ml.recommendation import ALS

    rng = np.random.default_rng(5)
    users, movies, rank = 60, 80, 3
    truth = rng.normal(size=(users, rank)) @ rng.normal(size=(rank, movies))
    rows = []
    for u in range(users):
        seen = rng.choice(movies, size=40, replace=False)
        rows += [(u + 1, int(m) + 1, float(np.clip(3 + truth[u, m], 1, 5))) for m in seen]
    favourite = int(np.argmax(truth[0])) + 1  # user 1's best movie, withheld from training
    rows = [row for row in rows if not (row[0] == 1 and row[1] == favourite)]
    frame = spark.createDataFrame(rows, ["user", "item", "rating"])
    model = ALS(rank=rank, maxIter=15, regParam=0.05, seed=1, userCol="user", itemCol="item")
    fitted = model.fit(frame)
    factors = fitted.itemFactors.collect()
    items = ItemIndex([r["id"] for r in factors], np.array([r["features"] for r in factors]))
    history = sorted((m, rating) for u, m, rating in rows if u == 1)
    x = fold_in_one(items.factors, items.rows([m for m, _ in history]),
                    np.array([rating for _, rating in history]), 0.05)  # fmt: skip
    ids, _ = top_k(x[None, :], items, [items.rows([m for m, _ in history])], 10)
    assert favourite in ids[0].tolist()
    assert not set(ids[0].tolist()) & {m for m, _ in history}


def test_fast_top_k_equals_the_full_stable_sort_under_heavy_ties() -> None:
    rng = np.random.default_rng(4)
    # Each distinct factor is shared by ten movies: many exact ties, also at the k-th place.
    items = ItemIndex(np.arange(1, 51), np.repeat(rng.normal(size=(5, 2)), 10, axis=0))
    users = rng.normal(size=(200, 2))
    rated = [items.rows(rng.choice(np.arange(1, 51), 5, replace=False)) for _ in range(200)]
    ids, _ = top_k(users, items, rated, 7)
    assert np.array_equal(ids, _full_stable_sort(users, items, rated, 7))


@pytest.mark.parametrize(
    ("movies", "k", "distinct", "rated_share"),
    [(2_000, 20, 2_000, 0.05), (2_003, 20, 40, 0.3), (1_700, 100, 3, 0.0), (3_000, 50, 500, 0.99)],
)
def test_top_k_narrowed_to_groups_of_movies_equals_the_full_stable_sort(
    movies: int, k: int, distinct: int, rated_share: float
) -> None:
    # Wide catalogues take the grouped search: exact ties (few distinct factors), a
    # catalogue that groups unevenly (2,003), and users who rated nearly every movie.
    rng = np.random.default_rng(movies + k)
    factors = rng.normal(size=(distinct, 3))[rng.integers(0, distinct, movies)]
    items = ItemIndex(np.arange(1, movies + 1), factors, prior=np.round(rng.normal(size=movies), 1))
    users = np.round(rng.normal(size=(300, 3)), 1)
    users[:20] = 0.0  # the prior alone: ties across whole groups
    rated = [
        np.flatnonzero(rng.random(movies) < rated_share * rng.random()) for _ in range(300)
    ]  # fmt: skip
    ids, _ = top_k(users, items, rated, k)
    assert np.array_equal(ids, _full_stable_sort(users, items, rated, k))


def _full_stable_sort(
    users: np.ndarray, items: ItemIndex, rated: list[np.ndarray], k: int
) -> np.ndarray:
    """The reference top-K: every movie's score sorted stably, rated ones out (-1 ids)."""
    scores = users @ items.factors.T + items.prior
    for row, excluded in enumerate(rated):
        scores[row, excluded] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    best = np.take_along_axis(scores, order, axis=1)
    return np.where(np.isfinite(best), items.movie_ids[order], -1)


def test_the_item_prior_is_added_to_every_users_score() -> None:
    items = ItemIndex([3, 1, 2], np.array([[1.0], [2.0], [3.0]]), prior=[5.0, 0.0, -0.5])
    assert items.prior.tolist() == [0.0, -0.5, 5.0]  # sorted with the movie ids
    ids, scores = top_k(np.array([[1.0]]), items, [items.rows([])], 3)
    assert ids.tolist() == [[3, 2, 1]]  # 1 + 5, 3 - 0.5, 2 + 0
    assert scores[0].tolist() == [6.0, 2.5, 2.0]


def test_a_prior_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="one value per movie"):
        ItemIndex([1, 2], np.ones((2, 1)), prior=[1.0])


def test_lists_are_the_same_whether_users_are_ranked_in_one_block_or_many(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A backlog's batch is ranked a block of users at a time: the lists must not change."""
    rng = np.random.default_rng(8)
    items = ItemIndex(np.arange(1, 41), rng.normal(size=(40, 4)))
    model = FoldIn(items, reg_param=0.1, implicit=True)
    users = np.arange(1, 12, dtype=np.int64)
    rated = [np.sort(rng.choice(np.arange(1, 45), 6, replace=False)) for _ in users]
    start = np.arange(0, 6 * len(users) + 1, 6, dtype=np.int64)
    movies = np.concatenate(rated).astype(np.int64)
    history = UserRatings(users, start, movies, rng.uniform(1, 5, len(movies)))
    counts = TransitionCounts(window=2, memory=3)
    counts.observe(np.repeat(users, 6), np.concatenate(rated))
    short_term = ShortTerm(counts, weight=2.0)
    whole = lists.lists_for(history, model, 5, short_term=short_term)
    monkeypatch.setattr(lists, "_USERS_PER_BLOCK", 4)
    blocked = lists.lists_for(history, model, 5, short_term=short_term)
    np.testing.assert_array_equal(blocked.users, whole.users)
    np.testing.assert_array_equal(blocked.movies, whole.movies)
    np.testing.assert_allclose(blocked.scores, whole.scores)
    np.testing.assert_array_equal(blocked.personal, whole.personal)
    assert whole.personal.all() and (whole.movies >= 0).all()
