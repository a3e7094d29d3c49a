"""Sustained ingest: the highest steady replay rate at which consumer lag stays bounded.

For each rate of a ladder, a fresh topic, state folder and Redis prefix; the producer
replays the first ``--events`` ratings of the ML-1M-scale synthetic feed (6,666 users,
4,000 movies) at that rate while the streaming job (1 s trigger, fold-in on) retrains
every 100,000 ratings. The lag after each micro-batch is recorded. A retrain stops
ingest for its duration, so lag peaks after each one; the rate counts as sustained when
the job catches up between retrains, that is, when within every retrain cycle the lag
comes back below three seconds' worth of events (a batch takes 1-2 s, so some lag is
always there). When the job falls behind, the lag grows from cycle to cycle and never
comes back. Reported per rate: the rate the producer really reached, the peak lag, how
far behind the job stayed at best in each cycle, and the time to drain after the
replay ended.

    .venv/bin/python benchmarks/bench_ingest.py [--rates 2000,4000,6000,7000,8000]
        [--events 300000] [--log]
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

from harness import (
    bench_spark,
    fresh_run,
    local_services,
    show_batches,
    start_job,
    start_producer,
    wait_for,
)
from pyspark.sql import SparkSession

from streaming.job import stop_between_batches
from streaming.pipeline import BatchReport

RETRAIN_EVERY = 100_000
CAUGHT_UP_S = 3.0


@dataclass
class Ladder:
    rate: float
    events: int
    produced_in_s: float
    drained_in_s: float | None
    reports: list[BatchReport]

    def cycles(self) -> list[list[BatchReport]]:
        """Batches grouped by retrain: each cycle starts with the batch that retrained."""
        groups: list[list[BatchReport]] = []
        for report in self.reports:
            if report.retrain is not None or not groups:
                groups.append([])
            groups[-1].append(report)
        return groups

    def behind_s(self) -> list[float]:
        """For each retrain cycle but the last (which drains): the least the job was
        behind the replay in it, in seconds (lowest lag / rate)."""
        rate = self.events / self.produced_in_s
        started = [cycle for cycle in self.cycles() if cycle[0].retrain is not None]
        return [min((r.lag or 0) for r in cycle) / rate for cycle in started[:-1]]

    def sustained(self) -> bool:
        """The job got back within ``CAUGHT_UP_S`` of the replay in every cycle."""
        behind = self.behind_s()
        return bool(behind) and max(behind) <= CAUGHT_UP_S

    def line(self) -> str:
        reached = self.events / self.produced_in_s
        lags = [r.lag for r in self.reports if r.lag is not None]
        retrains = [sum(r.timings_s.values()) for r in self.reports if r.retrain is not None]
        drained = "not drained" if self.drained_in_s is None else f"{self.drained_in_s:.1f} s"
        return (
            f"rate {self.rate:>7,.0f}/s (reached {reached:>7,.0f}/s): "
            f"{'sustained' if self.sustained() else 'FALLS BEHIND'}; peak lag {max(lags):,}, "
            f"behind by at least {', '.join(f'{s:.1f}' for s in self.behind_s())} s "
            f"in the cycles between retrains; "
            f"{len(retrains)} retrains of {min(retrains):.1f}-{max(retrains):.1f} s; "
            f"{len(self.reports)} batches; drained {drained} after the replay"
        )


def climb(spark: SparkSession, rate: float, events: int) -> Ladder:
    stream = {"trigger_interval_s": 1.0, "fold_in": True}
    model = {"retrain_every_ratings": RETRAIN_EVERY, "retrain_every_s": 3_600.0}
    with fresh_run(spark, stream, model) as run:
        job = start_job(spark, run)
        query = job.start()
        producer = None
        try:
            producer = start_producer("synthetic", run.kafka.topic, "--rate", str(rate),
                                      "--limit", str(events))  # fmt: skip
            ends = job.watcher.end_offsets
            wait_for("the replay to start", lambda: sum((ends() or {}).values()) > 0, 300)
            began = time.monotonic()
            producer.wait(timeout=events / rate * 4 + 300)
            produced_in = time.monotonic() - began
            if producer.returncode != 0:
                msg = f"the producer failed with exit code {producer.returncode}"
                raise RuntimeError(msg)
            written = sum((ends() or {}).values())
            if written != events:
                msg = f"the topic holds {written:,} events, expected {events:,}"
                raise RuntimeError(msg)
            done = time.monotonic()
            drained: float | None = None
            try:
                wait_for(
                    "the job to catch up",
                    lambda: sum(r.valid for r in list(job.reports)) >= events,
                    600,
                )
                drained = time.monotonic() - done
            except TimeoutError:
                pass
        finally:
            if producer is not None and producer.poll() is None:
                producer.terminate()
                producer.wait(30)
            stop_between_batches(query)
        return Ladder(rate, events, produced_in, drained, list(job.reports))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="2000,4000,6000,7000,8000", help="comma-separated ev/s")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--log", action="store_true", help="print the job's batch lines")
    args = parser.parse_args()
    if args.log:
        show_batches()
    rates = [float(rate) for rate in args.rates.split(",")]
    os.environ["RECSTREAM_PRODUCER_SYNTHETIC_EVENTS"] = "1000000"
    print(
        f"synthetic ML-1M-scale feed, first {args.events:,} events per rate; 1 s trigger, "
        f"fold-in on, retrain every {RETRAIN_EVERY:,} ratings; local[2]"
    )
    best = None
    with local_services():
        spark = bench_spark()
        try:
            for rate in rates:
                ladder = climb(spark, rate, args.events)
                print(ladder.line(), flush=True)
                if ladder.sustained():
                    best = ladder.events / ladder.produced_in_s
        finally:
            spark.stop()
    if best is None:
        print("no rate of the ladder was sustained")
    else:
        print(f"highest sustained rate: {best:,.0f} events/s")


if __name__ == "__main__":
    main()
