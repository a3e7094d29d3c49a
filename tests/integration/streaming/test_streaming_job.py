"""The streaming updater end to end: real Kafka, Spark and Redis, real MovieLens 100K."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import redis
from kafka import KafkaProducer
from pyspark.sql import SparkSession

from producer.broker import client_options, create_topic, delete_topic
from producer.events import RatingEvent
from producer.replay import catalog_topic
from serving.client import RecommendationClient
from serving.connection import open_redis
from serving.layout import RedisLayout, decode_list
from serving.settings import RedisSettings
from streaming.ingest.store import BatchCommit, RatingStore
from streaming.job import StreamingJob
from streaming.settings import StreamSettings
from tests.conftest import (
    Services,
    counts,
    fault_line,
    job_env,
    model_settings,
    replay_feed,
    subprocess_env,
)

pytestmark = pytest.mark.integration

ML100K_EVENTS = 100_000


def _ratings(source: Path) -> list[tuple[int, int, float, int]]:
    rows = [line.split("\t") for line in (source / "u.data").read_text().splitlines()]
    ordered = sorted((int(t), int(u), int(m), float(r)) for u, m, r, t in rows)
    return [(u, m, r, t) for t, u, m, r in ordered]


def _check_lists(client: redis.Redis, layout: RedisLayout, rated: dict[int, set[int]]) -> int:
    version = int(client.get(layout.current) or 0)
    stored = client.hgetall(layout.lists(version))
    lists = {int(user): decode_list(value) for user, value in stored.items()}
    assert set(lists) == set(rated), "every user who rated has a list, and only they"
    for user, listed in lists.items():
        movies = {movie for movie, _ in listed.items}
        assert not movies & rated[user], f"user {user}'s list holds a movie they rated"
        assert len(listed.items) == 100
    return version


@pytest.fixture
def ratings_topic(services: Services, kafka_topic: str) -> Iterator[str]:
    yield kafka_topic
    delete_topic(services.kafka, catalog_topic(kafka_topic))


def test_ml100k_in_two_halves_publishes_every_user_and_versions_grow(
    spark: SparkSession,
    services: Services,
    redis_settings: RedisSettings,
    ml100k_dir: Path,
    ratings_topic: str,
    tmp_path: Path,
) -> None:
    kafka = services.kafka.model_copy(update={"topic": ratings_topic})
    stream = StreamSettings(state_dir=tmp_path / "state", max_offsets_per_trigger=30_000)
    model = model_settings(retrain_every_ratings=40_000, min_ratings=1_000, max_iter=5)
    everything = _ratings(ml100k_dir)
    layout = RedisLayout(redis_settings.key_prefix)
    client = open_redis(redis_settings)
    try:
        versions = []
        for half, limit in ((1, "50000"), (2, None)):
            replay_feed(services, ml100k_dir, ratings_topic, *(["--limit", limit] if limit else []))
            job = StreamingJob(spark, kafka, redis_settings, stream, model)
            try:
                job.start(available_now=True).awaitTermination()
            finally:
                job.close()
            sent = everything[: 50_000 * half]
            rated: dict[int, set[int]] = {}
            for user, movie, _, _ in sent:
                rated.setdefault(user, set()).add(movie)
            versions.append(_check_lists(client, layout, rated))
            assert sum(r.valid for r in job.reports) == 50_000
            assert all(r.invalid == 0 for r in job.reports)
            meta = json.loads(client.get(layout.meta(versions[-1])) or b"{}")
            evaluation = meta["evaluation"]
            # the stars' rating model is scored, not the lists' implicit ALS
            assert evaluation["rmse_model"] == "rating-model"
            assert evaluation["rmse"] < 1.3
            assert evaluation["model"]["ndcg"] > 0
            assert evaluation["popular"]["precision"] > 0
            assert client.hlen(layout.catalog) == 1682
        assert versions[1] > versions[0] > 0
        commits = job.store.commits()
        # test-then-learn, live: every rating that came once a model was in use was
        # checked, at least the whole second half (the first model was built beside the
        # first half's batches)
        checked, hits = sum(c.checked for c in commits), sum(c.hits_at_10 for c in commits)
        assert checked >= 50_000
        # better than ten random unrated movies (ML-100K has 1,682), and below certainty
        assert 10 / 1_682 < hits / checked < 1
        # the popular list the same users would have had is scored beside it; with
        # batches of 20,000-30,000 ratings, as here, neither list follows a session, and
        # they score alike (0.0506 and 0.0507 in one run): the prequential replay at 1 s
        # micro-batches is where the lists beat it
        popular_hits = sum(c.popular_hits_at_10 for c in commits)
        print(f"live hit@10 {hits / checked:.4f}, popular {popular_hits / checked:.4f}")
        assert 10 / 1_682 < popular_hits / checked < 1
        for record in commits:
            first, last = record.rating_time
            assert first <= last
            assert 0 <= record.freshness_s[0] <= record.freshness_s[1]
        with RecommendationClient(redis_settings) as lookups:  # serving reads what it wrote
            found = lookups.recommendations(everything[0][0], n=10)
            unknown = lookups.recommendations(999_999, n=5)
            info = lookups.model_info()
            nearest = lookups.similar(found.movies[0].movie_id, n=5)  # written with the version
            visitor = lookups.for_visitor([(m.movie_id, 5.0) for m in found.movies[:3]], n=5)
            explained = lookups.recommendations(everything[0][0], n=10, explain=True)
        reasons = [m.because for m in explained.movies if m.because is not None]
        assert len(reasons) >= 5  # "because you rated …": the movie behind most of them
        assert all(r.movie_id in rated[everything[0][0]] and r.title for r in reasons)
        assert (visitor.source, visitor.model_version, len(visitor.movies)) == (
            "anonymous", versions[1], 5,
        )  # fmt: skip
        assert (nearest.model_version, len(nearest.movies)) == (versions[1], 5)
        assert all(-1 <= movie.similarity <= 1 and movie.title for movie in nearest.movies)
        assert (found.model_version, found.source, len(found.movies)) == (versions[1], "model", 10)
        assert all(movie.title for movie in found.movies)  # the catalog came with the replay
        for entry in (*found.movies, *unknown.movies):  # predicted stars beside each movie
            assert entry.predicted_rating is not None and 1 <= entry.predicted_rating <= 5
        assert not {m.movie_id for m in found.movies} & rated[everything[0][0]]
        assert (unknown.source, len(unknown.movies)) == ("popular", 5)
        assert info.version == versions[1]
        assert (info.ratings, info.evaluation) == (meta["ratings"], meta["evaluation"])
    finally:
        client.close()


def _altered(user: int, movie: int, **changes: object) -> bytes:
    event = json.loads(RatingEvent("ml-100k", user, movie, 3.0, 880_000_000).to_json())
    return json.dumps({**event, **changes}).encode()


def _poison() -> list[tuple[bytes | None, bytes, str]]:
    """(key, value, the reason it must be dead-lettered with): every kind of bad message."""
    far_future = 4_000_000_000  # the year 2096
    huge = 10**12
    return [
        (b"1", b"not json at all", "not a JSON object"),
        (b"1", b"[1, 2, 3]", "not a JSON object"),  # JSON, but not an object
        (b"1", b"", "empty message"),
        (b"2", json.dumps({"schema_version": 1}).encode(), "missing field event_id"),
        (b"2", _altered(2, 7, rating=None), "missing field rating"),
        (b"3", _altered(3, 7, user_id="three"), "field user_id has the wrong type"),
        (b"3", _altered(3, 7, timestamp=[1]), "field timestamp has the wrong type"),
        (b"4", RatingEvent("ml-100k", 4, 5, 9.0, 880_000_000).to_json(),
         "rating 9.0 is off the scale of source ml-100k"),
        (b"4", RatingEvent("ml-100k", 4, 5, 3.5, 880_000_000).to_json(),
         "rating 3.5 is off the scale of source ml-100k"),
        (b"4", RatingEvent("ml-100k", 4, -7, 3.0, 880_000_000).to_json(),
         "movie_id outside 1..2147483647"),
        (str(huge).encode(), RatingEvent("ml-100k", huge, 5, 3.0, 880_000_000).to_json(),
         "user_id outside 1..2147483647"),
        (b"5", RatingEvent("ml-100k", 5, 5, 3.0, far_future).to_json(),
         "timestamp before 1970 or more than a day in the future"),
        (b"5", _altered(5, 8, padding="x" * 1_000_000), "message larger than 65536 bytes"),
        (None, RatingEvent("ml-100k", 5, 9, 3.0, 880_000_000).to_json(),
         "message has no key (it must be the user id)"),
        (b"6", _altered(6, 7, schema_version=99), "unknown schema version 99"),
        (b"6", _altered(6, 7, source="ml-50m"), "unknown source ml-50m"),
        (b"7", RatingEvent("ml-100k", 8, 7, 3.0, 880_000_000).to_json(),
         "message key is not the user id"),
    ]  # fmt: skip


def test_every_kind_of_bad_record_is_dead_lettered_and_the_counts_reconcile(
    spark: SparkSession,
    services: Services,
    redis_settings: RedisSettings,
    tmp_path: Path,
) -> None:
    good = [(user, movie, float(1 + (user * movie) % 5)) for user in range(1, 31)
            for movie in range(1, 21) if (user + movie) % 3]  # fmt: skip
    good_values = [
        (
            str(user).encode(),
            RatingEvent("ml-100k", user, movie, rating, 880_000_000 + user).to_json(),
        )
        for user, movie, rating in good
    ]
    duplicate = "duplicate event (its user, movie and timestamp arrived before)"
    # The first run: good events, every kind of poison, and a good event sent twice.
    first: list[tuple[bytes | None, bytes]] = [
        *good_values,
        *[(key, value) for key, value, _ in _poison()],
        good_values[3],
    ]
    expected = [*(reason for _, _, reason in _poison()), duplicate]
    # The second run (a new job on the same state): a late copy of an event stored by
    # the first run, a new good event, and that one again.
    fresh = (b"31", RatingEvent("ml-100k", 31, 1, 4.0, 880_000_100).to_json())
    second: list[tuple[bytes | None, bytes]] = [good_values[0], fresh, fresh]
    # Kafka's default limit is 1 MB per message: this topic takes the 1 MB one too.
    topic = f"test-poison-{uuid.uuid4().hex[:8]}"
    create_topic(
        services.kafka, topic, partitions=2, replication_factor=1,
        configs={"max.message.bytes": str(2 * 1024 * 1024)},
    )  # fmt: skip
    kafka = services.kafka.model_copy(update={"topic": topic})
    stream = StreamSettings(state_dir=tmp_path / "state", max_offsets_per_trigger=400)
    model = model_settings(min_ratings=100, max_iter=3, rank=4)
    commits: list[BatchCommit] = []
    try:
        for messages in (first, second):
            _send(services, topic, messages)
            job = StreamingJob(spark, kafka, redis_settings, stream, model)
            try:
                job.start(available_now=True).awaitTermination()
            finally:
                job.close()
        commits = job.store.commits()
        letters = job.store.dead_letters().collect()
    finally:
        delete_topic(services.kafka, topic)
        delete_topic(services.kafka, catalog_topic(topic))

    sent = len(first) + len(second)
    valid = sum(c.valid for c in commits)
    invalid = sum(c.invalid for c in commits)
    assert (valid, invalid) == (len(good) + 1, len(expected) + 2)
    assert valid + invalid == sent
    reasons = Counter(reason for c in commits for reason, n in c.invalid_reasons.items()
                      for _ in range(n))  # fmt: skip
    assert reasons == Counter([*expected, duplicate, duplicate])
    # Each dead letter keeps its raw bytes, its reason and where it came from.
    kept = Counter((bytes(row["raw"]), row["reason"]) for row in letters)
    assert kept == Counter(
        [(value, reason) for (_, value, reason) in _poison()]
        + [(good_values[3][1], duplicate), (good_values[0][1], duplicate), (fresh[1], duplicate)]
    )
    assert {row["topic"] for row in letters} == {topic}
    assert all(row["offset"] >= 0 for row in letters)
    rows = job.store.stored_rows()
    stored, distinct = counts(rows)
    assert stored == distinct == len(good) + 1  # every good event once, no duplicate stored
    print(
        f"FAULT | {len(_poison())} kinds of bad message and 3 duplicate events | sent {sent} "
        f"| stored {stored} | dead letters {len(letters)} | lost {sent - stored - len(letters)} "
        f"| duplicated {stored - distinct}"
    )
    layout = RedisLayout(redis_settings.key_prefix)
    client = open_redis(redis_settings)
    try:
        version = int(client.get(layout.current) or 0)
        assert client.hlen(layout.lists(version)) == 31  # every good user has a list
    finally:
        client.close()


def _send(services: Services, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = KafkaProducer(**client_options(services.kafka), max_request_size=2 * 1024 * 1024)
    try:
        for key, value in messages:
            producer.send(topic, key=key, value=value)
        producer.flush()
    finally:
        producer.close()


def _job_env(
    services: Services, redis_settings: RedisSettings, topic: str, tmp: Path
) -> dict[str, str]:
    return job_env(
        services, redis_settings, topic, tmp,
        RECSTREAM_STREAM_MAX_OFFSETS_PER_TRIGGER="8000",
        RECSTREAM_STREAM_TRIGGER_INTERVAL_S="0.5",
        RECSTREAM_MODEL_MIN_RATINGS="10000",
        RECSTREAM_MODEL_RETRAIN_EVERY_RATINGS="25000",
        RECSTREAM_MODEL_MAX_ITER="3",
    )  # fmt: skip


class _VersionWatch:
    """Polls ``p:current`` in a thread and keeps every value it saw, in order."""

    def __init__(self, redis_settings: RedisSettings) -> None:
        self.seen: list[int] = []
        self._client = open_redis(redis_settings)
        self._key = RedisLayout(redis_settings.key_prefix).current
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            value = self._client.get(self._key)
            if value is not None and (not self.seen or self.seen[-1] != int(value)):
                self.seen.append(int(value))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._client.close()


def _building(commits: Path, models: Path) -> int | None:
    """The version a committed batch started building and the job has not saved yet."""
    for record in commits.glob("*.json"):
        batch = json.loads(record.read_text())
        version = batch["batch_id"] + 1
        if batch["retrained"] and not (models / f"v{version}.npz").exists():
            return int(version)
    return None


@pytest.mark.slow
def test_job_killed_three_times_mid_replay_loses_and_repeats_nothing(
    spark: SparkSession,
    services: Services,
    redis_settings: RedisSettings,
    ml100k_dir: Path,
    ratings_topic: str,
    tmp_path: Path,
) -> None:
    env = _job_env(services, redis_settings, ratings_topic, tmp_path)
    # Each start and each build compacts what two batches or more stored: the kills meet
    # compactions too.
    env["RECSTREAM_STREAM_COMPACT_MIN_BATCHES"] = "2"
    commits = tmp_path / "state" / "store" / "commits"
    command = [sys.executable, "-m", "streaming", "run"]
    producer_env = subprocess_env()
    producer_env["RECSTREAM_KAFKA_BOOTSTRAP_SERVERS"] = services.kafka.bootstrap_servers
    replay = subprocess.Popen(
        [sys.executable, "-m", "producer", "replay", "--source", str(ml100k_dir), "--topic",
         ratings_topic, "--no-progress", "--rate", "2000"],
        env=producer_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    rng = random.Random(20261124)
    watch = _VersionWatch(redis_settings)
    recovery: list[float] = []
    killed_at: float | None = None
    killed_building: int | None = None
    models = tmp_path / "state" / "models"
    try:
        # Run, wait a random while after its first commit (the first time: until a version
        # is building beside the stream), SIGKILL.
        for attempt in range(3):
            before = len(list(commits.glob("*.json")))
            job = subprocess.Popen(
                command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                start_new_session=True,
            )  # fmt: skip
            try:
                deadline = time.monotonic() + 240
                while len(list(commits.glob("*.json"))) <= before:
                    assert job.poll() is None, job.communicate()[1]
                    assert time.monotonic() < deadline, "the job committed no batch"
                    time.sleep(0.1)
                if killed_at is not None:
                    recovery.append(time.monotonic() - killed_at)
                while attempt == 0 and killed_building is None:
                    assert job.poll() is None, job.communicate()[1]
                    assert time.monotonic() < deadline, "no version was seen building"
                    killed_building = _building(commits, models)
                    time.sleep(0.05)
                if attempt:
                    time.sleep(rng.uniform(0.5, 6.0))
            finally:
                os.killpg(job.pid, signal.SIGKILL)  # the driver and its JVM, no clean-up
                killed_at = time.monotonic()
                job.communicate(timeout=60)
        assert replay.wait(timeout=300) == 0, replay.communicate()[1]
        assert len(list(commits.glob("*.json"))) < 50, "the kills came after the end"
        last = subprocess.run(
            [*command, "--available-now"], env=env, capture_output=True, text=True,
            timeout=600, check=False,
        )  # fmt: skip
        assert last.returncode == 0, last.stderr
        assert "batch " in last.stderr  # one log line per micro-batch
    finally:
        replay.kill()
        watch.close()

    store = RatingStore(spark, tmp_path / "state" / "store")
    rows = store.stored_rows()
    stored, distinct = counts(rows)
    assert (stored, distinct) == (ML100K_EVENTS, ML100K_EVENTS)  # nothing lost, nothing twice
    assert store.ratings().count() == ML100K_EVENTS
    assert store.segments(), "no compaction ran"
    batches = [c.batch_id for c in store.commits()]
    assert batches == list(range(len(batches)))
    assert sum(c.valid for c in store.commits()) == ML100K_EVENTS
    assert len(watch.seen) >= 2 and watch.seen == sorted(watch.seen), watch.seen
    rated: dict[int, set[int]] = {}
    for user, movie, _, _ in _ratings(ml100k_dir):
        rated.setdefault(user, set()).add(movie)
    client = open_redis(redis_settings)
    layout = RedisLayout(redis_settings.key_prefix)
    try:
        assert _check_lists(client, layout, rated) == max(watch.seen)
        # what a killed build wrote ahead of its switch went at a later switch: every
        # version with keys in Redis is a published one
        published = {int(v) for v in cast(list[bytes], client.zrange(layout.versions, 0, -1))}
        with_keys = {
            int(key.decode().removeprefix(f"{layout.tag}:v").split(":")[0])
            for key in client.scan_iter(match=f"{layout.tag}:v[0-9]*")
        }
        assert with_keys <= published, (with_keys, published)
    finally:
        client.close()
    print(
        fault_line("job SIGKILLed 3 times", ML100K_EVENTS, stored, distinct, max(recovery))
        + f" | versions seen {watch.seen} | first kill while version {killed_building} built"
    )
