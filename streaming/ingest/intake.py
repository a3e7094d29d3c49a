"""A micro-batch's Kafka records in, its valid ratings out: validated, stored, counted.

``SparkIntake`` is the pipeline's store (``streaming.pipeline.BatchStore``) on Spark: it
parses and validates the records (``streaming.ingest.validation``), sets aside repeats of
events already held, writes the valid ratings and the dead letters under the batch id
(``streaming.ingest.store``), and hands the driver the batch's valid ratings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from streaming.ingest.history import HISTORY_COLUMNS
from streaming.ingest.store import BatchCommit, RatingStore
from streaming.ingest.validation import DUPLICATE_REASON, parse_records, set_aside, split_parsed
from streaming.timing import timed

__all__ = ["BATCH_COLUMNS", "Repeats", "SparkIntake", "TakenBatch"]

# The driver's view of a batch's valid ratings, in partition/offset order.
BATCH_COLUMNS = (*HISTORY_COLUMNS[:-2], "partition", "offset", "appended_s")
# Which of a batch's ratings repeat an event already held (the history answers).
Repeats = Callable[[pd.DataFrame], npt.NDArray[np.bool_]]


@dataclass(frozen=True)
class TakenBatch:
    """What the intake kept of one micro-batch.

    ``ratings`` holds ``BATCH_COLUMNS`` (``appended_s``: the Kafka append time, epoch
    seconds); ``rejected`` one ``(partition, offset, reason)`` per record set aside;
    ``timings_s`` the seconds of the intake's stages.
    """

    ratings: pd.DataFrame
    rejected: list[tuple[int, int, str]] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)

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

    def take(self, records: DataFrame, batch_id: int, repeats: Repeats) -> TakenBatch:
        """Validate and store ``records``; return the valid ratings.

        The ``repeats`` are set aside with the invalid records; both sides are stored
        under ``batch_id``, overwriting a replayed batch's first attempt.
        """
        timings: dict[str, float] = {}
        parsed = parse_records(records).persist()
        try:
            with timed(timings, "validate"):
                batch, valid, invalid, rejected = self._validate(parsed, repeats)
            with timed(timings, "store"):
                self.store.write_batch(
                    batch_id, valid.drop("kafka_timestamp"), invalid if rejected else None
                )
        finally:
            parsed.unpersist()
        return TakenBatch(batch, rejected, timings)

    def _validate(
        self, parsed: DataFrame, repeats: Repeats
    ) -> tuple[pd.DataFrame, DataFrame, DataFrame, list[tuple[int, int, str]]]:
        """Split the parsed records, with the ``repeats`` set aside.

        Returns the valid ratings in the driver, the valid and invalid frames to store,
        and the positions and reasons of the records set aside.
        """
        valid, invalid = split_parsed(parsed, now_s=int(time.time()))
        batch = pd.DataFrame(
            valid.select(
                *HISTORY_COLUMNS[:-2],
                "partition",
                "offset",
                F.col("kafka_timestamp").cast("double").alias("appended_s"),
            ).toPandas()
        )
        batch = batch.sort_values(["partition", "offset"], ignore_index=True)
        repeated = repeats(batch)
        if repeated.any():
            positions = self.spark.createDataFrame(
                batch.loc[repeated, ["partition", "offset"]], "partition int, offset long"
            )
            valid, invalid = set_aside(parsed, valid, invalid, positions, DUPLICATE_REASON)
            batch = batch.loc[~repeated].reset_index(drop=True)
        rejected = [
            (int(row["partition"]), int(row["offset"]), str(row["reason"]))
            for row in invalid.select("partition", "offset", "reason").collect()
        ]
        return batch, valid, invalid, rejected

    def commit(self, record: BatchCommit) -> None:
        """Write the batch's commit record (``RatingStore.commit``)."""
        self.store.commit(record)
