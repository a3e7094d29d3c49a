"""The ratings store: a replayed batch changes nothing, the latest rating wins."""

from __future__ import annotations

import shutil
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


def _rows(frame: DataFrame) -> list[tuple[object, ...]]:
    return sorted(tuple(row) for row in frame.select(*sorted(frame.columns)).collect())


def _fill(spark: SparkSession, store: RatingStore, batches: range, committed: int) -> None:
    """Two ratings a batch, by users 1-3 (so later batches re-rate); commits up to ``committed``."""
    no_dead = spark.createDataFrame([], DEAD)
    for batch in batches:
        rows = [(batch % 3 + 1, 10 + batch % 5, 1.0 + batch % 4, 100 + batch, 2 * batch),
                (batch % 2 + 1, 20 + batch, 3.0, 100 + batch, 2 * batch + 1)]  # fmt: skip
        store.write_batch(batch, _valid(spark, rows), no_dead)
        if batch <= committed:
            store.commit(BatchCommit(batch_id=batch))


def _batch_folders(store: RatingStore) -> list[int]:
    return sorted(int(p.name.split("=")[1]) for p in store.ratings_dir.glob("batch_id=*"))


def test_compaction_folds_the_committed_batches_and_every_read_stays_the_same(
    spark: SparkSession, tmp_path: Path
) -> None:
    store = RatingStore(spark, tmp_path / "store", compact_min_batches=4)
    _fill(spark, store, range(10), committed=7)  # 8 and 9 written, not committed yet
    before = (_rows(store.stored_rows()), _rows(store.ratings()), _rows(store.ratings(5)))
    arrivals = [(u.tolist(), m.tolist()) for u, m in store.arrivals()]

    done = store.compact(through_batch=9)
    assert done is not None
    assert (done.written, done.batches, done.merged, done.deleted, done.deferred) == (
        (0, 7), 8, 0, 8, 0)  # fmt: skip
    assert [(s.first, s.last) for s in store.segments()] == [(0, 7)]
    assert _batch_folders(store) == [8, 9]
    after = (_rows(store.stored_rows()), _rows(store.ratings()), _rows(store.ratings(5)))
    assert after == before
    assert [(u.tolist(), m.tolist()) for u, m in store.arrivals()] == arrivals

    # Fewer than four new committed batches: nothing is written.
    store.commit(BatchCommit(batch_id=8))
    again = store.compact()
    assert again is not None and again.written is None and _batch_folders(store) == [8, 9]


def test_a_batch_run_again_after_its_compaction_is_stored_once(
    spark: SparkSession, tmp_path: Path
) -> None:
    store = RatingStore(spark, tmp_path / "store", compact_min_batches=2)
    _fill(spark, store, range(4), committed=3)
    assert store.compact() is not None
    stored = store.stored_rows().count()
    _fill(spark, store, range(3, 4), committed=-1)  # Spark runs batch 3 again after a crash
    assert _batch_folders(store) == [3]
    assert store.stored_rows().count() == stored == 8
    store.compact()  # what the segment holds already is deleted
    assert _batch_folders(store) == []
    assert store.stored_rows().count() == stored


def test_a_read_in_flight_keeps_the_folders_a_compaction_replaced(
    spark: SparkSession, tmp_path: Path
) -> None:
    store = RatingStore(spark, tmp_path / "store", compact_min_batches=2)
    _fill(spark, store, range(6), committed=5)
    with store.reading():
        listed = store.stored_rows()  # lists the six batch folders
        done = store.compact()
        assert done is not None and (done.written, done.deleted, done.deferred) == ((0, 5), 0, 6)
        assert _batch_folders(store) == list(range(6))
        assert listed.count() == 12  # its files are all still there
        assert store.stored_rows().count() == 12  # a new read takes the segment
    later = store.compact()
    assert later is not None and (later.written, later.deleted) == (None, 6)
    assert _batch_folders(store) == []


def test_segments_merge_as_they_pile_up_and_few_remain(spark: SparkSession, tmp_path: Path) -> None:
    store = RatingStore(spark, tmp_path / "store", compact_min_batches=2)
    merged = []
    for step in range(7):  # four ratings a compaction
        _fill(spark, store, range(2 * step, 2 * step + 2), committed=2 * step + 1)
        done = store.compact()
        assert done is not None and done.written is not None
        merged.append(done.merged)
    assert merged == [0, 1, 0, 2, 0, 1, 0]  # like a binary counter: 7 = 4 + 2 + 1
    assert [(s.first, s.last) for s in store.segments()] == [(0, 7), (8, 11), (12, 13)]
    assert sorted(p.name for p in store.segments_dir.iterdir()) == ["0-7", "12-13", "8-11"]
    assert store.stored_rows().count() == 28
    assert _batch_folders(store) == []


def test_a_compaction_that_stopped_midway_is_never_read_and_is_cleared(
    spark: SparkSession, tmp_path: Path
) -> None:
    store = RatingStore(spark, tmp_path / "store", compact_min_batches=2)
    _fill(spark, store, range(3), committed=2)
    stopped = store.segments_dir / ".writing-0-2-0a1b2c3d"
    shutil.copytree(store.ratings_dir / "batch_id=0", stopped)  # killed while writing
    assert store.stored_rows().count() == 6
    done = store.compact()
    assert done is not None and done.written == (0, 2) and not stopped.exists()
    assert store.stored_rows().count() == 6
