"""Validate the rating events of a micro-batch: Kafka records in, valid and invalid frames out.

The rules, their order and their reasons are ``producer.validation``'s; this module
writes them as Spark columns. Records with a reason are not dropped: they go to the
dead-letter sink with the raw bytes, the reason and where they came from (topic,
partition, offset).
"""

from __future__ import annotations

import operator
import string
from functools import cache, reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from producer.events import RATING_SCALES, SCHEMA_VERSION
from producer.validation import (
    DUPLICATE_REASON,
    EVENT_FIELDS,
    FUTURE_TOLERANCE_S,
    INTEGER_BITS,
    MAX_MESSAGE_BYTES,
    REASONS,
)
from recstream_base.ids import MAX_ID

__all__ = [
    "DUPLICATE_REASON",
    "EVENT_SCHEMA",
    "FUTURE_TOLERANCE_S",
    "MAX_MESSAGE_BYTES",
    "parse_records",
    "split_parsed",
    "split_valid",
    "tag_reasons",
]

_SPARK_TYPES = {32: T.IntegerType(), 64: T.LongType()}


def _spark_type(name: str) -> T.DataType:
    if name == "rating":
        return T.DoubleType()
    if name in INTEGER_BITS:
        return _SPARK_TYPES[INTEGER_BITS[name]]
    return T.StringType()


EVENT_SCHEMA = T.StructType([T.StructField(name, _spark_type(name)) for name in EVENT_FIELDS])
_FIELDS = list(EVENT_FIELDS)


def _text(reason: str, **values: Column) -> Column:
    """Reason ``reason`` of ``REASONS`` as a column, its ``{name}`` parts from ``values``."""
    parts: list[Column] = []
    for literal, name, _, _ in string.Formatter().parse(REASONS[reason]):
        if literal:
            parts.append(F.lit(literal))
        if name is not None:
            parts.append(values[name].cast("string"))
    return parts[0] if len(parts) == 1 else F.concat(*parts)


def _on_scale(source: Column, rating: Column) -> Column:
    def fits(name: str) -> Column:
        scale = RATING_SCALES[name]
        steps = (rating - F.lit(scale.low)) / F.lit(scale.step)
        return (
            (source == F.lit(name))
            & (rating >= F.lit(scale.low))
            & (rating <= F.lit(scale.high))
            & (F.abs(steps - F.round(steps)) < F.lit(1e-9))
        )

    return reduce(operator.or_, (fits(name) for name in RATING_SCALES))


@cache
def _reason() -> Column:
    """The rejection reason of a parsed record, or null when it is valid.

    Built once per process: the expression has some hundred nodes, and building it
    through py4j took a quarter of a second per micro-batch. The time limit comes from
    the ``_latest_s`` column, which ``split_parsed`` sets per batch.
    """
    fields, event = F.col("_fields"), F.col("_event")
    reason = (
        F.when(F.col("value").isNull() | (F.length("value") == 0), _text("empty"))
        .when(F.length("value") > MAX_MESSAGE_BYTES, _text("too_large"))
        .when(F.col("key").isNull(), _text("no_key"))
        .when(fields.isNull(), _text("not_object"))
    )
    for name in _FIELDS:
        reason = reason.when(
            ~F.map_contains_key(fields, name) | fields[name].isNull(),
            F.lit(REASONS["missing"].format(field=name)),
        )
    for name in _FIELDS:
        reason = reason.when(event[name].isNull(), F.lit(REASONS["wrong_type"].format(field=name)))
    known_sources = list(RATING_SCALES)
    user, movie, rating, stamp = event.user_id, event.movie_id, event.rating, event.timestamp
    return (
        reason.when(
            event.schema_version != SCHEMA_VERSION,
            _text("schema_version", schema_version=event.schema_version),
        )
        .when(~event.source.isin(known_sources), _text("source", source=event.source))
        .when((user < 1) | (user > MAX_ID), _text("user_id"))
        .when((movie < 1) | (movie > MAX_ID), _text("movie_id"))
        .when(~_on_scale(event.source, rating), _text("rating", rating=rating, source=event.source))
        .when((stamp < 0) | (stamp > F.col("_latest_s")), _text("timestamp"))
        .when(F.col("key").cast("string") != user.cast("string"), _text("key"))
    )


def parse_records(records: DataFrame) -> DataFrame:
    """Kafka records with their JSON parsed twice: as a string map and as the event schema.

    Persist the result before ``split_parsed`` when the batch is used more than once:
    the validation rules read the parsed columns many times, and Spark's optimizer
    would otherwise inline ``from_json`` into every one of those reads.
    """
    text = F.col("value").cast("string")
    return records.select(
        "key",
        "value",
        "topic",
        "partition",
        "offset",
        F.col("timestamp").alias("kafka_timestamp"),
        F.from_json(text, "map<string,string>").alias("_fields"),
        F.from_json(text, EVENT_SCHEMA).alias("_event"),
    )


@cache
def _is_valid() -> Column:
    return F.col("reason").isNull()


@cache
def _valid_columns() -> tuple[Column | str, ...]:
    return (
        F.col("_event.event_id").alias("event_id"),
        F.col("_event.source").alias("source"),
        F.col("_event.user_id").cast("int").alias("user_id"),
        F.col("_event.movie_id").cast("int").alias("movie_id"),
        F.col("_event.rating").alias("rating"),
        F.col("_event.timestamp").alias("timestamp"),
        "topic",
        "partition",
        "offset",
        "kafka_timestamp",
    )


def tag_reasons(parsed: DataFrame, latest_s: Column) -> DataFrame:
    """``parse_records`` output with each record's rejection ``reason`` (null when valid).

    ``latest_s`` is the latest plausible rating timestamp (epoch seconds).
    """
    return parsed.withColumn("_latest_s", latest_s.cast("long")).withColumn("reason", _reason())


def split_parsed(parsed: DataFrame, *, now_s: int) -> tuple[DataFrame, DataFrame]:
    """Split ``parse_records`` output into (valid, invalid); see ``split_valid``."""
    tagged = tag_reasons(parsed, F.lit(now_s + FUTURE_TOLERANCE_S))
    valid = tagged.where(_is_valid()).select(*_valid_columns())
    invalid = tagged.where(~_is_valid()).select(
        F.col("value").alias("raw"), "reason", "topic", "partition", "offset", "kafka_timestamp"
    )
    return valid, invalid


def split_valid(records: DataFrame, *, now_s: int) -> tuple[DataFrame, DataFrame]:
    """Split Kafka records (key, value, topic, partition, offset, timestamp) into two frames.

    Returns:
        ``(valid, invalid)``: valid events with typed columns and their Kafka position;
        invalid records with ``raw`` bytes, ``reason`` and their Kafka position.
    """
    return split_parsed(parse_records(records), now_s=now_s)
