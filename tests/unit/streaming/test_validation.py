"""Validation of a micro-batch: each kind of bad record gets its reason, good ones pass typed."""

from __future__ import annotations

import json

import pytest
from pyspark.sql import DataFrame, SparkSession

from producer.events import RatingEvent
from streaming.ingest.validation import MAX_MESSAGE_BYTES, split_valid

NOW = 1_700_000_000


def _good(user: int = 7, movie: int = 42, rating: float = 4.0, source: str = "ml-100k") -> bytes:
    return RatingEvent(source, user, movie, rating, 881250949).to_json()


def _with(**changes: object) -> bytes:
    event = json.loads(_good())
    event.update(changes)
    return json.dumps(event).encode()


def _without(field: str) -> bytes:
    event = json.loads(_good())
    del event[field]
    return json.dumps(event).encode()


# (key, value, expected reason); key None is a message without key.
CASES: list[tuple[bytes | None, bytes | None, str]] = [
    (b"7", None, "empty message"),
    (b"7", b"x" * (MAX_MESSAGE_BYTES + 1), f"message larger than {MAX_MESSAGE_BYTES} bytes"),
    (None, _good(), "message has no key"),
    (b"7", b"not json at all", "not a JSON object"),
    (b"7", b"[1, 2, 3]", "not a JSON object"),
    (b"7", _without("rating"), "missing field rating"),
    (b"7", _with(user_id=None), "missing field user_id"),
    (b"7", _with(user_id="seven"), "field user_id has the wrong type"),
    (b"7", _with(timestamp=1.5), "field timestamp has the wrong type"),
    (b"7", _with(schema_version=2), "unknown schema version 2"),
    (b"7", _with(source="netflix"), "unknown source netflix"),
    (b"-3", _with(user_id=-3), "user_id outside 1..2147483647"),
    (b"7", _with(movie_id=2**40), "movie_id outside 1..2147483647"),
    (b"7", _with(rating=9.0), "rating 9.0 is off the scale of source ml-100k"),
    (b"7", _with(rating=3.5), "rating 3.5 is off the scale of source ml-100k"),
    (b"7", _with(timestamp=NOW + 10 * 86_400), "more than a day in the future"),
    (b"8", _good(), "message key is not the user id"),
]


def _records(spark: SparkSession, rows: list[tuple[bytes | None, bytes | None]]) -> DataFrame:
    data = [(key, value, "ratings", 0, offset, None) for offset, (key, value) in enumerate(rows)]
    schema = (
        "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
    )
    return spark.createDataFrame(data, schema)


def test_every_bad_kind_gets_its_reason_and_good_records_pass(spark: SparkSession) -> None:
    good = [(b"7", _good()), (b"9", _good(user=9, rating=3.5, source="ml-latest-small"))]
    rows = [(key, value) for key, value, _ in CASES] + good
    valid, invalid = split_valid(_records(spark, rows), now_s=NOW)

    reasons = {row["offset"]: row["reason"] for row in invalid.collect()}
    assert len(reasons) == len(CASES)
    for offset, (_, _, expected) in enumerate(CASES):
        assert expected in reasons[offset], (offset, reasons[offset])
    raw_of_first_bad_json = next(r["raw"] for r in invalid.collect() if r["offset"] == 3)
    assert bytes(raw_of_first_bad_json) == b"not json at all"  # kept as sent

    accepted = valid.collect()
    assert [(r["user_id"], r["movie_id"], r["rating"], r["source"]) for r in accepted] == [
        (7, 42, 4.0, "ml-100k"),
        (9, 42, 3.5, "ml-latest-small"),
    ]
    assert {r["offset"] for r in accepted} == {len(CASES), len(CASES) + 1}
    assert dict(valid.dtypes)["user_id"] == "int"


@pytest.mark.parametrize("rating", [1.0, 5.0])
def test_scale_edges_are_valid(spark: SparkSession, rating: float) -> None:
    valid, invalid = split_valid(_records(spark, [(b"7", _good(rating=rating))]), now_s=NOW)
    assert (valid.count(), invalid.count()) == (1, 0)
