"""The ratings store: a replayed batch changes nothing, the latest rating wins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pyspark.sql import DataFrame, SparkSession

from streaming.ingest.store import BatchCommit, RatingStore
from streaming.model.transitions import TransitionCounts

COLUMNS = (
    "event_id string, source string, user_id int, movie_id int, rating double, "
    "timestamp long, topic string, partition int, offset long"
)
DEAD = (
    "raw binary, reason string, topic string, partition int, offset long, kafka_timestamp timestamp"
)


def _valid(spark: SparkSession, rows: list[tuple[int, int, float, int, int]]) -> DataFrame:
    data = [(f"e{u}-{m}-{t}", "ml-100k", u, m, r, t, "ratings", 0, o) for u, m, r, t, o in rows]
    return spark.createDataFrame(data, COLUMNS)


def test_replayed_batch_is_not_stored_twice_and_latest_rating_wins(
    spark: SparkSession, tmp_path: Path
) -> None:
    store = RatingStore(spark, tmp_path / "store")
    no_dead = spark.createDataFrame([], DEAD)
    store.write_batch(0, _valid(spark, [(1, 10, 3.0, 100, 0), (2, 20, 4.0, 101, 1)]), no_dead)
    second = _valid(spark, [(1, 10, 5.0, 200, 2), (3, 30, 2.0, 201, 3)])  # user 1 re-rates 10
    store.write_batch(1, second, no_dead)
    store.write_batch(1, second, no_dead)  # Spark re-runs batch 1 after a crash

    rows = {(r["user_id"], r["movie_id"]): r["rating"] for r in store.ratings().collect()}
    assert rows == {(1, 10): 5.0, (2, 20): 4.0, (3, 30): 2.0}
    assert store.ratings().count() == 3


def test_empty_store_has_the_rating_columns(spark: SparkSession, tmp_path: Path) -> None:
    ratings = RatingStore(spark, tmp_path / "store").ratings()
    assert ratings.count() == 0
    assert {"user_id", "movie_id", "rating", "timestamp"} <= set(ratings.columns)


def test_dead_letters_are_kept_per_batch(spark: SparkSession, tmp_path: Path) -> None:
    store = RatingStore(spark, tmp_path / "store")
    dead = spark.createDataFrame([(b"oops", "not a JSON object", "ratings", 0, 5, None)], DEAD)
    store.write_batch(4, _valid(spark, []), dead)
    store.write_batch(4, _valid(spark, []), dead)
    kept = store.dead_letters().collect()
    assert [(bytes(r["raw"]), r["reason"], r["batch_id"]) for r in kept] == [
        (b"oops", "not a JSON object", 4)
    ]


def test_commits_round_trip_in_batch_order(spark: SparkSession, tmp_path: Path) -> None:
    store = RatingStore(spark, tmp_path / "store")
    assert store.last_commit() is None
    store.commit(BatchCommit(batch_id=2, offsets={"ratings:0": 99}, valid=5, model_version=3))
    store.commit(BatchCommit(batch_id=1, offsets={"ratings:0": 40}, valid=7))
    assert [c.batch_id for c in store.commits()] == [1, 2]
    last = store.last_commit()
    assert last is not None
    assert (last.offsets, last.valid, last.model_version) == ({"ratings:0": 99}, 5, 3)
    assert last.committed_at > 0
    assert not list((tmp_path / "store" / "commits").glob(".commit-*"))  # no temporary left


def test_arrivals_are_each_batchs_first_ratings_in_the_order_the_batch_had_them(
    spark: SparkSession, tmp_path: Path
) -> None:
    store = RatingStore(spark, tmp_path / "store")
    no_dead = spark.createDataFrame([], DEAD)
    # (user, movie, rating, timestamp, offset); batch 1 repeats movie 10 for user 1
    store.write_batch(0, _valid(spark, [(1, 10, 3.0, 100, 0), (2, 20, 4.0, 100, 1),
                                        (1, 11, 3.0, 101, 2)]), no_dead)  # fmt: skip
    second = _valid(spark, [(1, 12, 4.0, 90, 5), (1, 10, 5.0, 200, 3), (3, 30, 2.0, 201, 4)])
    store.write_batch(1, second, no_dead)
    store.write_batch(1, second, no_dead)  # replayed after a crash: stored once
    store.write_batch(2, _valid(spark, [(2, 21, 1.0, 300, 6)]), no_dead)

    for chunk_rows in (1_000, 2):  # one chunk, or batches spread over several
        batches = [(users.tolist(), movies.tolist())
                   for users, movies in store.arrivals(chunk_rows)]  # fmt: skip
        # the re-rating of movie 10 is no first rating; batch 1 in offset order, not by time
        assert batches == [([1, 2, 1], [10, 20, 11]), ([3, 1], [30, 12]), ([2], [21])]


def test_counts_rebuilt_from_the_arrivals_equal_the_counts_of_the_live_batches(
    spark: SparkSession, tmp_path: Path
) -> None:
    store = RatingStore(spark, tmp_path / "store")
    no_dead = spark.createDataFrame([], DEAD)
    rng = np.random.default_rng(11)
    live = TransitionCounts(window=3, memory=4, reverse=0.5, followers=3)  # rows get cut
    rated: set[tuple[int, int]] = set()
    offset = 0
    for batch_id in range(5):
        users, movies = rng.integers(1, 15, 150), rng.integers(1, 40, 150)
        rows = [(int(u), int(m), 3.0, 1_000 + offset + i, offset + i)
                for i, (u, m) in enumerate(zip(users, movies, strict=True))]  # fmt: skip
        offset += len(rows)
        store.write_batch(batch_id, _valid(spark, rows), no_dead)
        first = []  # what the users' state marks: a user's first rating of the movie
        for position, pair in enumerate(zip(users.tolist(), movies.tolist(), strict=True)):
            if pair not in rated:
                rated.add(pair)
                first.append(position)
        live.observe(users[first], movies[first])

    rebuilt = TransitionCounts(window=3, memory=4, reverse=0.5, followers=3)
    for users, movies in store.arrivals(chunk_rows=64):
        rebuilt.observe(users, movies)
    assert rebuilt.pairs == live.pairs
    for movie in range(1, 40):
        assert rebuilt.following(movie)[0].tolist() == live.following(movie)[0].tolist()
        assert rebuilt.following(movie)[1].tolist() == live.following(movie)[1].tolist()
    assert all(rebuilt.recent(user) == live.recent(user) for user in range(1, 15))
