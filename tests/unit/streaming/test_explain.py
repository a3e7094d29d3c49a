"""Because you rated: each rating's part of a listed movie's score, against the scores."""

from __future__ import annotations

import numpy as np
import pytest

from streaming.ingest.history import RatingHistory, UserRatings
from streaming.model.blend import ShortTerm, blend
from streaming.model.explain import NONE, ScoreParts
from streaming.model.lists import FoldIn, fold_in_users, lists_for
from streaming.model.topn import ItemIndex
from streaming.model.transitions import TransitionCounts


def _model(implicit: bool, seed: int = 0) -> FoldIn:
    rng = np.random.default_rng(seed)
    return FoldIn(ItemIndex(np.arange(1, 31), rng.normal(size=(30, 4))), 0.1,
                  implicit=implicit, alpha=0.7)  # fmt: skip


def _history(seed: int = 1) -> UserRatings:
    """Five users with 3-12 ratings each; user 5 rated movie 99, which no model knows."""
    rng = np.random.default_rng(seed)
    users, movies, ratings = [], [], []
    for user in range(1, 6):
        mine = rng.choice(np.arange(1, 31), size=rng.integers(3, 13), replace=False).tolist()
        if user == 5:
            mine.append(99)
        users += [user] * len(mine)
        movies += mine
        ratings += rng.choice([-1.0, 1.0, 2.5, 4.0, 5.0], size=len(mine)).tolist()
    history = RatingHistory.from_arrays(users, movies, ratings, list(range(len(users))))
    return history.everyone()


def _counts(history: UserRatings) -> TransitionCounts:
    counts = TransitionCounts(window=2, memory=4)
    rng = np.random.default_rng(2)
    others = rng.integers(100, 140, size=400)
    counts.observe(others, rng.integers(1, 31, size=400))  # sessions of other users
    owners = np.repeat(history.users, np.diff(history.start))
    counts.observe(owners, history.movies)
    return counts


@pytest.mark.parametrize("implicit", [False, True])
def test_the_parts_of_a_listed_movie_add_up_to_its_als_score(implicit: bool) -> None:
    model, history = _model(implicit), _history()
    normals = np.zeros((len(history.users), 4, 4))
    factors, solvable = fold_in_users(history, model, normals)
    assert solvable.all()
    listed = np.tile(np.arange(1, 11), (len(history.users), 1))
    targets = model.targets(history.ratings)
    parts = ScoreParts(history, model.items, targets, normals, listed).of_ratings()
    owner = np.repeat(np.arange(len(history.users)), np.diff(history.start))
    summed = np.zeros(listed.shape)
    np.add.at(summed, owner, parts)
    rows = model.items.rows(np.arange(1, 11))
    assert summed == pytest.approx(factors @ model.items.factors[rows].T, abs=1e-10)
    assert np.all(parts[history.movies == 99] == 0)  # a movie the model lacks brings nothing


def test_the_short_term_parts_add_up_to_the_blended_transition_term() -> None:
    model, history = _model(implicit=True), _history()
    short = ShortTerm(_counts(history), weight=0.6, decay=0.5, source_norm=0.5)
    transitions = short.scores(history.users, model.items.movie_ids)
    listed = np.tile(np.arange(1, 11), (len(history.users), 1))
    nothing = np.zeros((len(history.users), 4, 4))  # no ALS part: only the short term
    parts = ScoreParts(history, model.items, model.targets(history.ratings), nothing,
                       listed, (short, transitions)).of_ratings()  # fmt: skip
    owner = np.repeat(np.arange(len(history.users)), np.diff(history.start))
    summed = np.zeros(listed.shape)
    np.add.at(summed, owner, parts)
    zeros = np.zeros_like(transitions)
    blended = blend(zeros, np.zeros(30), transitions, 0.6)  # the transition term alone
    assert summed == pytest.approx(blended[:, :10], abs=1e-12)
    assert summed.max() > 0


def test_each_movie_is_explained_by_the_rating_with_the_largest_part() -> None:
    model, history = _model(implicit=True), _history()
    short = ShortTerm(_counts(history), weight=0.6, decay=0.5)
    lists = lists_for(history, model, 8, short_term=short, explain=5)
    assert lists.because is not None and lists.because.shape == (5, 5)
    normals = np.zeros((len(history.users), 4, 4))
    fold_in_users(history, model, normals)
    transitions = short.scores(history.users, model.items.movie_ids)
    parts = ScoreParts(history, model.items, model.targets(history.ratings), normals,
                       lists.movies[:, :5], (short, transitions)).of_ratings()  # fmt: skip
    for user in range(len(history.users)):
        mine = slice(int(history.start[user]), int(history.start[user + 1]))
        for slot in range(5):
            column = parts[mine, slot]
            expected = history.movies[mine][np.argmax(column)] if column.max() > 0 else NONE
            assert lists.because[user, slot] == expected
            assert lists.because[user, slot] not in lists.movies[user]  # a rated movie


def test_hand_computed_explicit_parts_pick_the_movie_that_pulls_the_factor() -> None:
    # Two rated movies on orthogonal axes, a listed movie on the first: only the first
    # movie's rating raises it. A = y₁y₁ᵀ + y₂y₂ᵀ + λ·2·I = 1.2·I, so its part is 5/1.2.
    items = ItemIndex([1, 2, 3], np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
    model = FoldIn(items, 0.1)
    history = RatingHistory.from_arrays([7, 7], [1, 2], [5.0, 3.0], [0, 1]).everyone()
    normals = np.zeros((1, 2, 2))
    fold_in_users(history, model, normals)
    listed = np.array([[3, -1]])
    explaining = ScoreParts(history, items, model.targets(history.ratings), normals, listed)
    assert explaining.of_ratings()[:, 0].tolist() == pytest.approx([5.0 / 1.2, 0.0])
    assert explaining.because().tolist() == [[1, NONE]]


def test_without_a_positive_part_nothing_is_explained() -> None:
    items = ItemIndex([1, 2], np.array([[1.0, 0.0], [-1.0, 0.0]]))
    model = FoldIn(items, 0.1)
    history = RatingHistory.from_arrays([7], [1], [5.0], [0]).everyone()
    lists = lists_for(history, model, 1, explain=1)
    assert lists.movies.tolist() == [[2]]  # the only unrated movie, pulled down by movie 1
    assert lists.because is not None and lists.because.tolist() == [[NONE]]


def test_terms_of_recent_movies_match_the_scores_they_sum_to() -> None:
    counts = TransitionCounts(window=1, memory=2)
    counts.observe([1, 1, 2, 2, 3, 3], [10, 20, 10, 20, 10, 30])
    counts.observe([4, 4], [40, 20])
    counts.observe([5, 5], [10, 40])  # user 5: newest 40, then 10
    recent, terms = counts.terms([5, 99], np.array([[20, 30, -1], [20, 30, 40]]), decay=0.5,
                                 source_norm=1.0)  # fmt: skip
    assert recent.tolist() == [[40, 10], [-1, -1]]
    # 40 → 20 once of 1; 10 → 20 twice of 4 and 10 → 30 once of 4, at age 1 (× 0.5)
    assert terms[0] == pytest.approx(np.array([[1.0, 0.0, 0.0], [0.25, 0.125, 0.0]]))
    assert not terms[1].any()  # a user never seen has no recent movies
    scores = counts.scores([5], np.array([20, 30]), decay=0.5, source_norm=1.0)
    assert terms[0, :, :2].sum(axis=0) == pytest.approx(scores[0])


def test_terms_read_from_the_scores_matrix_equal_those_read_from_the_rows() -> None:
    rng = np.random.default_rng(3)
    counts = TransitionCounts(window=3, memory=5, followers=4)  # rows cut to their best
    counts.observe(rng.integers(1, 60, size=3_000), rng.integers(1, 80, size=3_000))
    users = np.arange(1, 41)  # enough users for the scores to be one matrix product
    targets = rng.integers(-1, 85, size=(40, 6))  # padding and movies never followed too
    from_rows = counts.terms(users, targets, decay=0.7, source_norm=0.5)
    movies = np.arange(1, 85)
    scores = counts.scores(users, movies, decay=0.7, source_norm=0.5)  # builds the matrix
    from_matrix = counts.terms(users, targets, decay=0.7, source_norm=0.5)
    assert np.array_equal(from_rows[0], from_matrix[0])
    assert from_matrix[1] == pytest.approx(from_rows[1], abs=1e-15)
    assert from_matrix[1].any()
    known = targets >= 0
    summed = from_matrix[1].sum(axis=1)[known]
    assert summed == pytest.approx(scores[np.nonzero(known)[0], targets[known] - 1])


def test_a_target_outside_the_scores_matrix_is_still_counted_from_the_rows() -> None:
    counts = TransitionCounts(window=1, memory=2)
    counts.observe(np.repeat(np.arange(1, 21), 2), np.tile([10, 70], 20))  # 10 → 70, 20 times
    users = np.arange(1, 21)
    counts.scores(users, np.arange(1, 51), decay=0.5)  # a matrix over movies 1-50 only
    _, terms = counts.terms(users, np.full((20, 1), 70), decay=0.5)
    assert terms[:, 1, 0].tolist() == [0.5 * 20] * 20  # 10, one back, was followed by 70
