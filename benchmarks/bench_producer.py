"""Producer throughput: the full replay path against a raw kafka-python loop, side by side.

Full path: load the dataset, order it, plan partitions, serialise every event and send
it with the producer recstream uses, then flush. Raw loop: the same messages already
serialised in memory, sent with a KafkaProducer of the same settings, then flushed.
Both go to fresh topics of the same broker, on ML-100K and on a synthetic feed.

    .venv/bin/python benchmarks/bench_producer.py [--synthetic-events N] [--rounds R]

Needs the local services (started here if they are not running). Target: the full
path reaches at least 0.8 of the raw loop's events per second.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable

from harness import ML100K, PARTITIONS, local_services

from producer.broker import create_topic, delete_topic
from producer.dataset import Dataset
from producer.events import RatingEvent
from producer.grouplens import load_grouplens
from producer.pacing import MaxPace
from producer.replay import open_producer, plan_replay, run_replay
from producer.settings import KafkaSettings, ProducerSettings
from producer.synthetic import synthetic_dataset


def _fresh_topic(kafka: KafkaSettings) -> str:
    topic = f"bench-{uuid.uuid4().hex[:10]}"
    create_topic(kafka, topic, partitions=PARTITIONS)
    return topic


def full_path(
    load: Callable[[], Dataset], kafka: KafkaSettings, settings: ProducerSettings
) -> float:
    """Seconds from loading to the last acknowledgement, through the replay code."""
    topic = _fresh_topic(kafka)
    producer = open_producer(kafka, settings)
    try:
        began = time.perf_counter()
        dataset = load()
        plan = plan_replay(dataset, PARTITIONS)
        summary = run_replay(plan, producer, topic, MaxPace())
        elapsed = time.perf_counter() - began
        if summary.sent != len(dataset.ratings) or summary.errors:
            msg = f"replay sent {summary.sent} of {len(dataset.ratings)}, {summary.errors} errors"
            raise RuntimeError(msg)
    finally:
        producer.close()
        delete_topic(kafka, topic)
    return elapsed


def raw_loop(dataset: Dataset, kafka: KafkaSettings, settings: ProducerSettings) -> float:
    """Seconds to send the same messages, serialised beforehand, with a bare loop."""
    table = dataset.ratings.in_replay_order()
    messages = [
        (str(user).encode(), RatingEvent(dataset.name, user, movie, rating, stamp).to_json())
        for user, movie, rating, stamp in zip(
            table.user_ids.tolist(), table.movie_ids.tolist(), table.ratings.tolist(),
            table.timestamps.tolist(), strict=True,
        )
    ]  # fmt: skip
    topic = _fresh_topic(kafka)
    producer = open_producer(kafka, settings)
    try:
        began = time.perf_counter()
        for key, value in messages:
            producer.send(topic, key=key, value=value)
        producer.flush()
        elapsed = time.perf_counter() - began
    finally:
        producer.close()
        delete_topic(kafka, topic)
    return elapsed


def compare(name: str, load: Callable[[], Dataset], rounds: int) -> None:
    kafka, settings = KafkaSettings(), ProducerSettings()
    dataset = load()
    events = len(dataset.ratings)
    raw = min(raw_loop(dataset, kafka, settings) for _ in range(rounds))
    full = min(full_path(load, kafka, settings) for _ in range(rounds))
    print(
        f"{name:<22} {events:>9,} events | raw loop {events / raw:>9,.0f} ev/s | "
        f"full path {events / full:>9,.0f} ev/s | ratio {raw / full:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic-events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2, help="best of R runs per side")
    args = parser.parse_args()
    settings = ProducerSettings()
    print(
        f"producer settings: acks=all, idempotent, compression={settings.compression}, "
        f"linger_ms={settings.linger_ms}, batch={settings.batch_size_kb} KiB, "
        f"{PARTITIONS} partitions; best of {args.rounds}"
    )
    with local_services():
        if (ML100K / "u.data").is_file():
            compare("ml-100k", lambda: load_grouplens(ML100K), args.rounds)
        else:
            print(f"ml-100k: not found at {ML100K}; set RECSTREAM_ML100K_DIR")
        events = args.synthetic_events
        compare(f"synthetic {events:,}", lambda: synthetic_dataset(events), args.rounds)


if __name__ == "__main__":
    main()
