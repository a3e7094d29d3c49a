"""The short-term transitions and the hybrid blend, against hand-computed examples."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from streaming.ingest.history import RatingHistory
from streaming.model.blend import ShortTerm, blend
from streaming.model.lists import FoldIn, lists_for
from streaming.model.topn import ItemIndex
from streaming.model.transitions import TransitionCounts


def test_a_rating_follows_each_of_the_previous_window_movies() -> None:
    counts = TransitionCounts(window=2, memory=3)
    counts.observe([1, 1, 1, 2], [10, 20, 30, 10])
    assert counts.following(10)[0].tolist() == [20, 30]  # 30 follows 20 and 10
    assert counts.following(20)[0].tolist() == [30]
    assert counts.following(30)[0].tolist() == []  # never followed by anything
    assert counts.pairs == 3  # user 2 has one rating: nothing follows it yet
    assert counts.recent(1) == [30, 20, 10]  # newest first
    assert counts.recent(2) == [10]
    assert counts.recent(99) == []


def test_scores_decay_with_age_and_can_be_normalised_by_the_source() -> None:
    counts = TransitionCounts(window=1, memory=2)
    counts.observe([1, 1, 2, 2, 3, 3], [10, 20, 10, 20, 10, 30])  # 10→20 twice, 10→30 once
    counts.observe([4, 4], [40, 20])  # 40→20
    counts.observe([5, 5], [10, 40])  # user 5: newest 40, then 10
    movies = np.array([10, 20, 30, 40], dtype=np.int64)
    raw = counts.scores([5], movies, decay=0.5)
    # from 40 (age 0, weight 1): 20 ×1; from 10 (age 1, weight 0.5): 20 ×2, 30 ×1, 40 ×1
    assert raw[0].tolist() == pytest.approx([0.0, 1.0 + 1.0, 0.5, 0.5])
    shares = counts.scores([5], movies, decay=0.5, source_norm=1.0)
    # out of 10 there are 4 counts, out of 40 one
    assert shares[0].tolist() == pytest.approx([0.0, 1.0 + 0.5 * 2 / 4, 0.5 / 4, 0.5 / 4])
    assert counts.scores([99], movies, decay=0.5).tolist() == [[0.0, 0.0, 0.0, 0.0]]


def test_reverse_counts_the_earlier_movie_as_following_too() -> None:
    counts = TransitionCounts(window=1, memory=1, reverse=0.5)
    counts.observe([1, 1], [10, 20])
    assert counts.following(10)[1].tolist() == [1.0]
    assert counts.following(20)[0].tolist() == [10]
    assert counts.following(20)[1].tolist() == [0.5]


def _counted_one_by_one(
    users: np.ndarray, movies: np.ndarray, window: int, reverse: float
) -> dict[tuple[int, int], float]:
    """The counts the module docstring defines, rating by rating: the reference."""
    counts: dict[tuple[int, int], float] = {}
    seen: dict[int, list[int]] = {}
    for user, movie in zip(users.tolist(), movies.tolist(), strict=True):
        earlier = seen.setdefault(user, [])
        for before in earlier[-window:]:
            counts[before, movie] = counts.get((before, movie), 0.0) + 1.0
            if reverse:
                counts[movie, before] = counts.get((movie, before), 0.0) + reverse
        earlier.append(movie)
    return counts


def test_batches_count_what_the_ratings_count_one_by_one() -> None:
    rng = np.random.default_rng(7)
    users = rng.integers(1, 40, 4_000)
    movies = rng.integers(1, 150, 4_000)
    counts = TransitionCounts(window=3, memory=4, reverse=0.5)
    cuts = np.sort(rng.choice(np.arange(1, 4_000), 60, replace=False))
    for part_users, part_movies in zip(np.split(users, cuts), np.split(movies, cuts), strict=True):
        counts.observe(part_users, part_movies)  # uneven batches, some users in many
    expected = _counted_one_by_one(users, movies, window=3, reverse=0.5)
    held = {
        (source, int(target)): float(count)
        for source in range(1, 150)
        for target, count in zip(*counts.following(source), strict=True)
    }
    assert held == pytest.approx(expected)
    assert counts.pairs == sum(min(i, 3) for i in pd.Series(users).groupby(users).cumcount()) * 2
    assert counts.observed == 4_000
    last = pd.DataFrame({"u": users, "m": movies}).groupby("u")["m"].apply(list)
    assert all(counts.recent(user) == movies_of[::-1][:4] for user, movies_of in last.items())


def test_many_small_batches_read_as_one_big_batch() -> None:
    rng = np.random.default_rng(1)
    users = rng.integers(1, 30, 3_000)
    movies = rng.integers(1, 200, 3_000)
    incremental = TransitionCounts(window=3, memory=5)
    for first in range(0, 3_000, 7):  # many small batches, rows flushed at different times
        incremental.observe(users[first : first + 7], movies[first : first + 7])
    whole = TransitionCounts(window=3, memory=5)
    whole.observe(users, movies)
    catalog = np.arange(1, 200, dtype=np.int64)
    every = np.arange(1, 30)
    assert np.allclose(incremental.scores(every, catalog, 0.8, 0.5),
                       whole.scores(every, catalog, 0.8, 0.5))  # fmt: skip
    for movie in (1, 50, 199):
        assert incremental.following(movie)[0].tolist() == whole.following(movie)[0].tolist()


def test_the_blend_adds_the_transition_share_to_als_and_prior() -> None:
    als = np.array([[0.2, 0.1, 0.0], [0.0, 0.0, 0.0]])
    prior = np.array([0.0, 0.05, 0.1])
    transitions = np.array([[0.0, 2.0, 4.0], [0.0, 0.0, 0.0]])
    scores = blend(als, prior, transitions, transition_weight=1.0)
    assert scores[0].tolist() == pytest.approx([0.2, 0.1 + 0.05 + 0.5, 0.1 + 1.0])
    assert scores[1].tolist() == pytest.approx(prior.tolist())  # no transitions: ALS + prior
    assert np.allclose(blend(als, prior), als + prior)
    assert np.allclose(blend(als, prior, transitions, 0.0), als + prior)


def test_the_blend_in_place_gives_the_same_bits_in_the_als_array() -> None:
    rng = np.random.default_rng(3)
    als, prior = rng.normal(size=(40, 30)), rng.normal(size=30)
    transitions = rng.poisson(0.4, size=(40, 30)).astype(np.float64)
    expected = blend(als, prior, transitions, 0.35)
    mine = als.copy()
    scores = blend(mine, prior, transitions, 0.35, in_place=True)
    assert scores is mine
    assert np.array_equal(scores, expected)
    assert np.array_equal(blend(als.copy(), prior, in_place=True), als + prior)


def test_ties_in_the_blend_rank_by_ascending_movie_id() -> None:
    items = ItemIndex([3, 1, 2], np.zeros((3, 2)))
    history = RatingHistory.from_arrays([1], [9], [4.0], [0])  # a movie the model lacks
    counts = TransitionCounts(window=1, memory=1)
    counts.observe([7, 7, 8, 8], [9, 1, 9, 3])  # 9 was followed by 1 and by 3, once each
    counts.observe([1], [9])
    lists = lists_for(history.of_users([1]), FoldIn(items, 0.1, implicit=True), 3,
                      short_term=ShortTerm(counts, weight=1.0))  # fmt: skip
    assert lists.personal.tolist() == [True]  # personal through transitions alone
    assert lists.pairs(0) == [(1, 1.0), (3, 1.0), (2, 0.0)]


def test_a_first_rating_counts_once_even_when_its_batch_is_replayed() -> None:
    history = RatingHistory()
    batch = pd.DataFrame({"user_id": [1, 1, 1], "movie_id": [10, 20, 10],
                          "rating": [4.0] * 3, "timestamp": [1, 2, 3], "batch_id": [0] * 3,
                          "offset": [0, 1, 2]})  # fmt: skip
    assert history.unseen(batch).tolist() == [True, True, False]  # 10 again: a re-rating
    history.add(batch)
    assert history.unseen(batch).tolist() == [False, False, False]  # the replay adds nothing
    users, movies = history.arrival_order()
    assert users.tolist() == [1, 1] and movies.tolist() == [20, 10]  # 10 at its re-rating


def test_the_hybrid_puts_the_session_successor_first_where_als_alone_does_not() -> None:
    # Taste: everyone likes movies 1-5 (ALS ranks them high). Sessions: whoever rates 20
    # rates 21 right after it, a pattern only the transitions see.
    rng = np.random.default_rng(0)
    users, movies = [], []
    for user in range(1, 41):
        liked = rng.permutation([1, 2, 3, 4, 5])[:3].tolist()
        session = [20, 21] if user <= 30 else []
        for movie in [*liked, *session]:
            users.append(user)
            movies.append(movie)
    counts = TransitionCounts(window=1, memory=3)
    counts.observe(users, movies)
    popular = np.bincount(movies, minlength=30)[1:]
    items = ItemIndex(np.arange(1, 30), np.c_[popular, np.ones(29)] / 40.0)
    probe = RatingHistory.from_arrays([99, 99], [1, 20], [5.0, 5.0], [0, 1])
    counts.observe([99, 99], [1, 20])
    model = FoldIn(items, 0.1, implicit=True)
    als_only = lists_for(probe.of_users([99]), model, 3)
    hybrid = lists_for(probe.of_users([99]), model, 3, short_term=ShortTerm(counts, 1.0))
    assert als_only.pairs(0)[0][0] != 21
    assert hybrid.pairs(0)[0][0] == 21


def test_the_short_term_part_rereads_its_last_answer_only_until_the_counts_change() -> None:
    short = ShortTerm(TransitionCounts(window=2, memory=3), weight=1.0, decay=0.5)
    short.counts.observe([1, 1, 2], [10, 20, 10])
    users, movies = np.array([1, 2]), np.array([10, 20, 30])
    first = short.scores(users, movies)
    np.testing.assert_array_equal(short.scores(users, movies[1:]), first[:, 1:])  # a subset
    short.counts.observe([3, 3], [10, 30])  # 30 now follows 10: user 2's row changes
    after = short.scores(users, movies)
    expected = short.counts.scores(users, movies, 0.5)
    np.testing.assert_array_equal(after, expected)
    assert after[1, 2] > 0 and first[1, 2] == 0
    short.counts.observe([4], [10])  # a first rating: no pair counted, but a recent movie
    np.testing.assert_array_equal(short.scores(np.array([4]), movies), [[0.0, 1.0, 1.0]])
    copy = pickle.loads(pickle.dumps(short))  # noqa: S301 - our own bytes
    assert copy._last == {}  # broadcast without the answer


def test_one_rating_scores_what_followed_it_and_a_never_followed_movie_scores_zero() -> None:
    counts = TransitionCounts(window=1, memory=5)
    counts.observe([1, 1, 2, 3], [7, 8, 7, 9])  # 8 followed 7 once; 9 never followed a thing
    dense = counts.scores([2, 3, 4], np.array([7, 8, 9]), decay=0.9)
    assert dense.tolist() == [[0.0, 1.0, 0.0],  # user 2's one rating (7): 8 followed it
                              [0.0, 0.0, 0.0],  # user 3's one rating (9): nothing followed
                              [0.0, 0.0, 0.0]]  # user 4: no ratings  # fmt: skip
    sparse_ids = np.array([7, 8, 9, 5_000_000])  # ids far apart: looked up by binary search
    np.testing.assert_array_equal(counts.scores([2, 3, 4], sparse_ids, 0.9)[:, :3], dense)


def test_many_users_at_once_score_as_each_one_alone() -> None:
    """From 16 users on the scores are one sparse matrix product over the sources' rows; they
    must equal each user's own pass, pending increments and merged rows alike."""
    rng = np.random.default_rng(4)
    counts = TransitionCounts(window=3, memory=6, reverse=0.5)
    for _ in range(40):  # some rows merged (64 pending), others still pending
        users = rng.integers(1, 30, 25)
        movies = rng.integers(1, 90, 25)
        first = pd.DataFrame({"u": users, "m": movies}).drop_duplicates()
        counts.observe(first["u"].to_numpy(), first["m"].to_numpy())
    asked, movie_ids = np.arange(1, 31), np.arange(5, 80)
    together = counts.scores(asked, movie_ids, 0.8, 0.5)
    alone = np.vstack([counts.scores([int(user)], movie_ids, 0.8, 0.5) for user in asked])
    np.testing.assert_allclose(together, alone, rtol=1e-12, atol=1e-12)
    assert together.any(axis=1).sum() > 20


def test_a_row_past_twice_its_followers_keeps_its_largest_counts() -> None:
    counts = TransitionCounts(window=1, memory=1, followers=2)
    # out of 10: 20 three times, 30 and 40 twice, 50 and 60 once (user n: 10, then one)
    pairs = [20, 20, 20, 30, 30, 40, 40, 50, 60]
    counts.observe(np.repeat(np.arange(len(pairs)), 2), np.ravel([[10, m] for m in pairs]))
    targets, kept = counts.following(10)
    assert targets.tolist() == [20, 30]  # 5 followers > 2 × 2: cut to the 2 largest, tie by id
    assert kept.tolist() == [3.0, 2.0]
    shares = counts.scores([100], np.array([20, 30, 40], dtype=np.int64), 1.0, 1.0)
    assert shares.tolist() == [[0.0, 0.0, 0.0]]  # user 100 rated nothing yet
    counts.observe([100], [10])
    shares = counts.scores([100], np.array([20, 30, 40], dtype=np.int64), 1.0, 1.0)
    assert shares[0].tolist() == pytest.approx([3 / 9, 2 / 9, 0.0])  # the total counts all 9


def test_a_row_within_twice_its_followers_is_not_cut() -> None:
    counts = TransitionCounts(window=1, memory=1, followers=2)
    counts.observe([1, 1, 2, 2, 3, 3, 4, 4], [10, 20, 10, 30, 10, 40, 10, 50])
    assert counts.following(10)[0].tolist() == [20, 30, 40, 50]  # 4 = 2 × 2 followers


def test_bounded_rows_never_exceed_twice_their_followers_nor_the_true_counts() -> None:
    rng = np.random.default_rng(3)
    users, movies = rng.integers(1, 60, 6_000), rng.integers(1, 200, 6_000)
    bounded = TransitionCounts(window=3, memory=4, reverse=0.5, followers=8)
    exact = TransitionCounts(window=3, memory=4, reverse=0.5)
    for part_users, part_movies in zip(np.array_split(users, 40), np.array_split(movies, 40),
                                       strict=True):  # fmt: skip
        bounded.observe(part_users, part_movies)
        exact.observe(part_users, part_movies)
    for source in range(1, 200):
        targets, kept = bounded.following(source)
        assert len(targets) <= 16
        assert np.all(np.diff(targets) > 0)
        true_targets, true_counts = exact.following(source)
        rows = np.searchsorted(true_targets, targets)
        assert np.all(kept <= true_counts[rows] + 1e-9)  # a follower cut and seen again restarts
    assert bounded.footprint()[0] < exact.footprint()[0]
    assert bounded.recent(5) == exact.recent(5)


def test_followers_below_zero_are_refused() -> None:
    with pytest.raises(ValueError, match="followers must be 0"):
        TransitionCounts(followers=-1)


def test_many_users_read_one_kept_matrix_until_the_counts_change() -> None:
    """The product path builds every row into one matrix once and reuses it across calls
    (the blocks of one publication); a new batch, or other movies asked, rebuild it."""
    counts = TransitionCounts(window=2, memory=4, followers=2)
    users = np.arange(1, 21)
    movies = np.arange(1, 9)
    nothing = counts.scores(users, movies, 0.7)  # no user seen yet: zeros, not an error
    assert nothing.shape == (20, 8) and not nothing.any()
    rng = np.random.default_rng(7)
    for _ in range(6):
        who, what = rng.integers(1, 21, 30), rng.integers(1, 9, 30)
        first = pd.DataFrame({"u": who, "m": what}).drop_duplicates()
        counts.observe(first["u"].to_numpy(), first["m"].to_numpy())
    before = counts.scores(users, movies, 0.7, 0.5)
    kept = counts._matrix
    np.testing.assert_array_equal(counts.scores(users, movies, 0.7, 0.5), before)
    assert counts._matrix is kept  # read again, not rebuilt
    alone = np.vstack([counts.scores([int(user)], movies, 0.7, 0.5) for user in users])
    np.testing.assert_allclose(before, alone, rtol=1e-12, atol=1e-12)  # rows cut alike
    counts.scores(users, movies[2:], 0.7, 0.5)
    assert counts._matrix is not kept  # other columns: another matrix
    counts.observe([21, 21], [1, 2])
    after = counts.scores(np.arange(1, 22), movies, 0.7, 0.5)
    assert counts._matrix is not None and counts._matrix.observed == counts.observed
    assert after[20, 1] > 0  # the new user's 2 followed their 1, counted since
    assert pickle.loads(pickle.dumps(counts))._matrix is None  # noqa: S301 - our own bytes


def test_held_bytes_count_rows_recent_movies_and_the_kept_matrix() -> None:
    counts = TransitionCounts(window=2, memory=3, followers=4)
    empty = counts.held_bytes()
    counts.observe([1, 1, 1, 2, 2], [10, 11, 12, 10, 12])
    rows = counts.footprint()[1]
    assert rows > 0
    with_rows = counts.held_bytes()
    assert with_rows - empty >= rows  # rows, plus the recent movies of two new users
    counts.scores(np.array([1, 2] * 10), np.array([10, 11, 12]), 0.7)  # builds the matrix
    assert counts._matrix is not None
    assert counts.held_bytes() > with_rows
    assert pickle.loads(pickle.dumps(counts)).held_bytes() < counts.held_bytes()  # noqa: S301
