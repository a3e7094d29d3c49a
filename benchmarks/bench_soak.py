"""Soak: the streaming job for an hour or more against a paced synthetic feed.

The producer replays a synthetic feed at a steady rate (``--rate`` events a second for
``--minutes``), the job stores it, folds it in and retrains ALS every ``--retrain-s``
seconds beside the stream. Its users all start on day one (``--arrivals 0``), so the
population the job serves is mostly there early (two thirds of the users by minute 10,
five sixths by minute 20) instead of arriving all along; each user the job meets adds a
list and its share of the lists' working set, by design. Every ``--every-min`` minutes
one line reports:

- the driver's Python RSS, and in it: the pages of mapped files (libraries' code, read
  as it is first run), what glibc's malloc hands out and keeps free, the bytes of the
  short-term counts' arrays, the blocks Python's own allocator has handed out, and the
  bytes Arrow has live (``toPandas`` and the store's reads: the job has Arrow take them
  from malloc, so they are inside malloc's figures);
- the JVM's heap in use after a full collection (its live set: the least of three, 2 s
  apart, as a micro-batch in flight holds its working set through one), the JVM's RSS (in
  ``local[2]`` the driver and the executors in one JVM), and the executors' Python
  workers' RSS;
- Redis's ``used_memory``, the ratings stored and the store's bytes on disk;
- the micro-batches of the interval: how many, p50 and p99 seconds, and the versions.

A sample waits (up to ``--build-wait-s``) until no version has been built and no rating
model fitted for ``--quiet-s`` seconds (by default the job's trim interval and 5 s): a
build's working set grows with the store by design and is let go at the switch, and
what it frees stays resident until the next trim, so the driver is measured with what it
keeps. A ``*`` after the minute marks a sample that waited in vain.

At the end each memory figure is compared with its value after ``--settle-min`` minutes;
it is flat when the last value is at most 1.1 × that value. Judged as they are: the
JVM's live heap and the Python workers' RSS. Judged less or per unit of the data they
hold: the driver's RSS less the short-term counts (which grow with the distinct movie
pairs seen, up to ``2 × followers`` a movie, as designed), Redis per byte of the lists
it holds (the current version's and those still in their grace period, each a full copy:
2-3 of them with a retrain every 240 s and 300 s of grace; so per listed user it swings
with the copies held at the sample) and the store per rating. The JVM's RSS is reported,
not judged: a JVM keeps the heap pages it once touched (up to ``-Xmx``), so its RSS
climbs for a long time without anything being retained; the live heap is what shows a
leak.

Run: ``.venv/bin/python benchmarks/bench_soak.py`` (65 minutes by default), with the
local services; nothing else should share the cores meanwhile.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import pyarrow
from harness import bench_spark, fresh_run, local_services, percentile, rss_mb, show_batches
from pyspark.sql import SparkSession

from serving.connection import open_redis
from serving.layout import RedisLayout
from streaming import heap
from streaming.heap import MallocUsage, malloc_usage
from streaming.job import StreamingJob, stop_between_batches
from streaming.pipeline import TRIM_EVERY_S

FLAT = 1.1


@dataclass(frozen=True)
class Sample:
    """One reporting moment."""

    minute: float
    between_builds: bool
    driver_mb: float
    file_mb: float
    counts_mb: float
    py_blocks: int
    arrow_mb: float
    malloc_mb: float
    free_mb: float
    arenas: int
    heap_mb: float
    jvm_mb: float
    workers_mb: float
    redis_mb: float
    lists: int
    list_bytes: float
    held: int  # the lists of every version Redis holds: the current one's and those in grace
    stored: int
    store_mb: float
    batches: int
    p50_s: float
    p99_s: float
    version: int | None

    @property
    def line(self) -> str:
        return (
            f"{self.minute:6.1f} min{' ' if self.between_builds else '*'}| driver "
            f"{self.driver_mb:5.0f} MB ({self.file_mb:3.0f} of files; malloc: "
            f"{self.malloc_mb:4.0f} in use, {self.free_mb:4.0f} free, {self.arenas} arenas; "
            f"short-term counts "
            f"{self.counts_mb:4.1f}; {self.py_blocks / 1e6:4.2f}M Python blocks; Arrow "
            f"{self.arrow_mb:4.1f}) | heap (live) "
            f"{self.heap_mb:6.0f} MB | JVM {self.jvm_mb:6.0f} MB | Python workers "
            f"{self.workers_mb:5.0f} MB | Redis {self.redis_mb:6.1f} MB, {self.lists:>6,} lists "
            f"of {self.list_bytes / 1024:4.2f} KB, {self.held:>6,} held | stored {self.stored:>9,} "
            f"({self.store_mb:6.1f} MB on disk) | "
            f"{self.batches:4d} batches, p50 {self.p50_s:5.2f} s, p99 {self.p99_s:5.2f} s | "
            f"version {self.version}"
        )


def _python_workers() -> float:
    """RSS of Spark's Python workers (``pyspark.daemon`` and its forks), in MB."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"pyspark.daemon" in command or b"pyspark/daemon" in command:
            total += rss_mb(entry.name)
    return total


def _folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


class Soak:
    """The job of one run, sampled from the benchmark's main thread."""

    def __init__(
        self, spark: SparkSession, job: StreamingJob, state: Path, layout: RedisLayout
    ) -> None:
        self.spark, self.job, self.state, self.layout = spark, job, state, layout
        jvm = spark.sparkContext._jvm
        assert jvm is not None  # noqa: S101 - a live SparkContext has its JVM
        self.jvm = jvm
        self.jvm_pid = int(jvm.java.lang.ProcessHandle.current().pid())
        self.began = time.monotonic()
        self.last_batch = -1
        self.snapshots: list[tracemalloc.Snapshot] = []
        self.samples: list[Sample] = []

    def mean_list_bytes(self, redis_client: object, version: int, users: int = 500) -> float:
        """Mean bytes of the values of ``users`` random lists of the version (its JSON)."""
        key = self.layout.lists(version)
        picked = redis_client.hrandfield(key, users)  # type: ignore[attr-defined]
        if not picked:
            return 0.0
        pipe = redis_client.pipeline(transaction=False)  # type: ignore[attr-defined]
        for user in picked:
            pipe.hstrlen(key, user)
        sizes: list[int] = pipe.execute()
        return sum(sizes) / len(sizes)

    def heap_after_gc_mb(self, collections: int = 3, gap_s: float = 2.0) -> float:
        """The JVM heap in use right after a full collection: what it really holds.

        The least of a few collections ``gap_s`` apart: a micro-batch (about a second,
        one after the other) or a fit in flight holds its working set during one of
        them, not during all.
        """
        bean = self.jvm.java.lang.management.ManagementFactory.getMemoryMXBean()
        live = []
        for index in range(collections):
            if index:
                time.sleep(gap_s)
            self.jvm.java.lang.System.gc()
            live.append(float(bean.getHeapMemoryUsage().getUsed()) / 2**20)
        return min(live)

    def counts_mb(self) -> float:
        """MB held by the job's short-term counts, read while the batch thread may add to them."""
        for _ in range(20):
            try:
                return self.job.pipeline.transitions.held_bytes() / 2**20
            except RuntimeError:  # a batch added a row while they were summed: again
                time.sleep(0.05)
        return float("nan")

    def building(self) -> bool:
        """Whether a version's build or a rating model's fit is in flight in the driver."""
        return self.job.pipeline.retrainer.busy or self.job.fitter.busy

    def wait_between_builds(self, limit_s: float, quiet_s: float) -> bool:
        """Wait up to ``limit_s`` until nothing was built for ``quiet_s``; whether so.

        A build holds its working set (the ratings its evaluation reads, its list blocks)
        until it is switched in, and that set grows with the store by design; what it
        frees stays resident until the job's next trim. Sampled once the job has been
        quiet for a trim interval, the driver shows what it keeps.
        """
        give_up = time.monotonic() + limit_s
        quiet_since: float | None = None
        while time.monotonic() < give_up:
            now = time.monotonic()
            if self.building():
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= quiet_s:
                return True
            time.sleep(0.5)
        return False

    def sample(self, redis_client: object, between_builds: bool) -> Sample:
        reports = list(self.job.reports)  # the newest ones: the job trims the list
        fresh = [r for r in reports if r.batch_id > self.last_batch]
        self.last_batch = max([self.last_batch, *(r.batch_id for r in fresh)])
        seconds = [r.seconds for r in fresh if r.records] or [0.0]
        info = redis_client.info("memory")  # type: ignore[attr-defined]
        version = next((r.switched_to for r in reversed(reports) if r.switched_to), None)
        current = redis_client.get(self.layout.current)  # type: ignore[attr-defined]
        lists = int(redis_client.hlen(self.layout.lists(int(current)))) if current else 0  # type: ignore[attr-defined]
        list_bytes = self.mean_list_bytes(redis_client, int(current)) if current else 0.0
        held = 0
        for held_version in redis_client.zrange(self.layout.versions, 0, -1):  # type: ignore[attr-defined]
            held += int(redis_client.hlen(self.layout.lists(int(held_version))))  # type: ignore[attr-defined]
        usage = malloc_usage() or MallocUsage(0, 0)
        sample = Sample(
            minute=(time.monotonic() - self.began) / 60,
            between_builds=between_builds,
            driver_mb=rss_mb("self"),
            file_mb=rss_mb("self", "RssFile"),
            counts_mb=self.counts_mb(),
            py_blocks=sys.getallocatedblocks(),
            arrow_mb=pyarrow.total_allocated_bytes() / 2**20,
            malloc_mb=usage.in_use / 2**20,
            free_mb=usage.free / 2**20,
            arenas=usage.arenas,
            heap_mb=self.heap_after_gc_mb(),
            jvm_mb=rss_mb(self.jvm_pid),
            workers_mb=_python_workers(),
            redis_mb=int(info["used_memory"]) / 2**20,
            lists=lists,
            list_bytes=list_bytes,
            held=held,
            stored=self.job.pipeline.stored,
            store_mb=_folder_mb(self.state / "store"),
            batches=len(fresh),
            p50_s=percentile(seconds, 0.5),
            p99_s=percentile(seconds, 0.99),
            version=version,
        )
        self.samples.append(sample)
        print(sample.line, flush=True)
        if tracemalloc.is_tracing():
            self.snapshots.append(tracemalloc.take_snapshot())
        return sample

    def print_growth(self, top: int = 12) -> None:
        """The allocation sites whose live memory grew the most from the second sample on."""
        if len(self.snapshots) < 3:
            return
        grown = self.snapshots[-1].compare_to(self.snapshots[1], "traceback")
        print(f"\nlive Python memory that grew from sample 2 to the last ({top} largest):")
        for stat in grown[:top]:
            print(f"  {stat.size_diff / 2**20:+8.2f} MB in {stat.count_diff:+,} blocks")
            for line in stat.traceback.format(limit=4):
                print(f"      {line}")


def _ratio(before: float, after: float) -> float:
    return after / before if before else float("inf")


def verdict(samples: list[Sample], settle_min: float) -> bool:
    """Print last / settled for each figure; True when every judged figure is flat."""
    settled = next((s for s in samples if s.minute >= settle_min), samples[0])
    last = samples[-1]
    print(f"\nflatness: the last sample ({last.minute:.0f} min) against the one at "
          f"{settled.minute:.0f} min (flat: at most {FLAT}x)")  # fmt: skip
    judged = {
        "driver RSS - counts": (
            settled.driver_mb - settled.counts_mb,
            last.driver_mb - last.counts_mb,
            "MB",
        ),
        "JVM heap (live)": (settled.heap_mb, last.heap_mb, "MB"),
        "Python workers RSS": (settled.workers_mb, last.workers_mb, "MB"),
        "Redis per byte held": (
            settled.redis_mb / max(settled.held * settled.list_bytes / 2**20, 1e-9),
            last.redis_mb / max(last.held * last.list_bytes / 2**20, 1e-9),
            "",
        ),
        "store per rating": (
            2**20 * settled.store_mb / max(settled.stored, 1),
            2**20 * last.store_mb / max(last.stored, 1),
            "B",
        ),
    }
    flat = True
    for name, (before, after, unit) in judged.items():
        ratio = _ratio(before, after)
        flat &= ratio <= FLAT
        print(f"  {name:<19} {before:9.1f} -> {after:9.1f} {unit:<2} {ratio:5.2f}x  "
              f"{'flat' if ratio <= FLAT else 'GROWS'}")  # fmt: skip
    print(f"  (not judged) driver RSS {settled.driver_mb:.0f} -> {last.driver_mb:.0f} MB "
          f"{_ratio(settled.driver_mb, last.driver_mb):.2f}x, short-term counts "
          f"{settled.counts_mb:.1f} -> {last.counts_mb:.1f} MB")  # fmt: skip
    print(f"  (not judged) JVM RSS {settled.jvm_mb:.0f} -> {last.jvm_mb:.0f} MB "
          f"{_ratio(settled.jvm_mb, last.jvm_mb):.2f}x; Redis {settled.redis_mb:.1f} -> "
          f"{last.redis_mb:.1f} MB, lists {settled.lists:,} -> {last.lists:,} (per list "
          f"{1024 * settled.redis_mb / max(settled.lists, 1):.1f} -> "
          f"{1024 * last.redis_mb / max(last.lists, 1):.1f} KB), held {settled.held:,} -> "
          f"{last.held:,}, of {settled.list_bytes:,.0f} -> {last.list_bytes:,.0f} B; store "
          f"{settled.stored:,} -> {last.stored:,} ratings")  # fmt: skip
    print(f"  micro-batch p99 per interval: {[round(s.p99_s, 2) for s in samples]}")
    print("SOAK", "PASS: memory flat" if flat else "FAIL: memory grows")
    return flat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=65.0, help="how long the feed lasts")
    parser.add_argument("--rate", type=int, default=150, help="events a second")
    parser.add_argument("--users", type=int, default=20_000, help="users of the feed")
    parser.add_argument("--movies", type=int, default=4_000, help="movies of the feed")
    parser.add_argument(
        "--arrivals",
        type=float,
        default=0.0,
        help="share of the feed's span over which its users arrive (the feed's default: 0.8)",
    )
    parser.add_argument("--retrain-s", type=float, default=240.0, help="seconds between retrains")
    parser.add_argument("--every-min", type=float, default=5.0, help="minutes between samples")
    parser.add_argument("--settle-min", type=float, default=10.0, help="the flatness baseline")
    parser.add_argument(
        "--build-wait-s",
        type=float,
        default=300.0,
        help="how long a sample waits for the job to be quiet (a '*' marks one that was not)",
    )
    parser.add_argument(
        "--quiet-s",
        type=float,
        default=TRIM_EVERY_S + 5,
        help="seconds without a build or fit in flight before a sample (a trim meanwhile)",
    )
    parser.add_argument("--log", action="store_true", help="print every micro-batch's line")
    parser.add_argument(
        "--trace",
        action="store_true",
        help="trace the driver's Python allocations (slower) and print what grew the most",
    )
    args = parser.parse_args()
    heap.python_objects_on_malloc()  # as ``python -m streaming run`` does, first
    heap.settle()  # then, before any thread starts
    if args.log:
        show_batches()
    if args.trace:
        tracemalloc.start(8)
    events = int(args.rate * args.minutes * 60)
    arrive = (
        f"arriving over the first {args.arrivals:.0%} of it"
        if args.arrivals > 0
        else "all starting on its first day"
    )
    print(
        f"soak: {events:,} events at {args.rate}/s ({args.minutes:g} min), {args.users:,} "
        f"users {arrive}, {args.movies:,} movies, a retrain every {args.retrain_s:g} s",
        flush=True,
    )
    stream = {"trigger_interval_s": 1.0}
    model = {"min_ratings": 5_000, "retrain_every_s": args.retrain_s,
             "retrain_every_ratings": 10**9}  # fmt: skip
    spark = bench_spark()
    errors = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed at the end
    with local_services(), fresh_run(spark, stream, model) as run, errors:
        job = StreamingJob(spark, run.kafka, run.redis, run.stream, run.model)
        run.job = job
        environment = {
            **os.environ,
            "RECSTREAM_PRODUCER_SYNTHETIC_EVENTS": str(events),
            "RECSTREAM_PRODUCER_SYNTHETIC_USERS": str(args.users),
            "RECSTREAM_PRODUCER_SYNTHETIC_MOVIES": str(args.movies),
            "RECSTREAM_PRODUCER_SYNTHETIC_ARRIVALS": str(args.arrivals),
        }
        producer = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "producer", "replay", "--source", "synthetic", "--topic",
             run.kafka.topic, "--no-progress", "--rate", str(args.rate)],
            env=environment, stdout=subprocess.DEVNULL, stderr=errors, text=True,
        )  # fmt: skip
        query = job.start()
        soak = Soak(spark, job, run.stream.state_dir, RedisLayout(run.redis.key_prefix))
        redis_client = open_redis(run.redis)
        stop = threading.Event()
        try:
            end = soak.began + args.minutes * 60
            while time.monotonic() < end and producer.poll() is None:
                stop.wait(min(args.every_min * 60, max(0.0, end - time.monotonic())))
                soak.sample(redis_client, soak.wait_between_builds(args.build_wait_s, args.quiet_s))
            if producer.poll() not in (None, 0):
                errors.seek(0)
                print(f"the producer failed: {errors.read()[-2000:]}")
                return 1
        finally:
            producer.terminate()
            stop_between_batches(query)
            redis_client.close()
        if query.exception() is not None:
            print(f"the query failed: {query.exception()}")
            return 1
        invalid = sum(r.invalid for r in job.reports)
        print(f"stored {job.pipeline.stored:,} ratings, {invalid} invalid; the query ran "
              f"{(time.monotonic() - soak.began) / 60:.1f} min without stopping")  # fmt: skip
        if args.trace:
            soak.print_growth()
        return 0 if verdict(soak.samples, args.settle_min) else 1


if __name__ == "__main__":
    sys.exit(main())
