"""Reading the ratings store: a folder a micro-batch against compacted segments.

A store is laid out as the job leaves it: ``--batches`` committed ``ratings/batch_id=N``
folders of ``--per-batch`` ratings each (2,600 of 225 by default: the soak's hour at 150
ratings/s), written with pyarrow to spare Spark the time. Then, in one run and one
Spark session, a retrain's read of it is timed ``--repeats`` times before and after
``compact()`` (the least kept): ``list`` makes the frame (Spark lists the files then),
``read`` counts the latest rating per user and movie (``ratings()``, what a build reads).
The folders are read twice: as Spark lists them by default (in a job of a task a folder,
past 32), and listed by the driver itself (the threshold raised). The compaction's own
time is printed too, and every read must count the same ratings.

    .venv/bin/python benchmarks/bench_store.py [--batches 2600] [--per-batch 225] [--repeats 3]

No services needed. What it answers (issue 21's soak): what the store's growth costs
each retrain, a day's folders against an hour's, and what compaction gives back.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from harness import bench_spark

from streaming.ingest.store import BatchCommit, RatingStore

_LISTING_THRESHOLD = "spark.sql.sources.parallelPartitionDiscovery.threshold"
# What Spark writes for a batch's valid events (``streaming.ingest.intake``).
_SCHEMA = pa.schema([("event_id", pa.string()), ("source", pa.string()),
                     ("user_id", pa.int32()), ("movie_id", pa.int32()),
                     ("rating", pa.float64()), ("timestamp", pa.int64()),
                     ("topic", pa.string()), ("partition", pa.int32()),
                     ("offset", pa.int64())])  # fmt: skip


def write_store(store: RatingStore, batches: int, per_batch: int, seed: int = 5) -> int:
    """``batches`` committed batch folders of ``per_batch`` ratings; the ratings written."""
    rng = np.random.default_rng(seed)
    offset = 0
    for batch in range(batches):
        users = rng.integers(1, 20_001, per_batch, dtype=np.int32)
        movies = rng.integers(1, 4_001, per_batch, dtype=np.int32)
        offsets = np.arange(offset, offset + per_batch, dtype=np.int64)
        table = pa.table({
            "event_id": [f"e{o}" for o in offsets.tolist()], "source": ["synthetic"] * per_batch,
            "user_id": users, "movie_id": movies,
            "rating": rng.integers(1, 6, per_batch).astype(np.float64),
            "timestamp": 1_000_000 + offsets, "topic": ["ratings"] * per_batch,
            "partition": (offsets % 2).astype(np.int32), "offset": offsets,
        }, schema=_SCHEMA)  # fmt: skip
        folder = store.ratings_dir / f"batch_id={batch}"
        folder.mkdir(parents=True)
        pq.write_table(table, folder / "part-00000.parquet")
        store.commit(BatchCommit(batch_id=batch, valid=per_batch))
        offset += per_batch
    return offset


@dataclass(frozen=True)
class Read:
    """The least seconds over the repeats to list the store and to count its ratings."""

    list_s: float
    read_s: float
    ratings: int


def timed_read(store: RatingStore, repeats: int) -> Read:
    """A build's read of ``store``, ``repeats`` times: the least time of each step."""
    lists, reads, counted = [], [], set()
    for _ in range(repeats):
        began = time.perf_counter()
        frame = store.ratings()
        listed = time.perf_counter()
        counted.add(frame.count())
        lists.append(listed - began)
        reads.append(time.perf_counter() - listed)
    if len(counted) != 1:
        msg = f"the same store counted differently: {sorted(counted)}"
        raise AssertionError(msg)
    return Read(min(lists), min(reads), counted.pop())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2_600, help="batch folders")
    parser.add_argument("--per-batch", type=int, default=225, help="ratings a batch")
    parser.add_argument("--repeats", type=int, default=3, help="reads timed on each side")
    args = parser.parse_args()

    spark = bench_spark()
    folder = Path(tempfile.mkdtemp(prefix="bench-store-"))
    try:
        store = RatingStore(spark, folder / "store")
        began = time.perf_counter()
        written = write_store(store, args.batches, args.per_batch)
        print(f"store: {args.batches:,} batch folders, {written:,} ratings "
              f"(written in {time.perf_counter() - began:.1f} s)")  # fmt: skip
        timed_read(store, 1)  # the JVM warmed up on the same work before any timing
        loose = timed_read(store, args.repeats)
        # Past 32 folders Spark lists them in a job of a task a folder; raised, the driver
        # lists them itself.
        spark.conf.set(_LISTING_THRESHOLD, str(10 * args.batches))
        driver_listed = timed_read(store, args.repeats)
        spark.conf.unset(_LISTING_THRESHOLD)
        compaction = store.compact()
        assert compaction is not None and compaction.written is not None  # noqa: S101
        compacted = timed_read(store, args.repeats)
        if not loose.ratings == driver_listed.ratings == compacted.ratings:
            msg = (f"the reads counted differently: {loose.ratings}, {driver_listed.ratings}, "
                   f"{compacted.ratings}")  # fmt: skip
            raise AssertionError(msg)
        print(f"compact: {compaction.batches:,} batch folders into segment "
              f"{compaction.written[0]}-{compaction.written[1]} in {compaction.seconds:.1f} s, "
              f"{compaction.deleted:,} folders deleted")  # fmt: skip
        print(f"{'read of the store':<28}{'list s':>8}{'read s':>8}{'total s':>9}")
        rows = (("batch folders", loose), ("  listed by the driver", driver_listed),
                ("one segment", compacted))  # fmt: skip
        for name, read in rows:
            print(f"{name:<28}{read.list_s:8.2f}{read.read_s:8.2f}"
                  f"{read.list_s + read.read_s:9.2f}")  # fmt: skip
        total = (loose.list_s + loose.read_s) / (compacted.list_s + compacted.read_s)
        print(f"ratio (folders / segment): list {loose.list_s / compacted.list_s:.1f}x, "
              f"read {loose.read_s / compacted.read_s:.1f}x, total {total:.1f}x; "
              f"{loose.ratings:,} ratings counted by each read")  # fmt: skip
    finally:
        spark.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
