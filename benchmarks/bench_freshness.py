"""Freshness: from producing a rating to that user's list in Redis reflecting it.

The streaming job runs with a 1 s trigger on a topic seeded with the first 40,000
ML-100K ratings (its first batch trains the first model). The producer then replays
the rest of ML-100K at a steady rate while this script sends probes: every so often a
random user rates the movie at the top of their current list in Redis. A list never
holds a movie its user rated, so the probe is reflected once that movie has left the
user's list; the script polls Redis every 50 ms and records the time from just before
the send to the first poll that sees it gone. The same run with fold-in on and the
hybrid lists (the default), with fold-in on and ALS-only lists (transition weight 0, the
lists before the hybrid), and with fold-in off (lists then change only when a retrain
publishes a new version), side by side, with the same retrain policy; and the default
again with each retrain inside its micro-batch (``retrain_in_background=false``, how the
job retrained before 2026-11-28), to show what building versions beside the stream buys.

Order matters on a fresh JVM: the same hybrid variant measured 3.83 s per micro-batch
when it ran first and 1.61 s when it ran third (2026-11-27). So a short unreported
warm-up run comes first, and with ``--rounds N`` the variants take turns going first;
the pooled figures, with the median time of each stage of a micro-batch, come last.

    .venv/bin/python benchmarks/bench_freshness.py [--rate 300] [--seconds 120]
        [--probes-per-s 2] [--retrain-every-s 30] [--rounds 1]
        [--warm-up-s 20] [--variants 0,1,2,3]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from harness import (
    ML100K,
    bench_spark,
    fresh_run,
    local_services,
    percentile,
    replay,
    show_batches,
    start_job,
    start_producer,
    wait_for,
)
from kafka import KafkaProducer
from pyspark.sql import SparkSession

from producer.events import RatingEvent
from producer.grouplens import load_grouplens
from producer.replay import open_producer
from producer.settings import ProducerSettings
from serving.connection import open_redis
from serving.layout import RedisLayout, decode_list, decode_meta
from streaming.job import stop_between_batches
from streaming.pipeline import BatchReport

SEED = 40_000
POLL_S = 0.05


@dataclass
class Probe:
    """One rating sent by the benchmark, and when Redis first showed it."""

    user: int
    movie: int
    sent_at: float
    partition: int
    offset: int
    batch: int | None = None  # the micro-batch that read it, once its commit exists
    seen_at: float | None = None
    movie_gone: bool | None = None  # was the movie out of the list at that moment?


@dataclass
class Look:
    """One poll of Redis: the newest batch the current lists reflect, and for each
    user still waiting, whether their probed movie is out of their list."""

    at: float
    batch: int
    absent: dict[int, bool]


@dataclass
class Outcome:
    label: str
    probes: list[Probe]
    reports: list[BatchReport]

    def line(self) -> str:
        seen = [p for p in self.probes if p.seen_at is not None]
        waits = [p.seen_at - p.sent_at for p in seen if p.seen_at is not None]
        label = self.label
        if not waits:
            return f"{label}: no probe reflected ({len(self.probes)} sent)"
        late = len(self.probes) - len(seen)
        gone = sum(bool(p.movie_gone) for p in seen)
        steady = [r for r in self.reports[1:] if r.retrain is None]
        busy = [sum(r.timings_s.values()) for r in steady]
        every = [sum(r.timings_s.values()) for r in self.reports[1:]]
        retrains = sum(r.retrain is not None for r in self.reports[1:])
        return (
            f"{label}: {len(seen)} of {len(self.probes)} probes reflected"
            f"{f' ({late} not within the drain time)' if late else ''}, "
            f"movie out of the list in {gone}; "
            f"freshness p50 {percentile(waits, 0.5):.2f} s, p99 {percentile(waits, 0.99):.2f} s, "
            f"max {max(waits):.2f} s | {len(self.reports) - 1} batches, median "
            f"{statistics.median(r.records for r in self.reports[1:]):.0f} records and "
            f"{statistics.median(busy) if busy else 0:.2f} s without a retrain; "
            f"{retrains} retrains; every micro-batch p50 {percentile(every, 0.5):.2f} s, "
            f"p99 {percentile(every, 0.99):.2f} s, max {max(every):.2f} s"
        )

    def stages(self) -> str:
        """Median seconds of each stage of the micro-batches without a retrain."""
        steady = [r for r in self.reports[1:] if r.retrain is None]
        names = sorted({name for r in steady for name in r.timings_s})
        return ", ".join(
            f"{name} {statistics.median(r.timings_s.get(name, 0.0) for r in steady):.2f} s"
            for name in names
        )

    def merged(self, other: Outcome) -> Outcome:
        """This outcome and another run of the same variant as one."""
        return Outcome(self.label, self.probes + other.probes, self.reports + other.reports[1:])


class Watch:
    """Polls the current version's metadata and the waiting users' lists."""

    def __init__(self, client: redis.Redis, layout: RedisLayout, fold_in: bool) -> None:
        self.client = client
        self.layout = layout
        self.fold_in = fold_in
        self.looks: list[Look] = []

    def look(self, waiting: dict[int, int]) -> None:
        """One poll; ``waiting`` maps user -> probed movie."""
        at = time.monotonic()
        version = self.client.get(self.layout.current)
        if version is None:
            return
        users = list(waiting)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.get(self.layout.meta(int(version)))
            pipe.hmget(self.layout.lists(int(version)), [str(u) for u in users] or ["-"])
            raw_meta, values = pipe.execute()
        meta = decode_meta(raw_meta)
        batch = -1 if meta.batch_id is None else meta.batch_id
        if self.fold_in and meta.last_folded_in_batch is not None:
            batch = max(batch, meta.last_folded_in_batch)
        absent = {
            user: value is not None
            and waiting[user] not in {movie for movie, _ in decode_list(value).items}
            for user, value in zip(users, values, strict=False)
        }
        self.looks.append(Look(at, batch, absent))

    def settle(self, probe: Probe) -> None:
        """Find the first poll that showed a batch at or after the probe's batch."""
        if probe.batch is None or probe.seen_at is not None:
            return
        for look in self.looks:
            if look.at > probe.sent_at and look.batch >= probe.batch:
                probe.seen_at = look.at
                probe.movie_gone = look.absent.get(probe.user)
                return


def _read_commits(folder: Path, known: dict[int, dict[str, int]]) -> None:
    for path in folder.glob("*.json"):
        if int(path.stem) not in known:
            known[int(path.stem)] = json.loads(path.read_text())["offsets"]


def probe(
    topic: str, watch: Watch, producer: KafkaProducer, commits_dir: Path, users: list[int],
    source: str,
    stamp: int, args: argparse.Namespace,
) -> list[Probe]:  # fmt: skip
    """Send probes for ``args.seconds``, then wait for the stragglers; every probe."""
    layout = watch.layout
    rng = random.Random(7)  # noqa: S311 - picks probe users, nothing secret
    probes: list[Probe] = []
    commits: dict[int, dict[str, int]] = {}
    began = time.monotonic()
    stop_probing = began + args.seconds
    deadline = stop_probing + args.retrain_every_s + 60
    next_probe = began
    while True:
        now = time.monotonic()
        waiting = {p.user: p.movie for p in probes if p.seen_at is None}
        if now > deadline or (now > stop_probing and not waiting):
            break
        if now < stop_probing and now >= next_probe:
            next_probe += 1 / args.probes_per_s
            user = rng.choice([u for u in users if u not in waiting])
            version = int(watch.client.get(layout.current) or 0)
            listed = watch.client.hget(layout.lists(version), str(user))
            if listed is not None:
                movie = decode_list(listed).items[0][0]
                sent_at = time.monotonic()
                event = RatingEvent(source, user, movie, 5.0, stamp).to_json()
                sent = producer.send(topic, key=str(user).encode(), value=event)
                where = sent.get(timeout=30)
                probes.append(Probe(user, movie, sent_at, where.partition, where.offset))
                waiting[user] = movie
        watch.look(waiting)
        _read_commits(commits_dir, commits)
        for item in probes:
            if item.batch is None:
                item.batch = min(
                    (
                        b
                        for b, ends in commits.items()
                        if ends.get(str(item.partition), -1) > item.offset
                    ),
                    default=None,
                )
            watch.settle(item)
        time.sleep(POLL_S)
    return probes


VARIANTS = {  # label: (fold-in, hybrid weight of the short-term part, retrain beside)
    "fold-in on, hybrid lists          ": (True, None, True),
    "fold-in on, ALS lists             ": (True, 0.0, True),
    "fold-in off                       ": (False, None, True),
    "fold-in on, hybrid, retrain inside": (True, None, False),
}


def measure(spark: SparkSession, label: str, args: argparse.Namespace) -> Outcome:
    fold_in, weight, beside = VARIANTS[label]
    stream: dict[str, object] = {"trigger_interval_s": 1.0, "fold_in": fold_in}
    model: dict[str, object] = {
        "retrain_every_s": args.retrain_every_s,
        "retrain_in_background": beside,
    }
    if weight is not None:
        model["transition_weight"] = weight
    dataset = load_grouplens(ML100K)
    stamp = int(dataset.ratings.timestamps.max())
    with fresh_run(spark, stream, model) as run:
        replay(ML100K, run.kafka.topic, "--limit", str(SEED), "--max")
        job = start_job(spark, run)
        query = job.start()
        client = open_redis(run.redis)
        layout = RedisLayout(run.redis.key_prefix)
        background: subprocess.Popen[bytes] | None = None
        producer = open_producer(run.kafka, ProducerSettings())
        try:
            wait_for("the first model", lambda: client.get(layout.current) is not None, 600)
            raw = client.get(layout.current)
            assert raw is not None  # noqa: S101 - waited for just above
            current = int(raw)
            users = [int(u) for u in client.hkeys(layout.lists(current))]
            background = start_producer(
                ML100K, run.kafka.topic, "--rate", str(args.rate), "--no-catalog"
            )
            # The producer resumes after the topic's last event: let it start before probes.
            ends = job.watcher.end_offsets
            wait_for("the steady replay", lambda: sum((ends() or {}).values()) > SEED + 100, 120)
            watch = Watch(client, layout, fold_in)
            probes = probe(
                run.kafka.topic,
                watch,
                producer,
                job.store.commits_dir,
                users,
                dataset.name,
                stamp,
                args,
            )
        finally:
            if background is not None:
                background.terminate()
                background.wait(30)
            producer.close()
            client.close()
            stop_between_batches(query)
        return Outcome(label, probes, list(job.reports))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=300, help="steady replay, events/s")
    parser.add_argument("--seconds", type=float, default=120, help="how long to send probes")
    parser.add_argument("--probes-per-s", type=float, default=2)
    parser.add_argument("--retrain-every-s", type=float, default=30)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every variant this many times, each round starting with the next variant "
        "(so none is always the first, on a cold JVM); figures pool the rounds",
    )
    parser.add_argument(
        "--warm-up-s",
        type=float,
        default=20,
        help="first run the first variant this long, unreported, so that no measured run "
        "pays for a cold JVM and Python (0 = none)",
    )
    parser.add_argument(
        "--variants",
        default=",".join(str(i) for i in range(len(VARIANTS))),
        help="which variants to run, by position in VARIANTS (comma-separated)",
    )
    parser.add_argument("--log", action="store_true", help="print the job's batch lines")
    args = parser.parse_args()
    if args.log:
        show_batches()
    if not (ML100K / "u.data").is_file():
        msg = f"ML-100K not found at {ML100K}; set RECSTREAM_ML100K_DIR"
        raise SystemExit(msg)
    print(
        f"ML-100K: {SEED:,} ratings seeded, the rest replayed at {args.rate:.0f} events/s; "
        f"1 s trigger; retrain every {args.retrain_every_s:.0f} s (or 100k ratings); "
        f"{args.probes_per_s} probes/s for {args.seconds:.0f} s"
    )
    with local_services():
        spark = bench_spark()
        try:
            labels = [list(VARIANTS)[int(i)] for i in args.variants.split(",")]
            if args.warm_up_s > 0:
                warm = measure(
                    spark,
                    labels[0],
                    argparse.Namespace(**{**vars(args), "seconds": args.warm_up_s}),
                )
                print(f"warm-up (not counted): {warm.line()}", flush=True)
            pooled: dict[str, Outcome] = {}
            for round_ in range(args.rounds):
                order = labels[round_ % len(labels) :] + labels[: round_ % len(labels)]
                for label in order:
                    outcome = measure(spark, label, args)
                    print(f"round {round_ + 1}: {outcome.line()}", flush=True)
                    held = pooled.get(label)
                    pooled[label] = outcome if held is None else held.merged(outcome)
            print(f"pooled over {args.rounds} round(s):")
            for label in labels:
                print(f"{pooled[label].line()}\n    stages: {pooled[label].stages()}", flush=True)
        finally:
            spark.stop()


if __name__ == "__main__":
    main()
