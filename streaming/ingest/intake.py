"""A micro-batch's records in, its valid ratings out: stored, counted, with their users' past.

``SparkIntake`` is the pipeline's store (``streaming.pipeline.BatchStore``) on Spark. The
query hands it the records already validated and checked against Spark's state of
every user's ratings (``streaming.ingest.state``): repeats of stored events carry the
duplicate reason, first ratings of a movie are marked, and the batch's users come with
the ratings they had before it. The intake writes the valid ratings and the dead letters
under the batch id (``streaming.ingest.store``) and hands the driver the valid ratings
and those users' past ratings: nothing more than the batch's users.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from streaming.ingest.history import HISTORY_COLUMNS
from streaming.ingest.segments import Compaction
from streaming.ingest.state import HELD, HELD_COLUMNS, PACKED, RECORD, latest, unpacked
from streaming.ingest.store import BatchCommit, RatingStore
from streaming.timing import timed

__all__ = ["BATCH_COLUMNS", "HELD_COLUMNS", "SparkIntake", "TakenBatch"]

# The driver's view of a batch's valid ratings, in partition/offset order; ``first``
# marks a user's first rating of the movie.
BATCH_COLUMNS = (*HISTORY_COLUMNS[:-2], "partition", "offset", "appended_s", "first")
# ``TakenBatch.held``: the batch's users' ratings before it, the latest per (user, movie),
# in ``HELD_COLUMNS`` (from ``streaming.ingest.state``).


@dataclass(frozen=True)
class TakenBatch:
    """What the intake kept of one micro-batch.

    ``ratings`` holds ``BATCH_COLUMNS`` (``appended_s``: the Kafka append time, epoch
    seconds); ``held`` the ``HELD_COLUMNS`` of the batch's users before it; ``rejected``
    one ``(partition, offset, reason)`` per record set aside; ``timings_s`` the seconds
    of the intake's stages.
    """

    ratings: pd.DataFrame
    rejected: list[tuple[int, int, str]] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    held: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(HELD_COLUMNS)))

    def next_offsets(self) -> dict[int, int]:
        """The offset after the last record of each partition the batch read."""
        following: dict[int, int] = {}
        if len(self.ratings):
            last = self.ratings.groupby("partition")["offset"].max()
            following = {int(p): int(o) + 1 for p, o in last.items()}
        for partition, offset, _ in self.rejected:
            following[partition] = max(following.get(partition, 0), offset + 1)
        return following


class SparkIntake:
    """Validate a micro-batch with Spark and store it (``RatingStore``) under its id."""

    def __init__(self, spark: SparkSession, store: RatingStore) -> None:
        self.spark = spark
        self.store = store

    def take(self, records: DataFrame, batch_id: int) -> TakenBatch:
        """Store ``records`` (``streaming.ingest.state.STATE_OUTPUT`` rows) under ``batch_id``.

        Valid ratings and dead letters (the repeats among them) overwrite a replayed
        batch's first attempt. Returns the valid ratings and their users' past ones.
        """
        timings: dict[str, float] = {}
        rows = records.persist()  # computed once: the state moves on only once per batch
        try:
            with timed(timings, "validate"):
                record = F.col("kind") == F.lit(RECORD)
                valid = rows.where(record & F.col("reason").isNull())
                invalid = rows.where(record & F.col("reason").isNotNull())
                batch = pd.DataFrame(valid.select(
                    *(F.col(name).cast("int") if name.endswith("_id") else name
                      for name in BATCH_COLUMNS)
                ).toPandas())  # fmt: skip
                batch = batch.sort_values(["partition", "offset"], ignore_index=True)
                ledgers = rows.where(F.col("kind") == F.lit(HELD)).select("user_id", *PACKED)
                packed = pd.DataFrame(ledgers.toPandas())
                held = latest(unpacked(packed["user_id"], list(zip(
                    *(packed[name].map(bytes) for name in PACKED), strict=True
                ))))  # fmt: skip
                rejected = [
                    (int(row["partition"]), int(row["offset"]), str(row["reason"]))
                    for row in invalid.select("partition", "offset", "reason").collect()
                ]
            with timed(timings, "store"):
                stored = valid.select(
                    "event_id", "source", F.col("user_id").cast("int"),
                    F.col("movie_id").cast("int"), "rating", "timestamp", "topic",
                    "partition", "offset",
                )  # fmt: skip
                dead = invalid.select(
                    "raw", "reason", "topic", "partition", "offset",
                    F.col("appended_s").cast("timestamp").alias("kafka_timestamp"),
                )  # fmt: skip
                self.store.write_batch(batch_id, stored, dead if rejected else None)
        finally:
            rows.unpersist()
        return TakenBatch(batch, rejected, timings, held)

    def ratings(self, through_batch: int | None = None) -> pd.DataFrame:
        """The store's ratings through ``through_batch`` in the driver (``RatingStore.ratings``)."""
        stored = self.store.ratings(through_batch)
        return pd.DataFrame(stored.select(*HELD_COLUMNS).toPandas())

    def commit(self, record: BatchCommit) -> None:
        """Write the batch's commit record (``RatingStore.commit``)."""
        self.store.commit(record)

    def compact(self, through_batch: int) -> Compaction | None:
        """Fold the committed batch folders into a segment (``RatingStore.compact``)."""
        return self.store.compact(through_batch)
