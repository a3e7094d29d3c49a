"""The driver's rating history and the batched fold-in that builds lists from it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from streaming.ingest.history import RatingHistory
from streaming.model.lists import FoldIn, fold_in_users, lists_for
from streaming.model.topn import ItemIndex

RNG = np.random.default_rng(5)


def _ratings(rows: list[tuple[int, int, float, int]], batch_id: int = 0) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])
    return frame.assign(batch_id=batch_id, offset=range(len(frame)))


def test_latest_rating_wins_and_a_replayed_batch_changes_nothing() -> None:
    history = RatingHistory(capacity=2)  # forces the arrays to grow
    first = _ratings([(1, 10, 3.0, 100), (1, 11, 4.0, 100), (2, 10, 5.0, 100)])
    assert history.add(first).tolist() == [1, 2]
    assert history.add(first).tolist() == []  # the same batch again: nothing new
    later = _ratings([(1, 10, 1.0, 200), (2, 10, 2.0, 50)], batch_id=1)
    assert history.add(later).tolist() == [1]  # user 2's rating is older than the stored one
    assert len(history) == 3
    everyone = history.everyone()
    assert everyone.users.tolist() == [1, 2]
    movies, ratings = everyone.of(0)
    assert movies.tolist() == [10, 11]
    assert ratings.tolist() == [1.0, 4.0]
    some = history.of_users([2, 7, 1])
    assert [some.of(i)[0].tolist() for i in range(3)] == [[10], [], [10, 11]]
    assert some.subset([2]).of(0)[1].tolist() == [1.0, 4.0]


@pytest.mark.parametrize("implicit", [False, True])
def test_batched_fold_in_equals_the_single_user_reference(implicit: bool) -> None:
    items = ItemIndex(np.arange(1, 51), RNG.normal(size=(50, 6)))
    rows = [(u, m, float(RNG.integers(-1 if implicit else 1, 6)), 0)
            for u in range(1, 80) for m in range(1, 61) if RNG.random() < 0.2]  # fmt: skip
    history = RatingHistory()
    history.add(_ratings(rows))
    everyone = history.everyone()
    model = FoldIn(items, reg_param=0.07, implicit=implicit, alpha=3.0)
    factors, solvable = fold_in_users(everyone, model)
    for position in range(len(everyone.users)):
        movies, ratings = everyone.of(position)
        rows_known, known = items.lookup(movies)  # movies 51..60 are unknown to the model
        expected = _one_user(items.factors, rows_known[known], ratings[known], 0.07,
                             implicit=implicit, alpha=3.0)  # fmt: skip
        counted = (ratings[known] > 0) if implicit else known[known]
        assert solvable[position] == counted.any()
        assert np.allclose(factors[position], expected, atol=1e-6)


def test_lists_never_hold_rated_movies_and_unknown_only_users_get_none() -> None:
    items = ItemIndex(np.arange(1, 21), RNG.normal(size=(20, 3)))
    rows = [(u, m, 4.0, 0) for u in range(1, 30) for m in range(1, 21) if RNG.random() < 0.5]
    rows.append((99, 500, 5.0, 0))  # rated only a movie the model does not know
    history = RatingHistory()
    history.add(_ratings(rows))
    lists = lists_for(history.everyone(), FoldIn(items, 0.1), k=25)
    for position, user in enumerate(lists.users.tolist()):
        rated = {m for u, m, _, _ in rows if u == user}
        listed = [movie for movie, _ in lists.pairs(position)]
        if user == 99:
            assert not lists.personal[position]
            assert listed == []
        else:
            assert not set(listed) & rated
            assert len(listed) == 20 - len(rated)  # every unrated movie, then padding dropped


def test_history_from_columns_keeps_the_latest_of_a_repeated_pair() -> None:
    history = RatingHistory.from_arrays([1, 2, 1], [5, 5, 5], [2.0, 3.0, 4.0], [10, 10, 20])
    assert len(history) == 2
    assert history.of_users([1]).ratings.tolist() == [4.0]


def test_repeats_are_events_already_held_or_earlier_in_the_batch() -> None:
    history = RatingHistory()
    history.add(_ratings([(1, 10, 4.0, 100), (1, 11, 3.0, 101)]))
    history.add(_ratings([(1, 10, 5.0, 200)], batch_id=1))  # a re-rating outranks timestamp 100
    incoming = _ratings(
        [
            (1, 10, 4.0, 100),  # the outranked rating again
            (1, 10, 5.0, 200),  # the held rating again
            (1, 12, 2.0, 300),  # new
            (1, 12, 2.0, 300),  # new, but twice in this batch: the second is the repeat
            (2, 10, 4.0, 100),  # another user: new
            (1, 11, 3.0, 102),  # same pair, new timestamp: a re-rating, not a repeat
        ],
        batch_id=2,
    )
    assert history.repeats(incoming, 2).tolist() == [True, True, False, True, False, False]
    # Batch 1 run again after a crash is its own first attempt, not a repeat.
    assert history.repeats(_ratings([(1, 10, 5.0, 200)], batch_id=1), 1).tolist() == [False]


def _one_user(
    every_item: np.ndarray, rated: np.ndarray, ratings: np.ndarray, reg: float,
    *, implicit: bool, alpha: float,
) -> np.ndarray:  # fmt: skip
    """The ALS user step for one user, written out as in Spark's ``computeFactors``."""
    y = every_item[rated]
    if implicit:
        confidence = alpha * np.abs(ratings)
        normal = every_item.T @ every_item + (y * confidence[:, None]).T @ y
        positive = ratings > 0
        rhs, count = y[positive].T @ (1.0 + confidence[positive]), int(positive.sum())
    else:
        normal, rhs, count = y.T @ y, y.T @ ratings, len(ratings)
    if count == 0:
        return np.zeros(every_item.shape[1])
    return np.linalg.solve(normal + reg * count * np.eye(every_item.shape[1]), rhs)
