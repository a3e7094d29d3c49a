"""The durable ratings store, idempotent by micro-batch id.

Layout under the store folder::

    ratings/batch_id=N/*.parquet     valid events of micro-batch N
    segments/A-B/*.parquet           valid events of batches A..B, compacted (batch_id a column)
    dead_letter/batch_id=N/*.parquet invalid records of micro-batch N, with their reasons
    commits/N.json                   what batch N did: offsets, counts, model version

A batch writes into its own ``batch_id=N`` folders with overwrite, so when Spark runs
a batch again after a crash (same id, same offsets) it replaces what the first attempt
wrote instead of adding to it. Reads keep the latest rating per (user, movie): the
highest (timestamp, batch_id, offset). The commit file is written last, by rename, so
its presence proves the batch is complete.

A folder a batch, a batch a second, is ~86,000 folders a day, and every read lists them
all. ``compact`` (each retrain, before it reads) folds the committed batch folders into
a segment, written aside and renamed into place, so a read lists a few segments and the
batches since. Segments merge as they pile up: the one before joins the new one while it
holds no more rows than what the new one gathered so far, so n compactions of the same
size leave as many segments as n has ones in binary (at most log2 n + 1), and a row is
rewritten about log2(n) / 2 times.
Reads take the widest segments and the batch folders past the last one, so a folder a
segment replaced is never read again, and ``compact`` deletes it once no read that
listed it can still be running (``reading``). A batch Spark runs again after it was
compacted writes a folder reads ignore: it holds what the segment holds.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import reduce
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

__all__ = ["BatchCommit", "Compaction", "RatingStore", "Segment", "read_commits"]

IntArray = npt.NDArray[np.int64]

_RATING_COLUMNS = (
    "event_id string, source string, user_id int, movie_id int, rating double, "
    "timestamp long, topic string, partition int, offset long"
)

# Batch folders folded into a segment at least (fewer wait for the next compaction);
# the job's is ``RECSTREAM_STREAM_COMPACT_MIN_BATCHES``.
COMPACT_MIN_BATCHES = 32
# A segment is written as files of about this many rows.
SEGMENT_FILE_ROWS = 2_000_000
_SEGMENT_NAME = re.compile(r"(\d+)-(\d+)")

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


@dataclass(frozen=True)
class Segment:
    """Batches ``first`` to ``last`` of the store, compacted into one folder."""

    first: int
    last: int
    path: Path

    def covers(self, other: Segment) -> bool:
        """Whether this segment holds every batch of ``other`` (and is not it)."""
        return self != other and self.first <= other.first and other.last <= self.last


@dataclass(frozen=True)
class Compaction:
    """What one ``RatingStore.compact`` did.

    ``batches`` batch folders and ``merged`` earlier segments went into the segment
    ``written`` (first, last batch), if one was; ``deleted`` folders it superseded (now or
    earlier) were deleted, ``deferred`` were left for later because a read held them.
    """

    batches: int = 0
    merged: int = 0
    written: tuple[int, int] | None = None
    deleted: int = 0
    deferred: int = 0
    seconds: float = 0.0


def _parquet_rows(folder: Path) -> int:
    """Rows of the Parquet files directly in ``folder`` (from their footers)."""
    return sum(pq.read_metadata(path).num_rows for path in folder.glob("*.parquet"))


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
    records = [BatchCommit(**json.loads(path.read_text())) for path in folder.glob("*.json")]
    return sorted(records, key=lambda record: record.batch_id)


class RatingStore:
    """Ratings, dead letters and commits of the streaming job, under one folder."""

    def __init__(
        self, spark: SparkSession, root: Path, compact_min_batches: int = COMPACT_MIN_BATCHES
    ) -> None:
        self.spark = spark
        self.root = root.resolve()
        self.ratings_dir = self.root / "ratings"
        self.segments_dir = self.root / "segments"
        self.dead_letter_dir = self.root / "dead_letter"
        self.commits_dir = self.root / "commits"
        self.commits_dir.mkdir(parents=True, exist_ok=True)
        self.compact_min_batches = compact_min_batches
        self._lock = threading.Lock()  # guards the count of reads and the deletions
        self._reads = 0
        self._compacting = threading.Lock()

    def write_batch(self, batch_id: int, valid: DataFrame, invalid: DataFrame | None) -> None:
        """Store a batch's valid events and dead letters; running it twice changes nothing.

        ``invalid`` may be None when the batch has no invalid records (a replay of the
        same batch reads the same offsets, so it has none either).
        """
        valid.write.mode("overwrite").parquet(str(self.ratings_dir / f"batch_id={batch_id}"))
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
        with self.reading():
            segments = self.segments()
            covered = max((segment.last for segment in segments), default=-1)
            loose = self._loose_batches(after=covered)
            parts = []
            if segments:
                parts.append(self.spark.read.parquet(*(str(s.path) for s in segments)))
            if loose:
                parts.append(self._read_batches(loose))
        if not parts:
            return self.spark.createDataFrame([], _RATING_COLUMNS + ", batch_id int")
        return reduce(DataFrame.unionByName, parts)

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Keep the files of the store's frames from deletion while the block runs.

        Frames list their files when made and read them when run; ``compact`` deletes
        the folders it superseded only while no block is open, so a frame made or run
        inside one never meets a missing file. Blocks nest.
        """
        with self._lock:
            self._reads += 1
        try:
            yield
        finally:
            with self._lock:
                self._reads -= 1

    def segments(self) -> list[Segment]:
        """The segments reads use (none a wider one covers), by first batch."""
        found = self._all_segments()
        return [s for s in found if not any(other.covers(s) for other in found)]

    def compact(self, through_batch: int | None = None) -> Compaction | None:
        """Fold the committed batch folders (through ``through_batch``) into a segment.

        Only when there are ``compact_min_batches`` of them; the newest segments merge
        into the new one while each holds no more rows than it has gathered. Then
        deletes what segments superseded, unless a read holds it (``reading``): that
        waits for the next call. None when another thread is compacting. Call it outside
        ``reading``, or nothing is ever deleted.
        """
        if not self._compacting.acquire(blocking=False):
            return None
        try:
            began = time.perf_counter()
            last = self.last_commit()
            limit = -1 if last is None else last.batch_id
            if through_batch is not None:
                limit = min(limit, through_batch)
            segments = self.segments()
            covered = max((segment.last for segment in segments), default=-1)
            loose = [batch for batch in self._loose_batches(covered) if batch <= limit]
            batches, merged, written = 0, 0, None
            if len(loose) >= self.compact_min_batches:
                rows = sum(_parquet_rows(self._batch_dir(batch)) for batch in loose)
                while merged < len(segments):
                    before = _parquet_rows(segments[-1 - merged].path)
                    if before > rows:
                        break
                    rows += before
                    merged += 1
                joined = segments[len(segments) - merged :]
                first = joined[0].first if joined else covered + 1
                self._write_segment(first, loose[-1], joined, loose, rows)
                batches, written = len(loose), (first, loose[-1])
            deleted, deferred = self._delete_superseded()
            return Compaction(batches, merged, written, deleted, deferred,
                              round(time.perf_counter() - began, 3))  # fmt: skip
        finally:
            self._compacting.release()

    def _batch_dir(self, batch_id: int) -> Path:
        return self.ratings_dir / f"batch_id={batch_id}"

    def _all_segments(self) -> list[Segment]:
        """Every segment folder in place (a merged one and those it replaced, too)."""
        if not self.segments_dir.is_dir():
            return []
        found = []
        for path in self.segments_dir.iterdir():
            named = _SEGMENT_NAME.fullmatch(path.name)
            if named is not None and path.is_dir():
                found.append(Segment(int(named[1]), int(named[2]), path))
        return sorted(found, key=lambda segment: (segment.first, segment.last))

    def _batch_folders(self) -> dict[int, Path]:
        """Every batch folder, by batch id."""
        if not self.ratings_dir.is_dir():
            return {}
        found = {}
        for path in self.ratings_dir.glob("batch_id=*"):
            batch = path.name.removeprefix("batch_id=")
            if batch.isdigit():
                found[int(batch)] = path
        return found

    def _loose_batches(self, after: int) -> list[int]:
        """Ids past ``after`` of the batch folders that hold ratings, ascending."""
        return sorted(batch for batch, path in self._batch_folders().items()
                      if batch > after and any(path.glob("*.parquet")))  # fmt: skip

    def _read_batches(self, batches: list[int]) -> DataFrame:
        """The rows of these batch folders, ``batch_id`` from their names."""
        paths = [str(self._batch_dir(batch)) for batch in batches]
        rows = self.spark.read.option("basePath", str(self.ratings_dir)).parquet(*paths)
        return rows.withColumn("batch_id", F.col("batch_id").cast("int"))

    def _write_segment(
        self, first: int, last: int, joined: list[Segment], batches: list[int], rows: int
    ) -> None:
        """Write segment ``first-last`` from ``joined`` segments and batch folders.

        Written aside, then renamed into place: reads see all of it or none.
        """
        self.segments_dir.mkdir(parents=True, exist_ok=True)
        parts = [self._read_batches(batches)]
        if joined:
            parts.insert(0, self.spark.read.parquet(*(str(s.path) for s in joined)))
        aside = self.segments_dir / f".writing-{first}-{last}-{uuid.uuid4().hex[:8]}"
        files = max(1, math.ceil(rows / SEGMENT_FILE_ROWS))
        reduce(DataFrame.unionByName, parts).coalesce(files).write.parquet(str(aside))
        aside.rename(self.segments_dir / f"{first}-{last}")

    def _delete_superseded(self) -> tuple[int, int]:
        """Delete what segments replaced, unless a read is open: (deleted, deferred)."""
        found = self._all_segments()
        covered = max((segment.last for segment in found), default=-1)
        superseded = [s.path for s in found if any(other.covers(s) for other in found)]
        # A folder a batch is still writing (Spark running it again) is left for later.
        superseded += [path for batch, path in self._batch_folders().items()
                       if batch <= covered and not (path / "_temporary").exists()]  # fmt: skip
        if self.segments_dir.is_dir():  # a compaction that stopped midway (only one runs)
            superseded += list(self.segments_dir.glob(".writing-*"))
        with self._lock:
            if self._reads:
                return 0, len(superseded)
            for path in superseded:
                shutil.rmtree(path, ignore_errors=True)
        return len(superseded), 0

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
        """The highest committed batch, if any."""
        records = self.commits()
        return records[-1] if records else None
