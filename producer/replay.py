"""Replay a dataset into Kafka in timestamp order, paced, resumable and idempotent.

Order: timestamp, then user, then movie, so a replay is deterministic. Each event goes
to the partition Kafka's default partitioner picks for its key (the user id), computed
here explicitly, so that one user's ratings stay in order within one partition.

Resume reads the topic itself: the last event of every partition is located in the
replay order, and an event is sent only if it comes after the last event already in
its partition. With the idempotent producer each partition holds a gap-free prefix of
its share of the replay, so this is exact even after a crash: nothing is sent twice
and nothing is skipped.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.partitioner.default import murmur2

from producer.broker import client_options, create_topic, describe_cluster
from producer.dataset import Dataset, RatingTable
from producer.errors import ProducerError, ResumeError
from producer.events import RatingEvent
from producer.pacing import Pacer
from producer.settings import KafkaSettings, ProducerSettings
from recstream_base.cli import STOP_SIGNALS

__all__ = [
    "ReplayPlan",
    "ReplaySummary",
    "catalog_topic",
    "partition_for",
    "plan_replay",
    "run_replay",
]

Progress = Callable[[int, int, int], None]
"""Called as ``progress(sent, total, dataset_timestamp)`` every few thousand events."""


def catalog_topic(ratings_topic: str) -> str:
    """The compacted topic that carries the movie catalog next to a ratings topic."""
    return f"{ratings_topic}.movies"


def partition_for(user_id: int, partitions: int) -> int:
    """The partition Kafka's default (Java-compatible murmur2) partitioner gives this key."""
    return int((murmur2(str(user_id).encode()) & 0x7FFFFFFF) % partitions)


@dataclass(frozen=True)
class ReplayPlan:
    """What a replay will send: events in order, and which of them are already in the topic."""

    dataset: Dataset
    table: RatingTable
    partitions: npt.NDArray[np.int64]
    send: npt.NDArray[np.bool_]

    @property
    def to_send(self) -> int:
        """Events this replay will send."""
        return int(self.send.sum())

    @property
    def already_sent(self) -> int:
        """Events the topic holds from an earlier run of the same replay."""
        return len(self.table) - self.to_send


@dataclass
class ReplaySummary:
    """The end of a replay, for people and for tests."""

    source: str
    sent: int = 0
    resumed_over: int = 0
    bad_records: int = 0
    errors: int = 0
    catalog_sent: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False
    first_timestamp: int | None = None
    last_timestamp: int | None = None
    error_samples: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Events per second over the whole run."""
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def describe(self) -> str:
        """The summary lines printed at the end."""
        span = ""
        if self.first_timestamp is not None and self.last_timestamp is not None:
            span = f", dataset time {_date(self.first_timestamp)} .. {_date(self.last_timestamp)}"
        state = "interrupted" if self.interrupted else "done"
        return (
            f"{state}: sent {self.sent:,} events from {self.source} in {self.elapsed_s:.1f} s "
            f"({self.rate:,.0f} events/s{span}); already in topic {self.resumed_over:,}, "
            f"bad lines skipped {self.bad_records:,}, send errors {self.errors:,}, "
            f"catalog entries {self.catalog_sent:,}"
        )


def plan_replay(
    dataset: Dataset,
    partitions: int,
    *,
    from_timestamp: int | None = None,
    limit: int | None = None,
    last_in_topic: dict[int, bytes] | None = None,
) -> ReplayPlan:
    """Order, filter and partition the dataset; mark what an earlier run already sent.

    Raises:
        ResumeError: a last event of the topic is not part of this replay.
    """
    table = dataset.ratings.in_replay_order()
    if from_timestamp is not None:
        table = table.take(np.flatnonzero(table.timestamps >= from_timestamp))
    if limit is not None:
        table = table.take(slice(0, limit))
    users, inverse = np.unique(table.user_ids, return_inverse=True)
    user_partitions = np.array([partition_for(int(u), partitions) for u in users], dtype=np.int64)
    event_partitions = user_partitions[inverse] if len(table) else np.zeros(0, dtype=np.int64)
    send = np.ones(len(table), dtype=bool)
    for partition, value in (last_in_topic or {}).items():
        position = _position_of(dataset.name, table, value, partition)
        send &= ~((event_partitions == partition) & (np.arange(len(table)) <= position))
    return ReplayPlan(dataset, table, event_partitions, send)


def _position_of(source: str, table: RatingTable, value: bytes, partition: int) -> int:
    try:
        event = json.loads(value)
        key = (event["source"], event["user_id"], event["movie_id"], event["timestamp"])
    except (ValueError, KeyError, TypeError) as exc:
        msg = f"the last message of partition {partition} is not a rating event; use a fresh topic"
        raise ResumeError(msg) from exc
    if key[0] != source:
        msg = (
            f"the topic holds events from source {key[0]!r}, not {source!r}; use another "
            "topic, or --no-resume to append anyway"
        )
        raise ResumeError(msg)
    low = int(np.searchsorted(table.timestamps, key[3], side="left"))
    high = int(np.searchsorted(table.timestamps, key[3], side="right"))
    for position in range(low, high):
        if table.user_ids[position] == key[1] and table.movie_ids[position] == key[2]:
            return position
    msg = (
        f"the last event of partition {partition} (user {key[1]}, movie {key[2]}, timestamp "
        f"{key[3]}) is not in this replay; were --limit or --from-timestamp changed? "
        "Use the same options, another topic, or --no-resume"
    )
    raise ResumeError(msg)


def last_events(settings: KafkaSettings, topic: str, partitions: int) -> dict[int, bytes]:
    """The value of the last message in each non-empty partition of ``topic``."""
    consumer = KafkaConsumer(**client_options(settings), enable_auto_commit=False)
    try:
        assigned = [TopicPartition(topic, partition) for partition in range(partitions)]
        consumer.assign(assigned)
        ends = consumer.end_offsets(assigned)
        wanted = {tp: end - 1 for tp, end in ends.items() if end > 0}
        for tp, offset in wanted.items():
            consumer.seek(tp, offset)
        found: dict[int, bytes] = {}
        deadline = time.monotonic() + settings.request_timeout_s
        while len(found) < len(wanted) and time.monotonic() < deadline:
            for tp, messages in consumer.poll(timeout_ms=500).items():
                for message in messages:
                    if message.offset == wanted[tp]:
                        found[tp.partition] = message.value
        if len(found) < len(wanted):
            msg = f"could not read the last message of every partition of {topic} in time"
            raise ResumeError(msg)
        return found
    finally:
        consumer.close()


def open_producer(kafka: KafkaSettings, settings: ProducerSettings) -> KafkaProducer:
    """The idempotent, batching producer every replay (and its benchmark) uses."""
    return KafkaProducer(
        **client_options(kafka),
        client_id="recstream-producer",
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.linger_ms,
        batch_size=settings.batch_size_kb * 1024,
        compression_type=None if settings.compression == "none" else settings.compression,
    )


def prepare_topic(kafka: KafkaSettings) -> int:
    """Check the broker, create the ratings topic if absent; its partition count."""
    describe_cluster(kafka)
    create_topic(kafka, kafka.topic, configs={"retention.ms": "-1"})
    consumer = KafkaConsumer(**client_options(kafka))
    try:
        partitions = consumer.partitions_for_topic(kafka.topic)
    finally:
        consumer.close()
    if not partitions:
        msg = f"topic {kafka.topic} has no partitions visible to us"
        raise ProducerError(msg)
    return len(partitions)


def publish_catalog(producer: KafkaProducer, topic: str, dataset: Dataset) -> int:
    """Send every movie of the catalog, keyed by movie id, to the compacted catalog topic."""
    for movie in dataset.movies:
        value = json.dumps(
            {
                "source": dataset.name,
                "movie_id": movie.movie_id,
                "title": movie.title,
                "genres": list(movie.genres),
            },
            ensure_ascii=False,
        ).encode()
        producer.send(topic, key=str(movie.movie_id).encode(), value=value)
    return len(dataset.movies)


def run_replay(
    plan: ReplayPlan,
    producer: KafkaProducer,
    topic: str,
    pacer: Pacer,
    *,
    progress: Progress | None = None,
    progress_every: int = 2_000,
    clock: Callable[[], float] = time.monotonic,
) -> ReplaySummary:
    """Send the plan's events; Ctrl-C or SIGTERM stops cleanly after flushing what was sent.

    The signal only sets a flag that the loop checks between two sends: an interrupt raised
    inside ``producer.send`` could leave a record queued but uncounted, and the summary
    must say exactly how many events reached the topic.
    """
    summary = ReplaySummary(
        source=plan.dataset.label,
        resumed_over=plan.already_sent,
        bad_records=len(plan.dataset.bad_records),
    )

    def on_error(exc: BaseException) -> None:
        summary.errors += 1
        if len(summary.error_samples) < 5:
            summary.error_samples.append(f"{type(exc).__name__}: {exc}")

    began = clock()
    pending = np.flatnonzero(plan.send)
    total = len(pending)
    source = plan.dataset.name
    keys: dict[int, bytes] = {}
    sent = 0
    stop = threading.Event()
    restore = _stop_on_signal(stop)
    try:
        # The hot path: per event only pacing, encoding, sending and one counter.
        for user, movie, rating, stamp, partition in _pending(plan, pending):
            if stop.is_set():
                summary.interrupted = True
                break
            pacer.wait(stamp)
            key = keys.get(user)
            if key is None:
                key = keys[user] = str(user).encode()
            value = RatingEvent(source, user, movie, rating, stamp).to_json()
            producer.send(topic, key=key, value=value, partition=partition).add_errback(on_error)
            sent += 1
            if progress is not None and sent % progress_every == 0:
                progress(sent, total, stamp)
    finally:
        restore()
        producer.flush()
        summary.elapsed_s = clock() - began
        summary.sent = sent
        if sent:
            summary.first_timestamp = int(plan.table.timestamps[pending[0]])
            summary.last_timestamp = int(plan.table.timestamps[pending[sent - 1]])
    if progress is not None and summary.last_timestamp is not None:
        progress(summary.sent, total, summary.last_timestamp)
    return summary


def _pending(
    plan: ReplayPlan, index: npt.NDArray[np.intp]
) -> Iterator[tuple[int, int, float, int, int]]:
    # Plain Python values: the send loop is the hot path, numpy scalars slow it down.
    table = plan.table
    yield from zip(
        table.user_ids[index].tolist(),
        table.movie_ids[index].tolist(),
        table.ratings[index].tolist(),
        table.timestamps[index].tolist(),
        plan.partitions[index].tolist(),
        strict=True,
    )


def _date(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d")


def _stop_on_signal(stop: threading.Event) -> Callable[[], None]:
    """Make SIGINT and SIGTERM set ``stop`` (main thread only); returns what restores them."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {signum: signal.signal(signum, lambda _signum, _frame: stop.set())
                for signum in STOP_SIGNALS}  # fmt: skip

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore
