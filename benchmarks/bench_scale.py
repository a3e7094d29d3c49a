"""Scale: synthetic feeds shaped like ML-1M, ML-10M and ML-25M through the real job.

Per feed, on a fresh topic, state folder and Redis prefix:

1. **load**: the producer sends the whole feed as fast as the broker takes it (users,
   movies and ratings as in the MovieLens release it imitates); the streaming job, run
   in this process so that its driver is the one measured, reads it from the start
   with a retrain every ``--retrain-every`` ratings, built beside the stream, until every
   rating is stored and the last version switched in. Reported: sustained ingest
   (ratings stored per second of the load), each version's ALS fit and top-N + publish
   (its lists for every user, written beside the stream), micro-batch p50/p99 (all, and
   those that ran while a version was built);
2. **tail**: a second feed at ``--tail-rate`` events/s for ``--tail-s`` seconds with one
   retrain started at its beginning: micro-batch p50/p99 while it builds, and freshness
   (Kafka append to the batch's commit record) of the tail's ratings: p50/p99/max over
   every rating (its append time read back from the topic, its batch's commit time), and
   the p50 of the batches' medians with the p99 of their maxima (the commit records');
3. **memory**: the driver's Python RSS after the last retrain (and its peak), the JVM's
   RSS (in ``local[N]`` the driver and the executors), the executors' Python workers.

``--master spark://127.0.0.1:7077`` runs the same on the local standalone cluster
(``make spark-cluster``); then the executors are the workers' JVMs.

    .venv/bin/python benchmarks/bench_scale.py [--sizes 1m,10m] [--master local[2]]
        [--retrain-every 1000000] [--tail-rate 300] [--tail-s 90] [--limit N] [--log]

``--limit N`` replays only the first N ratings of each feed (its users and movies as
in the whole feed): how a micro-batch's cost grows with what is stored, in less time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import (
    SHAPES,
    fresh_run,
    local_services,
    percentile,
    rss_mb,
    show_batches,
    start_job,
    wait_for,
)
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from streaming.ingest.store import BatchCommit
from streaming.ingest.topics import spark_source_options
from streaming.job import StreamingJob, stop_between_batches
from streaming.model.policy import RetrainPolicy
from streaming.model.versions import load_model
from streaming.session import build_spark_session
from streaming.settings import SparkSettings

POLL_S = 0.5


def _processes(marker: str) -> list[int]:
    """Process ids whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if marker.encode() in command:
            found.append(int(entry.name))
    return found


@dataclass
class Memory:
    """Peaks seen while polling, in MB."""

    jvm: float = 0.0
    executors: float = 0.0  # executor JVMs (a cluster) and Python workers
    samples: int = 0

    def sample(self, jvm_pid: int) -> None:
        self.jvm = max(self.jvm, rss_mb(jvm_pid))
        workers = _processes("pyspark.daemon") + _processes("pyspark/daemon")
        workers += _processes("CoarseGrainedExecutorBackend")
        self.executors = max(self.executors, sum(rss_mb(pid) for pid in set(workers)))
        self.samples += 1


@dataclass
class Outcome:
    """What one feed measured."""

    size: str
    ratings: int
    load_s: float = 0.0
    # version, summary (what the build reads of the store), ALS fit, lists
    versions: list[tuple[int, float, float, float]] = field(default_factory=list)
    batches: list[tuple[float, bool]] = field(default_factory=list)  # seconds, building
    tail_batches: list[tuple[float, bool]] = field(default_factory=list)
    tail_fresh: list[tuple[float, float]] = field(default_factory=list)  # per batch p50, max
    tail_ages: list[float] = field(default_factory=list)  # per rating, append to commit
    driver_rss: float = 0.0
    driver_peak: float = 0.0
    short_term: tuple[int, int] = (0, 0)  # the transition counts: pairs, array bytes
    memory: Memory = field(default_factory=Memory)


def _produce(topic: str, events: int, users: int, movies: int, seed: int, *extra: str) -> None:
    environment = {
        **os.environ,
        "RECSTREAM_PRODUCER_SYNTHETIC_EVENTS": str(events),
        "RECSTREAM_PRODUCER_SYNTHETIC_USERS": str(users),
        "RECSTREAM_PRODUCER_SYNTHETIC_MOVIES": str(movies),
        "RECSTREAM_PRODUCER_SYNTHETIC_SEED": str(seed),
    }
    command = [sys.executable, "-m", "producer", "replay", "--source", "synthetic",
               "--topic", topic, "--no-progress", "--no-resume", *extra]  # fmt: skip
    done = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        msg = f"the producer failed ({done.returncode}): {done.stderr[-2000:]}"
        raise RuntimeError(msg)


def _jvm_pid(spark: SparkSession) -> int:
    jvm = spark.sparkContext._jvm
    assert jvm is not None  # noqa: S101 - a live SparkContext has its JVM
    return int(jvm.java.lang.ProcessHandle.current().pid())


def _settled(job: StreamingJob, stored: int) -> bool:
    pipeline = job.pipeline
    return pipeline.stored >= stored and not pipeline.retrainer.busy and not job.fitter.busy


def _poll(job: StreamingJob, memory: Memory, jvm_pid: int, until: threading.Event) -> None:
    while not until.wait(POLL_S):
        memory.sample(jvm_pid)


def measure(spark: SparkSession, size: str, args: argparse.Namespace) -> Outcome:
    events, users, movies = SHAPES[size]
    if args.limit:  # the feed's first ratings: the same users and movies, a shorter replay
        events = min(events, args.limit)
    outcome = Outcome(size, events)
    stream: dict[str, object] = {
        "trigger_interval_s": 1.0,
        "max_offsets_per_trigger": args.max_per_batch,
    }
    model: dict[str, object] = {
        "retrain_every_ratings": args.retrain_every,
        "retrain_every_s": 10**9,
        "rating_samples": 0 if not args.stars else 20,
    }
    with fresh_run(spark, stream, model) as run:
        began = time.perf_counter()
        _produce(run.kafka.topic, SHAPES[size][0], users, movies, 42, "--max",
                 "--limit", str(events))  # fmt: skip
        print(
            f"  {size}: {events:,} ratings sent in {time.perf_counter() - began:.0f} s", flush=True
        )
        job = start_job(spark, run)
        jvm_pid = _jvm_pid(spark)
        stop = threading.Event()
        poller = threading.Thread(target=_poll, args=(job, outcome.memory, jvm_pid, stop))
        poller.start()
        query = job.start()
        try:
            began = time.perf_counter()
            wait_for("the whole feed stored", lambda: job.pipeline.stored >= events, args.timeout_s)
            outcome.load_s = time.perf_counter() - began
            wait_for("the last version", lambda: _settled(job, events), args.timeout_s)
            # ``stored`` moves within a batch, before its report is kept: wait for the
            # report of the batch that stored the last rating, so that it is not taken
            # for a batch of the tail (it would count its ratings' minutes in the backlog).
            wait_for("the load's last report",
                     lambda: sum(r.valid for r in job.reports) >= events, 60)  # fmt: skip
            outcome.batches = [(r.seconds, r.building) for r in job.reports]
            outcome.driver_rss = rss_mb("self")
            outcome.short_term = job.pipeline.transitions.footprint()
            folder = run.stream.state_dir / "models"
            for path in sorted(folder.glob("v*.npz"), key=lambda p: int(p.stem[1:])):
                meta = load_model(path).meta
                seconds = meta.timings_s
                outcome.versions.append(
                    (
                        meta.version,
                        seconds.get("summary", 0.0),
                        seconds.get("fit", 0.0),
                        seconds.get("lists", 0.0),
                    )
                )
            # The tail: one retrain due at its first batch, a paced feed meanwhile.
            settings = run.model.model_copy(update={"retrain_every_s": 1.0})
            job.pipeline.policy = RetrainPolicy.from_settings(settings)
            seen = len(job.reports)
            tail = int(args.tail_rate * args.tail_s)
            feed = threading.Thread(target=_produce, args=(
                run.kafka.topic, tail, users, movies, 7, "--rate", str(args.tail_rate),
                "--no-catalog"))  # fmt: skip
            feed.start()
            wait_for("the tail's retrain", lambda: job.pipeline.retrainer.busy, 600)
            job.pipeline.policy = RetrainPolicy.from_settings(run.model)  # just the one
            feed.join()
            wait_for("the tail stored", lambda: job.pipeline.stored >= events + tail, 600)
            reports = job.reports[seen:]
            outcome.tail_batches = [(r.seconds, r.building) for r in reports]
            commits = {c.batch_id: c for c in job.store.commits()}
            outcome.tail_fresh = [
                (commits[r.batch_id].freshness_s[0], commits[r.batch_id].freshness_s[1])
                for r in reports
                if r.batch_id in commits and commits[r.batch_id].freshness_s
            ]
            outcome.tail_ages = _ages(spark, job, commits, [r.batch_id for r in reports])
            outcome.driver_peak = rss_mb("self", "VmHWM")
        finally:
            stop.set()
            poller.join()
            stop_between_batches(query)
    return outcome


def _ages(spark: SparkSession, job: StreamingJob, commits: dict[int, BatchCommit],
          batches: list[int]) -> list[float]:  # fmt: skip
    """Each rating the ``batches`` stored: seconds from its Kafka append to its batch's commit.

    The append times are read back from the topic (from the offsets the batch before the
    first of them had reached), matched to the stored ratings by partition and offset.
    """
    done = [batch for batch in batches if batch in commits]
    if not done:
        return []
    before = [commit for batch, commit in commits.items() if batch < min(done)]
    start = max(before, key=lambda c: c.batch_id).offsets if before else {}
    topic = job.kafka.topic
    starting = {topic: {p: int(o) for p, o in start.items()}} if start else None
    reader = spark.read.format("kafka").options(**spark_source_options(job.kafka))
    reader = reader.option("subscribe", topic)
    if starting:
        reader = reader.option("startingOffsets", json.dumps(starting))
    appended = reader.load().select(
        "partition", "offset", F.col("timestamp").cast("double").alias("appended")
    )
    stored = job.store.stored_rows().where(F.col("batch_id").isin(done))
    rows = stored.join(appended, ["partition", "offset"]).select("batch_id", "appended").collect()
    return [commits[row.batch_id].committed_at - float(row.appended) for row in rows]


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"p50 {percentile(values, 0.5):.2f} s, p99 {percentile(values, 0.99):.2f} s"


def report(outcome: Outcome) -> None:
    size = outcome.size
    ingest = outcome.ratings / outcome.load_s if outcome.load_s else 0.0
    print(f"{size}: {outcome.ratings:,} ratings stored in {outcome.load_s:.0f} s "
          f"({ingest:,.0f} ratings/s sustained, retrains included)")  # fmt: skip
    for version, summary, fit, lists in outcome.versions:
        print(f"  version {version}: summary {summary:.1f} s, ALS fit {fit:.1f} s, "
              f"top-N + publish {lists:.1f} s")  # fmt: skip
    every = [s for s, _ in outcome.batches]
    building = [s for s, b in outcome.batches if b]
    print(f"  load micro-batches: all {_spread(every)} ({len(every)}); "
          f"while building {_spread(building)} ({len(building)})")  # fmt: skip
    tail_building = [s for s, b in outcome.tail_batches if b]
    print(f"  tail micro-batches while building: {_spread(tail_building)} "
          f"({len(tail_building)} of {len(outcome.tail_batches)})")  # fmt: skip
    p50s = [p50 for p50, _ in outcome.tail_fresh]
    worst = [top for _, top in outcome.tail_fresh]
    if p50s:
        print(f"  tail freshness (append to commit) of the batches' medians and maxima: p50 "
              f"{percentile(p50s, 0.5):.2f} s, p99 {percentile(worst, 0.99):.2f} s")  # fmt: skip
    if outcome.tail_ages:
        ages = outcome.tail_ages
        print(f"  tail freshness of each rating ({len(ages):,}): p50 "
              f"{percentile(ages, 0.5):.2f} s, p99 {percentile(ages, 0.99):.2f} s, "
              f"max {max(ages):.2f} s")  # fmt: skip
    memory = outcome.memory
    print(f"  driver Python RSS after the last retrain {outcome.driver_rss:,.0f} MB "
          f"(peak {outcome.driver_peak:,.0f} MB); JVM RSS peak {memory.jvm:,.0f} MB; "
          f"executor processes peak {memory.executors:,.0f} MB")  # fmt: skip
    pairs, held = outcome.short_term
    print(f"  the short-term counts on the driver: {pairs:,} movie pairs, "
          f"{held / 2**20:,.0f} MB of arrays (a build holds a copy of them)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1m,10m", help="of " + ",".join(SHAPES))
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--retrain-every", type=int, default=1_000_000)
    parser.add_argument("--max-per-batch", type=int, default=100_000)
    parser.add_argument("--tail-rate", type=float, default=300)
    parser.add_argument("--tail-s", type=float, default=90)
    parser.add_argument("--stars", action="store_true", help="fit the rating model too")
    parser.add_argument("--timeout-s", type=float, default=7200)
    parser.add_argument("--log", action="store_true", help="print the job's batch lines")
    parser.add_argument("--limit", type=int, default=0,
                        help="send only each feed's first N ratings (0: all)")  # fmt: skip
    args = parser.parse_args()
    sizes = [size.strip().lower() for size in args.sizes.split(",")]
    unknown = [size for size in sizes if size not in SHAPES]
    if unknown:
        parser.error(f"unknown sizes {unknown}; choose from {', '.join(SHAPES)}")
    if len(sizes) > 1:  # each size in a process of its own: its memory is its own
        for size in sizes:
            rest = [arg for arg in sys.argv[1:] if not arg.startswith("--sizes")]
            rest = [arg for arg in rest if arg != args.sizes]
            subprocess.run([sys.executable, __file__, "--sizes", size, *rest], check=True)  # noqa: S603
        return
    if args.log:
        show_batches()
    with local_services():
        spark = build_spark_session(
            SparkSettings(master=args.master, ui_enabled=False,
                          console_progress=False, driver_memory=args.driver_memory)
        )  # fmt: skip
        try:
            tail = f"tail {args.tail_rate:.0f} events/s for {args.tail_s:.0f} s"
            print(f"master {args.master}; retrain every {args.retrain_every:,} ratings, "
                  f"beside the stream; {tail}")  # fmt: skip
            report(measure(spark, sizes[0], args))
        finally:
            spark.stop()


if __name__ == "__main__":
    main()
