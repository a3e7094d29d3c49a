"""Every user's stored ratings, held by Spark in its state store, not by the driver.

The streaming query validates each Kafka record (``streaming.ingest.validation``) and
routes the valid ones, grouped by a bucket of their user id, through a stateful
processor (``transformWithStateInPandas``) whose map state holds, per user, every
rating stored so far (movie, rating, timestamp). For the micro-batch it answers, per
record: whether it repeats an event already stored (same user, movie and timestamp:
the event id), and whether it is the user's first rating of that movie; and, per user
of the batch, the ratings held *before* the batch (the latest per movie), which is all
the driver needs to check and fold in those users. Invalid records pass through
untouched, so the micro-batch still sees everything it read.

Spark checkpoints the state with each micro-batch and keeps it in RocksDB on the
executors, so the driver holds nothing that grows with the stored ratings. A batch run
again after a crash starts from the state as the previous batch left it: its own
first attempt is not there, so a replay is not mistaken for repeats.

``UserLedger`` is the per-user logic, pure and testable without Spark; the in-memory
store of the unit tests runs the same code.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.streaming.stateful_processor import StatefulProcessor, StatefulProcessorHandle

from streaming.ingest.validation import (
    DUPLICATE_REASON,
    FUTURE_TOLERANCE_S,
    parse_records,
    tag_reasons,
)

__all__ = [
    "HELD",
    "RECORD",
    "STATE_OUTPUT",
    "USER_BUCKETS",
    "UserLedger",
    "with_user_state",
]

# Users are grouped into this many buckets (the processor runs once per bucket with
# records in a micro-batch, and keeps one map entry per user). The checkpointed state is
# keyed by it: changing it needs a new checkpoint.
USER_BUCKETS = 8
_INVALID = -1  # the bucket of invalid records: passed through, no state

# Output rows: the batch's records (``RECORD``) and the held ratings of its users (``HELD``).
RECORD, HELD = "record", "held"
STATE_OUTPUT = (
    "kind string, user_id long, movie_id long, rating double, timestamp long, "
    "event_id string, source string, raw binary, reason string, topic string, "
    "partition int, offset long, appended_s double, first boolean"
)
_OUTPUT_COLUMNS = [part.split()[0] for part in STATE_OUTPUT.split(", ")]
_HELD_STATE = "ratings"
_HELD_VALUE = "movies binary, ratings binary, timestamps binary"


@dataclass(frozen=True)
class UserLedger:
    """One user's stored ratings in arrival order, re-ratings included."""

    movies: npt.NDArray[np.int64]
    ratings: npt.NDArray[np.float64]
    timestamps: npt.NDArray[np.int64]

    @classmethod
    def empty(cls) -> UserLedger:
        """A user with nothing stored."""
        return cls(np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.int64))

    @classmethod
    def unpack(cls, value: tuple[bytes, bytes, bytes] | None) -> UserLedger:
        """The ledger of a state value (``pack``); empty for None."""
        if value is None:
            return cls.empty()
        movies, ratings, timestamps = value
        return cls(np.frombuffer(movies, np.int64), np.frombuffer(ratings, np.float64),
                   np.frombuffer(timestamps, np.int64))  # fmt: skip

    def pack(self) -> tuple[bytes, bytes, bytes]:
        """The state value: the three columns as bytes."""
        return self.movies.tobytes(), self.ratings.tobytes(), self.timestamps.tobytes()

    def latest(self) -> pd.DataFrame:
        """The latest rating per movie (movie_id, rating, timestamp), movies ascending."""
        frame = pd.DataFrame(
            {"movie_id": self.movies, "rating": self.ratings, "timestamp": self.timestamps}
        )
        newest = frame.sort_values(["movie_id", "timestamp"]).drop_duplicates(
            "movie_id", keep="last"
        )
        return newest.reset_index(drop=True)

    def take(
        self, movies: npt.ArrayLike, timestamps: npt.ArrayLike, ratings: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_], UserLedger]:
        """Take one batch's ratings of this user, in Kafka order.

        Returns (repeat, first, ledger after): ``repeat`` marks a rating whose movie and
        timestamp were stored before or came earlier in the batch; ``first`` one that is
        the user's first rating of its movie (not stored, and the first kept in the
        batch). The ledger after holds every rating that is not a repeat.
        """
        movie = np.asarray(movies, dtype=np.int64)
        stamp = np.asarray(timestamps, dtype=np.int64)
        rating = np.asarray(ratings, dtype=np.float64)
        events = pd.MultiIndex.from_arrays([movie, stamp])
        held = pd.MultiIndex.from_arrays([self.movies, self.timestamps])
        repeat = events.duplicated(keep="first") | events.isin(held)
        kept = ~repeat
        first = kept & ~np.isin(movie, self.movies)
        first[first] = ~pd.Index(movie[first]).duplicated(keep="first")
        after = UserLedger(
            np.concatenate([self.movies, movie[kept]]),
            np.concatenate([self.ratings, rating[kept]]),
            np.concatenate([self.timestamps, stamp[kept]]),
        )
        return np.asarray(repeat, dtype=np.bool_), np.asarray(first, dtype=np.bool_), after


class UserRatingsProcessor(StatefulProcessor):
    """The stateful processor of ``with_user_state`` (one instance per task)."""

    def init(self, handle: StatefulProcessorHandle) -> None:
        """Open the map state: user id → their ledger."""
        self.ledgers = handle.getMapState(_HELD_STATE, "user long", _HELD_VALUE)

    def handleInputRows(
        self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any
    ) -> Iterator[pd.DataFrame]:
        """Mark a bucket's repeats and first ratings; emit them and its users' held ratings."""
        batch = pd.concat(list(rows), ignore_index=True)
        batch["kind"] = RECORD
        batch["first"] = False
        if int(key[0]) == _INVALID:
            yield batch[_OUTPUT_COLUMNS]
            return
        batch = batch.sort_values(["partition", "offset"], ignore_index=True)
        first = np.zeros(len(batch), dtype=np.bool_)
        held_parts = []
        for user, rows_of_user in batch.groupby("user_id", sort=False).indices.items():
            ledger = UserLedger.unpack(self.ledgers.getValue((int(user),)))
            chosen = batch.iloc[rows_of_user]
            repeat, firsts, after = ledger.take(
                chosen["movie_id"], chosen["timestamp"], chosen["rating"]
            )
            batch.loc[batch.index[rows_of_user[repeat]], "reason"] = DUPLICATE_REASON
            first[rows_of_user] = firsts
            if len(after.movies) > len(ledger.movies):
                self.ledgers.updateValue((int(user),), after.pack())
            if len(ledger.movies):
                held_parts.append(ledger.latest().assign(user_id=int(user)))
        batch["first"] = first
        yield batch[_OUTPUT_COLUMNS]
        if held_parts:
            yield _held_rows(pd.concat(held_parts, ignore_index=True))

    def close(self) -> None:
        """Nothing to release."""


def _held_rows(held: pd.DataFrame) -> pd.DataFrame:
    """``HELD`` output rows: the record-only columns empty (None, not NaN, for Arrow)."""
    rows = held.assign(kind=HELD, first=False)
    for name in _OUTPUT_COLUMNS:
        if name not in rows:
            rows[name] = pd.Series([None] * len(rows), dtype=object)
    return rows[_OUTPUT_COLUMNS]


def _bucket(reason: Column, user: Column) -> Column:
    return F.when(reason.isNull(), F.pmod(user, F.lit(USER_BUCKETS))).otherwise(F.lit(_INVALID))


def with_user_state(records: DataFrame) -> DataFrame:
    """The streaming plan from Kafka records to ``STATE_OUTPUT`` rows (see the module docstring).

    The validation's clock is the micro-batch's own timestamp, which Spark keeps with its
    offsets, so a replayed batch is judged as its first attempt was.
    """
    latest = F.unix_timestamp(F.current_timestamp()) + F.lit(FUTURE_TOLERANCE_S)
    tagged = tag_reasons(parse_records(records), latest)
    event = F.col("_event")
    routed = tagged.select(
        F.col("value").alias("raw"),
        "reason",
        event.event_id.alias("event_id"),
        event.source.alias("source"),
        event.user_id.alias("user_id"),
        event.movie_id.alias("movie_id"),
        event.rating.alias("rating"),
        event.timestamp.alias("timestamp"),
        "topic",
        "partition",
        "offset",
        F.col("kafka_timestamp").cast("double").alias("appended_s"),
        _bucket(F.col("reason"), event.user_id).alias("bucket"),
    )
    return routed.groupBy("bucket").transformWithStateInPandas(
        statefulProcessor=UserRatingsProcessor(),
        outputStructType=STATE_OUTPUT,
        outputMode="Append",
        timeMode="None",
    )
