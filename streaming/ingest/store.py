"""The durable ratings store, idempotent by micro-batch id.

Layout under the store folder::

    ratings/batch_id=N/*.parquet     valid events of micro-batch N
    segments/A-B/*.parquet           valid events of batches A..B, compacted
    dead_letter/batch_id=N/*.parquet invalid records of micro-batch N, with their reasons
    commits/N.json                   what batch N did: offsets, counts, model version

A batch writes into its own ``batch_id=N`` folders with overwrite, so when Spark runs
a batch again after a crash (same id, same offsets) it replaces what the first attempt
wrote instead of adding to it. Reads keep the latest rating per (user, movie): the
highest (timestamp, batch_id, offset). The commit file is written last, by rename, so
its presence proves the batch is complete. ``compact`` folds the committed batch folders
into segments (``streaming.ingest.segments``), so a read lists a few folders, not one a
batch.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from streaming.ingest.segments import COMPACT_MIN_BATCHES, Compaction, Segment, Segments

__all__ = ["BatchCommit", "RatingStore", "read_commits"]

IntArray = npt.NDArray[np.int64]

_RATING_COLUMNS = (
    "event_id string, source string, user_id int, movie_id int, rating double, "
    "timestamp long, topic string, partition int, offset long"
)

_DEAD_LETTER_COLUMNS = (
    "raw binary, reason string, topic string, partition int, offset long, "
    "kafka_timestamp timestamp, batch_id int"
)


@dataclass(frozen=True)
class BatchCommit:
    """The record of one completed micro-batch."""

    batch_id: int
    offsets: dict[str, int] = field(default_factory=dict)  # partition -> next offset
    valid: int = 0
    invalid: int = 0
    invalid_reasons: dict[str, int] = field(default_factory=dict)
    model_version: int | None = None
    # The batch started a retrain (in the background, ``model_version`` of a later batch
    # shows when its version was switched in).
    retrained: bool = False
    committed_at: float = 0.0
    # Test-then-learn, live: of the batch's ratings checked against the list their user
    # was served before the batch, as Redis holds it (fold-in on, a model present and
    # Redis answering), how many it listed in the top 10, and how many the model's popular
    # list (less the user's rated movies) did; and the dataset time the batch's ratings
    # span (epoch seconds).
    checked: int = 0
    hits_at_10: int = 0
    popular_hits_at_10: int = 0
    rating_time: list[int] = field(default_factory=list)  # [first, last], or empty
    # Seconds from the Kafka append of the batch's valid events to this record: p50, max.
    freshness_s: list[float] = field(default_factory=list)


def _batches(
    chunks: Iterable[tuple[IntArray, IntArray, IntArray]],
) -> Iterator[tuple[IntArray, IntArray]]:
    """(users, movies) of each batch, from chunks of (users, movies, batch ids) in batch order.

    A batch may span chunks: its pieces are held until the next batch begins.
    """
    held: list[tuple[IntArray, IntArray]] = []
    held_batch: int | None = None
    for users, movies, batch_ids in chunks:
        starts = np.flatnonzero(np.diff(batch_ids)) + 1
        for part in np.split(np.arange(len(batch_ids)), starts):
            if not len(part):
                continue
            batch = int(batch_ids[part[0]])
            if held and batch != held_batch:
                yield np.concatenate([u for u, _ in held]), np.concatenate([m for _, m in held])
                held = []
            held.append((users[part], movies[part]))
            held_batch = batch
    if held:
        yield np.concatenate([u for u, _ in held]), np.concatenate([m for _, m in held])


def read_commits(folder: Path) -> list[BatchCommit]:
    """Every commit record in ``folder``, by batch id (no Spark needed: JSON files)."""
    records = [_read_commit(path) for path in folder.glob("*.json")]
    return sorted(records, key=lambda record: record.batch_id)


def _read_commit(path: Path) -> BatchCommit:
    """One commit record, as ``RatingStore.commit`` wrote it."""
    return BatchCommit(**json.loads(path.read_text()))


class RatingStore:
    """Ratings, dead letters and commits of the streaming job, under one folder."""

    def __init__(
        self, spark: SparkSession, root: Path, compact_min_batches: int = COMPACT_MIN_BATCHES
    ) -> None:
        self.spark = spark
        self.root = root.resolve()
        self.folders = Segments(spark, self.root, compact_min_batches)
        self.ratings_dir = self.folders.ratings_dir
        self.segments_dir = self.folders.segments_dir
        self.dead_letter_dir = self.root / "dead_letter"
        self.commits_dir = self.root / "commits"
        self.commits_dir.mkdir(parents=True, exist_ok=True)

    def write_batch(self, batch_id: int, valid: DataFrame, invalid: DataFrame | None) -> None:
        """Store a batch's valid events and dead letters; running it twice changes nothing.

        ``invalid`` may be None when the batch has no invalid records (a replay of the
        same batch reads the same offsets, so it has none either).
        """
        valid.write.mode("overwrite").parquet(str(self.folders.batch_dir(batch_id)))
        if invalid is not None:
            target = self.dead_letter_dir / f"batch_id={batch_id}"
            invalid.write.mode("overwrite").parquet(str(target))

    def ratings(self, through_batch: int | None = None) -> DataFrame:
        """Every stored rating, the latest per (user, movie).

        With ``through_batch``, only what the batches up to that id stored (what the store
        held when that batch was done, for a retrain that later batches must not change).
        """
        stored = self.stored_rows()
        if through_batch is not None:
            stored = stored.where(F.col("batch_id") <= through_batch)
        newest_first = Window.partitionBy("user_id", "movie_id").orderBy(
            F.col("timestamp").desc(), F.col("batch_id").desc(), F.col("offset").desc()
        )
        return (
            stored.withColumn("_rank", F.row_number().over(newest_first))
            .where(F.col("_rank") == 1)
            .drop("_rank")
        )

    def arrivals(
        self, chunk_rows: int = 1_000_000
    ) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
        """Each batch's first ratings of a movie, batch by batch as they came: (users, movies).

        A user's first rating of a movie is the earliest stored one (by batch, partition
        and offset), in the order the micro-batch had it, so observing these one batch at
        a time replays exactly what the job counted live (the short-term counts cut their
        rows between batches, so the batches must be the same). Spark sorts them into a
        scratch folder, which the driver reads ``chunk_rows`` at a time: it holds one
        batch (and one chunk), never the store.
        """
        scratch = self.root / ".arrivals"
        earliest = Window.partitionBy("user_id", "movie_id").orderBy("batch_id", "partition",
                                                                     "offset")  # fmt: skip
        ordered = (
            self.stored_rows()
            .withColumn("_rank", F.row_number().over(earliest))
            .where(F.col("_rank") == 1)
            .select("user_id", "movie_id", "batch_id", "partition", "offset")
            .orderBy("batch_id", "partition", "offset")
        )
        ordered.write.mode("overwrite").parquet(str(scratch))
        try:
            yield from _batches(
                (chunk.column(0).to_numpy().astype(np.int64),
                 chunk.column(1).to_numpy().astype(np.int64),
                 chunk.column(2).to_numpy().astype(np.int64))
                for path in sorted(scratch.glob("*.parquet"))
                for chunk in pq.ParquetFile(path).iter_batches(
                    chunk_rows, columns=["user_id", "movie_id", "batch_id"]
                )
            )  # fmt: skip
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def stored_rows(self) -> DataFrame:
        """Every stored event of every batch, before the latest-wins reduction.

        Spark lists the files here, once; a caller on a thread other than the one that
        compacts runs the frame inside ``reading``.
        """
        rows = self.folders.rows()
        if rows is None:
            return self.spark.createDataFrame([], _RATING_COLUMNS + ", batch_id int")
        return rows

    def reading(self) -> AbstractContextManager[None]:
        """Keep the store's files from deletion while the block runs (``Segments.reading``)."""
        return self.folders.reading()

    def segments(self) -> list[Segment]:
        """The segments reads use, by first batch (``Segments.in_use``)."""
        return self.folders.in_use()

    def compact(self, through_batch: int | None = None) -> Compaction | None:
        """Fold the committed batch folders into a segment (``Segments.compact``).

        Only batches through ``through_batch`` (None: all) that have a commit record.
        """
        last = self.last_commit()
        limit = -1 if last is None else last.batch_id
        if through_batch is not None:
            limit = min(limit, through_batch)
        return self.folders.compact(limit)

    def dead_letters(self) -> DataFrame:
        """Every invalid record kept so far, with its reason and batch id."""
        if not any(self.dead_letter_dir.glob("batch_id=*/*.parquet")):
            return self.spark.createDataFrame([], _DEAD_LETTER_COLUMNS)
        return self.spark.read.parquet(str(self.dead_letter_dir))

    def commit(self, record: BatchCommit) -> None:
        """Record a completed batch (atomically: write a temporary file, then rename)."""
        stamped = record
        if not record.committed_at:
            stamped = BatchCommit(**{**asdict(record), "committed_at": time.time()})
        descriptor, temporary = tempfile.mkstemp(dir=self.commits_dir, prefix=".commit-")
        with os.fdopen(descriptor, "w") as handle:
            json.dump(asdict(stamped), handle, sort_keys=True)
        os.replace(temporary, self.commits_dir / f"{record.batch_id}.json")

    def commits(self) -> list[BatchCommit]:
        """Every recorded batch, by batch id."""
        return read_commits(self.commits_dir)

    def last_commit(self) -> BatchCommit | None:
        """The highest committed batch, if any.

        Reads one record: each is named by its batch id, so the names tell which (a build
        calls this, and there are thousands an hour).
        """
        ids = [int(path.stem) for path in self.commits_dir.glob("*.json") if path.stem.isdigit()]
        if not ids:
            return None
        return _read_commit(self.commits_dir / f"{max(ids)}.json")
