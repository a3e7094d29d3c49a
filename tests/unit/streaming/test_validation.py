"""Validation of a micro-batch: each kind of bad record gets its reason, good ones pass typed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from producer.events import RatingEvent
from producer.validation import FUTURE_TOLERANCE_S, REASONS, event_problem, record_problem
from streaming.ingest.validation import MAX_MESSAGE_BYTES, parse_records, split_valid, tag_reasons

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


# Values tried in each field of an otherwise good event: the edges of every rule, and
# the JSON types Spark's reader takes or refuses.
_TRIED: dict[str, list[Any]] = {
    "schema_version": [1, 2, 0, -1, 1.0, "1", True, 2**31 - 1, 2**31, [1], {"v": 1}],
    "event_id": ["e-1", "", 5, 4.5, True, [1, 2], {"a": "b"}],
    "source": ["ml-1m", "ml-latest", "synthetic", "netflix", "", 5, False, ["ml-1m"]],
    "user_id": [1, 0, -5, 2**31 - 1, 2**31, 2**40, 2**63 - 1, 2**63, 7.0, "7", False],
    "movie_id": [1, 0, 2**31 - 1, 2**31, -(2**63), -(2**63) - 1, 3.5, "42", True],
    "rating": [0.5, 1, 1.0, 4, 4.5, 5, 5.0, 5.5, 0, -1.0, 1e20, 2.5e-5, 3.0000000001,
               "4", "NaN", "Infinity", "-INF", "abc", True, [4]],
    "timestamp": [0, -1, 881250949, NOW + FUTURE_TOLERANCE_S, NOW + FUTURE_TOLERANCE_S + 1,
                  2**63, 1.5, "881250949", None],
}  # fmt: skip


def _variants() -> list[tuple[bytes | None, bytes | None]]:
    good = json.loads(_good())
    rows: list[tuple[bytes | None, bytes | None]] = [(key, value) for key, value, _ in CASES]
    for field, values in _TRIED.items():
        for value in values:
            event = {**good, field: value}
            key = str(value).encode() if field == "user_id" else b"7"
            rows.append((key, json.dumps(event).encode()))
        rows.append((b"7", json.dumps({k: v for k, v in good.items() if k != field}).encode()))
    text = _good().decode()
    rows += [
        (b"7", b""),
        (b"", _good()),
        (b"007", _good()),
        (b"7 ", _good()),
        (b"7", b"x" * MAX_MESSAGE_BYTES),
        (b"7", b"  " + _good() + b"  "),
        (b"7", (text[:-1] + ', "extra": [1, {"x": null}]}').encode()),
        (b"7", (text[:-1] + ', "rating": 2.0}').encode()),  # a field given twice: the last
        (b"7", (text[:-1] + ', "rating": 2.5}').encode()),
        (b"7", (text[:-1] + ', "rating": null}').encode()),
        (b"7", (text[:-1] + ', "rating": "x"}').encode()),
        (b"7", ('{"rating": "x", ' + text[1:]).encode()),
        (b"7", _good() + b" {"),
        (b"7", b"x" + _good()),
        (b"7", _good() + b" trailing"),
        (b"7", b"[" + _good() + b"]"),
        (b"7", b"null"),
        (b"7", b"{}"),
        (b"7", b"\xef\xbb\xbf" + _good()),
        (b"7", _good().replace(b"ml-100k", b"ml-\xff")),
        (b"\xff", _good()),
    ]
    return rows


def test_python_and_spark_give_every_record_the_same_reason(spark: SparkSession) -> None:
    """``producer.validation`` (the HTTP ingest's check) agrees with the job, reason for reason."""
    rows = _variants()
    latest = NOW + FUTURE_TOLERANCE_S
    tagged = tag_reasons(parse_records(_records(spark, rows)), F.lit(latest))
    from_spark = {
        row["offset"]: row["reason"] for row in tagged.select("offset", "reason").collect()
    }

    disagreements = []
    for offset, (key, value) in enumerate(rows):
        in_python = record_problem(key, value, latest_s=latest)
        if in_python != from_spark[offset]:
            disagreements.append((key, value, in_python, from_spark[offset]))
    assert disagreements == []
    # The corpus reaches every rule, so agreement means something for each of them.
    reached = {reason for reason in from_spark.values() if reason is not None}
    for name, template in REASONS.items():
        head = template.split("{")[0]
        assert any(reason.startswith(head) for reason in reached), name
    assert None in from_spark.values()


def test_a_decoded_event_gets_the_reason_its_record_would_get() -> None:
    """``event_problem`` (an event already decoded, as the HTTP ingest has it) agrees too."""
    latest = NOW + FUTURE_TOLERANCE_S
    message_level = {
        REASONS[name] for name in ("empty", "too_large", "no_key", "not_object", "key")
    }
    compared = 0
    for key, value in _variants():
        in_record = record_problem(key, value, latest_s=latest)
        if in_record in message_level or value is None or value.count(b'"rating"') > 1:
            continue
        try:
            fields = json.loads(value)
        except ValueError:  # trailing text, a byte-order mark: an HTTP body would be refused
            continue
        assert event_problem(fields, latest_s=latest) == in_record, fields
        compared += 1
    assert compared > 60
