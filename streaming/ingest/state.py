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

``judge`` and ``latest`` are the logic, pure and testable without Spark, vectorised over
a bucket's users (one state read and at most one write per user); the in-memory store
of the unit tests runs the same code.
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

from streaming.ingest.history import newest_per_pair
from streaming.ingest.validation import (
    DUPLICATE_REASON,
    FUTURE_TOLERANCE_S,
    parse_records,
    tag_reasons,
)

__all__ = [
    "HELD",
    "HELD_COLUMNS",
    "PACKED",
    "RECORD",
    "STATE_OUTPUT",
    "USER_BUCKETS",
    "UserLedger",
    "judge",
    "latest",
    "unpacked",
    "with_user_state",
]

# Users are grouped into this many buckets (the processor runs once per bucket with
# records in a micro-batch, and keeps one map entry per user). The checkpointed state is
# keyed by it: changing it needs a new checkpoint.
USER_BUCKETS = 8
_INVALID = -1  # the bucket of invalid records: passed through, no state

# Output rows: the batch's records (``RECORD``), and one per user of the batch with what
# was held of them before it (``HELD``: their ledger, packed as in the state).
RECORD, HELD = "record", "held"
STATE_OUTPUT = (
    "kind string, user_id long, movie_id long, rating double, timestamp long, "
    "event_id string, source string, raw binary, reason string, topic string, "
    "partition int, offset long, appended_s double, first boolean, "
    "held_movies binary, held_ratings binary, held_timestamps binary"
)
_OUTPUT_COLUMNS = [part.split()[0] for part in STATE_OUTPUT.split(", ")]
_HELD_STATE = "ratings"
_HELD_VALUE = "movies binary, ratings binary, timestamps binary"
# A user's held ratings as rows, and as the packed columns of a ``HELD`` output row.
HELD_COLUMNS = ("user_id", "movie_id", "rating", "timestamp")
PACKED = ("held_movies", "held_ratings", "held_timestamps")


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

    def extended(
        self, movies: npt.NDArray[np.int64], ratings: npt.NDArray[np.float64],
        timestamps: npt.NDArray[np.int64],
    ) -> UserLedger:  # fmt: skip
        """This ledger with these ratings appended."""
        return UserLedger(np.concatenate([self.movies, movies]),
                          np.concatenate([self.ratings, ratings]),
                          np.concatenate([self.timestamps, timestamps]))  # fmt: skip


def judge(held: pd.DataFrame, batch: pd.DataFrame) -> tuple[npt.NDArray[np.bool_], ...]:
    """(repeat, first) of each ``batch`` rating (in Kafka order) against ``held``.

    Both frames have user_id, movie_id and timestamp; ``held`` is every rating stored of
    the batch's users, re-ratings included. A repeat has the user, movie and timestamp
    (the event id) of a held rating or of an earlier rating of the batch; a first is not
    a repeat, of a movie its user has none of held, and the first such of the batch.
    """
    events = pd.MultiIndex.from_arrays(
        [batch["user_id"].to_numpy(np.int64), batch["movie_id"].to_numpy(np.int64),
         batch["timestamp"].to_numpy(np.int64)]
    )  # fmt: skip
    stored = pd.MultiIndex.from_arrays(
        [held["user_id"].to_numpy(np.int64), held["movie_id"].to_numpy(np.int64),
         held["timestamp"].to_numpy(np.int64)]
    )  # fmt: skip
    repeat = np.asarray(events.duplicated(keep="first") | events.isin(stored), dtype=np.bool_)
    pairs, stored_pairs = events.droplevel(2), stored.droplevel(2)
    first = ~repeat & ~np.asarray(pairs.isin(stored_pairs), dtype=np.bool_)
    first[first] = ~np.asarray(pairs[first].duplicated(keep="first"), dtype=np.bool_)
    return repeat, first


def latest(held: pd.DataFrame) -> pd.DataFrame:
    """The latest held rating per (user, movie) by timestamp, by user and movie."""
    chosen = newest_per_pair(held["user_id"].to_numpy(np.int64),
                             held["movie_id"].to_numpy(np.int64),
                             held["timestamp"].to_numpy(np.int64))  # fmt: skip
    return held.iloc[chosen].reset_index(drop=True)


def unpacked(users: npt.ArrayLike, packed: list[tuple[bytes, bytes, bytes]]) -> pd.DataFrame:
    """``HELD`` rows' ledgers (``UserLedger.pack``) as user_id, movie_id, rating, timestamp."""
    return _ledger_rows(np.asarray(users, dtype=np.int64).tolist(),
                        [UserLedger.unpack(value) for value in packed])  # fmt: skip


def _ledger_rows(users: list[int], ledgers: list[UserLedger]) -> pd.DataFrame:
    """The ledgers of ``users`` as one frame (user_id, movie_id, rating, timestamp)."""
    counts = [len(ledger.movies) for ledger in ledgers]
    if not sum(counts):
        frame = pd.DataFrame({name: np.zeros(0, np.int64) for name in HELD_COLUMNS})
        return frame.astype({"rating": np.float64})
    return pd.DataFrame(
        {
            "user_id": np.repeat(np.asarray(users, dtype=np.int64), counts),
            "movie_id": np.concatenate([ledger.movies for ledger in ledgers]),
            "rating": np.concatenate([ledger.ratings for ledger in ledgers]),
            "timestamp": np.concatenate([ledger.timestamps for ledger in ledgers]),
        }
    )


class UserRatingsProcessor(StatefulProcessor):
    """The stateful processor of ``with_user_state`` (one instance per task)."""

    def init(self, handle: StatefulProcessorHandle) -> None:
        """Open the map state: user id → their ledger."""
        self.ledgers = handle.getMapState(_HELD_STATE, "user long", _HELD_VALUE)

    def handleInputRows(
        self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any
    ) -> Iterator[pd.DataFrame]:
        """Mark a bucket's repeats and first ratings; emit them and its users' held ratings.

        One state read and at most one write per user; the rest is vectorised over the
        bucket.
        """
        batch = pd.concat(list(rows), ignore_index=True)
        batch["kind"] = RECORD
        batch["first"] = False
        for name in PACKED:
            batch[name] = None
        if int(key[0]) == _INVALID:
            yield batch[_OUTPUT_COLUMNS]
            return
        batch = batch.sort_values(["partition", "offset"], ignore_index=True)
        users = pd.unique(batch["user_id"]).tolist()
        ledgers = [UserLedger.unpack(self.ledgers.getValue((int(user),))) for user in users]
        held = _ledger_rows(users, ledgers)
        repeat, first = judge(held, batch)
        batch.loc[repeat, "reason"] = DUPLICATE_REASON
        batch["first"] = first
        kept = batch.loc[~repeat]
        movies = kept["movie_id"].to_numpy(np.int64)
        ratings = kept["rating"].to_numpy(np.float64)
        stamps = kept["timestamp"].to_numpy(np.int64)
        taken = kept.groupby("user_id", sort=False).indices
        for user, ledger in zip(users, ledgers, strict=True):
            rows_of_user = taken.get(user)
            if rows_of_user is not None:
                after = ledger.extended(movies[rows_of_user], ratings[rows_of_user],
                                        stamps[rows_of_user])  # fmt: skip
                self.ledgers.updateValue((int(user),), after.pack())
        yield batch[_OUTPUT_COLUMNS]
        known = [(user, ledger) for user, ledger in zip(users, ledgers, strict=True)
                 if len(ledger.movies)]  # fmt: skip
        if known:
            yield _held_rows(known)

    def close(self) -> None:
        """Nothing to release."""


def _held_rows(known: list[tuple[int, UserLedger]]) -> pd.DataFrame:
    """``HELD`` output rows: a user and their packed ledger, the other columns empty."""
    packed = [ledger.pack() for _, ledger in known]
    rows = pd.DataFrame({"kind": HELD, "user_id": [int(user) for user, _ in known],
                         "first": False})  # fmt: skip
    for position, name in enumerate(PACKED):
        rows[name] = pd.Series([value[position] for value in packed], dtype=object)
    for name in _OUTPUT_COLUMNS:
        if name not in rows:  # None, not NaN: Arrow takes None as null for any type
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
