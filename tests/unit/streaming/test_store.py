"""The ratings store: a replayed batch changes nothing, the latest rating wins."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from streaming.ingest.store import BatchCommit, RatingStore

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
