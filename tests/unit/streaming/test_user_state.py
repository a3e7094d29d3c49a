"""Each user's ledger in Spark's state, and lists cut into whole users: the pure logic."""

from __future__ import annotations

import numpy as np
import pandas as pd

from streaming.ingest.history import latest_ratings, whole_users
from streaming.ingest.state import UserLedger, judge, latest, unpacked


def _frame(rows: list[tuple[int, int, float, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])


def test_repeats_and_first_ratings_against_what_the_users_have_stored() -> None:
    held = _frame([(1, 10, 4.0, 100), (1, 11, 3.0, 101), (2, 10, 2.0, 100)])
    # user 1: a repeat of a stored event, a re-rating of 10, a new movie twice (the
    # second a repeat of the first: same timestamp), and a later rating of 12 again;
    # user 2 rates 11 (new to them, though user 1 has it); user 3 is new.
    batch = _frame([(1, 10, 4.0, 100), (1, 10, 5.0, 200), (1, 12, 2.0, 300), (1, 12, 2.0, 300),
                    (1, 12, 3.0, 301), (2, 11, 1.0, 100), (3, 10, 5.0, 100)])  # fmt: skip
    repeat, first = judge(held, batch)
    assert repeat.tolist() == [True, False, False, True, False, False, False]
    assert first.tolist() == [False, False, True, False, False, True, True]


def test_the_latest_held_rating_per_user_and_movie() -> None:
    held = _frame([(1, 10, 4.0, 100), (1, 10, 5.0, 200), (1, 11, 3.0, 150), (2, 10, 1.0, 50)])
    assert latest(held).values.tolist() == [[1, 10, 5.0, 200], [1, 11, 3.0, 150],
                                            [2, 10, 1.0, 50]]  # fmt: skip


def test_a_ledger_survives_its_state_bytes() -> None:
    after = UserLedger.empty().extended(np.array([3, 1]), np.array([1.5, 5.0]), np.array([7, 8]))
    back = UserLedger.unpack(after.pack())
    assert back.movies.tolist() == [3, 1] and back.ratings.tolist() == [1.5, 5.0]
    assert back.timestamps.tolist() == [7, 8] and len(UserLedger.unpack(None).movies) == 0


def test_the_batch_merges_into_its_users_past_latest_timestamp_first() -> None:
    held = pd.DataFrame({"user_id": [1, 1, 2], "movie_id": [10, 11, 10],
                         "rating": [4.0, 3.0, 2.0], "timestamp": [100, 100, 500]})  # fmt: skip
    batch = pd.DataFrame({"user_id": [1, 2, 3], "movie_id": [10, 10, 7],
                          "rating": [1.0, 5.0, 4.0], "timestamp": [200, 400, 9]})  # fmt: skip
    after, changed = latest_ratings(held, batch)
    assert changed.tolist() == [1, 3]  # user 2's rating is older than the one held
    assert after.users.tolist() == [1, 2, 3]
    assert after.of(0)[1].tolist() == [1.0, 3.0] and after.of(1)[1].tolist() == [2.0]


def test_sorted_ratings_are_cut_into_chunks_of_whole_users() -> None:
    users = np.repeat(np.arange(1, 8), [3, 1, 4, 2, 5, 1, 2])
    frame = pd.DataFrame({"user_id": users, "movie_id": np.arange(len(users)), "rating": 1.0})
    frames = [frame.iloc[i : i + 4] for i in range(0, len(frame), 4)]  # users straddle frames
    chunks = list(whole_users(iter(frames), chunk_rows=5))
    seen = [user for chunk in chunks for user in chunk.users.tolist()]
    assert sorted(seen) == list(range(1, 8))  # each user in exactly one chunk
    assert sum(len(chunk.movies) for chunk in chunks) == len(frame)
    for chunk in chunks:
        for position, user in enumerate(chunk.users.tolist()):
            assert len(chunk.of(position)[0]) == int((users == user).sum())


def test_packed_ledgers_come_back_as_rows_per_rating() -> None:
    first = UserLedger.empty().extended(np.array([5, 5]), np.array([1.0, 2.0]), np.array([1, 2]))
    second = UserLedger.empty().extended(np.array([9]), np.array([4.5]), np.array([3]))
    rows = unpacked([7, 8], [first.pack(), second.pack()])
    assert rows.values.tolist() == [[7, 5, 1.0, 1], [7, 5, 2.0, 2], [8, 9, 4.5, 3]]
    assert latest(rows)["rating"].tolist() == [2.0, 4.5]  # a re-rating: the newer one
