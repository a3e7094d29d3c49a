"""The store's valid events: a folder a micro-batch, compacted into segments.

Layout under the store folder::

    ratings/batch_id=N/*.parquet     valid events of micro-batch N, as the batch wrote them
    segments/A-B/*.parquet           valid events of batches A..B (``batch_id`` a column)

A folder a batch, a batch a second, is ~86,000 folders a day, and every read lists them
all. ``compact`` folds the committed batch folders into a segment, written aside and
renamed into place, so a read lists a few segments and the batches since. Segments merge
as they pile up: the one before joins the new one while it holds no more rows than what
the new one gathered so far, so n compactions of the same size leave as many segments as
n has ones in binary (at most log2 n + 1), and a row is rewritten about log2(n) / 2 times.

Reads take the widest segments and the batch folders past the last one, so a folder a
segment replaced is never read again; ``compact`` deletes it once no read that listed it
can still be running (``reading``). A batch Spark runs again after it was compacted
writes a folder that reads ignore: it holds what the segment holds.
"""

from __future__ import annotations

import math
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

__all__ = ["COMPACT_MIN_BATCHES", "SEGMENT_FILE_ROWS", "Compaction", "Segment", "Segments"]

# Batch folders folded into a segment at least (fewer wait for the next compaction);
# the job's is ``RECSTREAM_STREAM_COMPACT_MIN_BATCHES``.
COMPACT_MIN_BATCHES = 32
# A segment is written as files of about this many rows.
SEGMENT_FILE_ROWS = 2_000_000
_SEGMENT_NAME = re.compile(r"(\d+)-(\d+)")


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
    """What one ``Segments.compact`` did.

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


class Segments:
    """The batch folders under ``root/ratings`` and the segments under ``root/segments``."""

    def __init__(self, spark: SparkSession, root: Path, min_batches: int) -> None:
        self.spark = spark
        self.ratings_dir = root / "ratings"
        self.segments_dir = root / "segments"
        self.min_batches = min_batches
        self._lock = threading.Lock()  # guards the count of reads and the deletions
        self._reads = 0
        self._compacting = threading.Lock()

    def batch_dir(self, batch_id: int) -> Path:
        """The folder batch ``batch_id`` writes its valid events to."""
        return self.ratings_dir / f"batch_id={batch_id}"

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

    def rows(self) -> DataFrame | None:
        """Every valid event stored, ``batch_id`` a column; None when there is none."""
        with self.reading():
            segments = self.in_use()
            covered = max((segment.last for segment in segments), default=-1)
            loose = self._loose_batches(after=covered)
            parts = []
            if segments:
                parts.append(self._read_segments(segments))
            if loose:
                parts.append(self._read_batches(loose))
        return reduce(DataFrame.unionByName, parts) if parts else None

    def in_use(self) -> list[Segment]:
        """The segments reads use (none a wider one covers), by first batch."""
        found = self._all_segments()
        return [s for s in found if not any(other.covers(s) for other in found)]

    def compact(self, through_batch: int) -> Compaction | None:
        """Fold the batch folders through ``through_batch`` (all committed) into a segment.

        Only when there are ``min_batches`` of them; the newest segments merge into the
        new one while each holds no more rows than it has gathered. Then deletes what
        segments superseded, unless a read holds it (``reading``): that waits for the next
        call. None when another thread is compacting. Call it outside ``reading``, or
        nothing is ever deleted.
        """
        if not self._compacting.acquire(blocking=False):
            return None
        try:
            began = time.perf_counter()
            segments = self.in_use()
            covered = max((segment.last for segment in segments), default=-1)
            loose = [b for b in self._loose_batches(covered) if b <= through_batch]
            batches, merged, written = 0, 0, None
            if len(loose) >= self.min_batches:
                rows = sum(_parquet_rows(self.batch_dir(batch)) for batch in loose)
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

    def _read_segments(self, segments: list[Segment]) -> DataFrame:
        """The rows of these segments (``batch_id`` a column of theirs)."""
        return self.spark.read.parquet(*(str(segment.path) for segment in segments))

    def _read_batches(self, batches: list[int]) -> DataFrame:
        """The rows of these batch folders, ``batch_id`` from their names."""
        paths = [str(self.batch_dir(batch)) for batch in batches]
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
            parts.insert(0, self._read_segments(joined))
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
