"""Replay order, filters, partitions, resume marks and pacing, without a broker or a real clock."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
from kafka.partitioner.default import DefaultPartitioner

from producer.dataset import Dataset, RatingTable
from producer.errors import ResumeError
from producer.events import RatingEvent
from producer.pacing import MaxPace, RatePace, SpeedPace
from producer.replay import partition_for, plan_replay, run_replay


def _dataset(rows: list[tuple[int, int, float, int]], name: str = "ml-100k") -> Dataset:
    users, movies, ratings, stamps = (list(column) for column in zip(*rows, strict=True))
    return Dataset(name, "test", RatingTable.from_columns(users, movies, ratings, stamps))


ROWS = [(3, 30, 4.0, 200), (1, 10, 5.0, 100), (2, 20, 3.0, 100), (1, 5, 2.0, 100), (2, 7, 1.0, 300)]


def test_order_is_timestamp_then_user_then_movie() -> None:
    plan = plan_replay(_dataset(ROWS), partitions=1)
    ordered = list(zip(plan.table.timestamps.tolist(), plan.table.user_ids.tolist(),
                       plan.table.movie_ids.tolist(), strict=True))  # fmt: skip
    assert ordered == [(100, 1, 5), (100, 1, 10), (100, 2, 20), (200, 3, 30), (300, 2, 7)]


def test_from_timestamp_and_limit() -> None:
    plan = plan_replay(_dataset(ROWS), partitions=1, from_timestamp=150, limit=1)
    assert plan.table.timestamps.tolist() == [200]


def test_partition_matches_kafka_default_partitioner() -> None:
    class _Cluster:
        def topics(self) -> set[str]:
            return {"t"}

        def partitions_for_topic(self, topic: str) -> set[int]:
            return set(range(6))

        def available_partitions_for_topic(self, topic: str) -> set[int]:
            return set(range(6))

    partitioner = DefaultPartitioner()
    for user in (1, 2, 42, 943, 6040, 123456):
        key = str(user).encode()
        expected = partitioner.partition("t", user, key, None, None, _Cluster())
        assert partition_for(user, 6) == expected


def test_resume_skips_exactly_what_each_partition_already_holds() -> None:
    rows = [(user, 100 + user, 3.0, 1000 + i) for i, user in enumerate([1, 2, 3, 1, 2, 3, 1, 2])]
    dataset = _dataset(rows)
    full = plan_replay(dataset, partitions=2)
    # Pretend the first five events were sent, then the process died.
    last: dict[int, bytes] = {}
    for position in range(5):
        last[int(full.partitions[position])] = RatingEvent(
            "ml-100k", int(full.table.user_ids[position]), int(full.table.movie_ids[position]),
            3.0, int(full.table.timestamps[position]),
        ).to_json()  # fmt: skip
    resumed = plan_replay(dataset, partitions=2, last_in_topic=last)
    assert resumed.send.tolist() == [False] * 5 + [True] * 3
    assert resumed.already_sent == 5


def test_resume_keeps_a_later_event_of_a_lagging_partition() -> None:
    first = 1
    other = next(user for user in range(2, 100) if partition_for(user, 2) != partition_for(1, 2))
    rows = [(first, 1, 3.0, 1), (other, 2, 3.0, 2), (first, 3, 3.0, 3), (other, 4, 3.0, 4)]
    dataset = _dataset(rows)
    # The first user's partition got through position 2; the other's stopped at position 1.
    last = {
        partition_for(first, 2): RatingEvent("ml-100k", first, 3, 3.0, 3).to_json(),
        partition_for(other, 2): RatingEvent("ml-100k", other, 2, 3.0, 2).to_json(),
    }
    resumed = plan_replay(dataset, partitions=2, last_in_topic=last)
    assert resumed.send.tolist() == [False, False, False, True]


def test_resume_refuses_another_source_or_an_unknown_event() -> None:
    dataset = _dataset(ROWS)
    with pytest.raises(ResumeError, match="source 'ml-1m', not 'ml-100k'"):
        plan_replay(dataset, 1, last_in_topic={0: RatingEvent("ml-1m", 1, 5, 2.0, 100).to_json()})
    with pytest.raises(ResumeError, match="not in this replay"):
        plan_replay(dataset, 1, last_in_topic={0: RatingEvent("ml-100k", 9, 9, 2.0, 100).to_json()})
    with pytest.raises(ResumeError, match="not a rating event"):
        plan_replay(dataset, 1, last_in_topic={0: json.dumps({"x": 1}).encode()})


class _FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def test_rate_pace_spaces_events_evenly() -> None:
    fake = _FakeClock()
    pace = RatePace(4.0, clock=fake.clock, sleep=fake.sleep)
    for stamp in range(5):
        pace.wait(stamp)
    assert fake.slept == [0.25, 0.25, 0.25, 0.25]


def test_speed_pace_follows_dataset_time() -> None:
    fake = _FakeClock()
    pace = SpeedPace(100.0, clock=fake.clock, sleep=fake.sleep)
    for stamp in (5000, 5000, 5100, 5400):
        pace.wait(stamp)
    assert fake.slept == [1.0, 3.0]
    assert fake.now == pytest.approx(1004.0)


def test_pacers_do_not_sleep_when_behind_or_for_tiny_gaps() -> None:
    fake = _FakeClock()
    pace = SpeedPace(1e9, clock=fake.clock, sleep=fake.sleep)
    for stamp in range(0, 1000, 10):
        pace.wait(stamp)
    MaxPace().wait(0)
    assert fake.slept == []


def test_synthetic_feed_is_labelled_deterministic_and_skewed() -> None:
    from producer.synthetic import synthetic_dataset

    first = synthetic_dataset(20_000, seed=7)
    again = synthetic_dataset(20_000, seed=7)
    assert first.name == "synthetic"
    assert "synthetic" in first.label
    assert np.array_equal(first.ratings.movie_ids, again.ratings.movie_ids)
    assert set(np.unique(first.ratings.ratings).tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    counts = np.bincount(first.ratings.movie_ids)
    top_tenth = np.sort(counts)[::-1][: max(1, len(counts) // 10)].sum()
    assert top_tenth > 0.3 * len(first.ratings)  # popularity skew was planted
    catalog = {movie.movie_id for movie in first.movies}
    assert set(np.unique(first.ratings.movie_ids).tolist()) <= catalog
    # Re-ratings are planted, but never two of one movie by one user in the same second:
    # the streaming job would take the second for a repeated event.
    table = first.ratings
    events = np.stack([table.user_ids, table.movie_ids, table.timestamps], axis=1)
    pairs = np.unique(events[:, :2], axis=0)
    assert len(pairs) < len(table) == len(np.unique(events, axis=0))
    with pytest.raises(ValueError, match="at least 1 event"):
        synthetic_dataset(0)


def _first_appearances(arrivals: float) -> np.ndarray:
    """Where in the time-ordered feed each user rates first, as a share of the feed."""
    from producer.synthetic import synthetic_dataset

    table = synthetic_dataset(20_000, users=400, seed=7, arrivals=arrivals).ratings
    in_order = table.user_ids[np.argsort(table.timestamps, kind="stable")]
    _, first = np.unique(in_order, return_index=True)
    return first / len(in_order)


def test_synthetic_users_arrive_over_the_share_of_the_span_asked() -> None:
    from producer.synthetic import synthetic_dataset

    all_on_day_one, spread = _first_appearances(0.0), _first_appearances(0.8)
    # Everyone starts on day one: most users rate within the first fifth of the feed
    # (the rarest raters come later); spread over 80% of the span, a fraction of them do.
    assert (all_on_day_one < 0.2).mean() > 0.7
    assert (spread < 0.2).mean() < 0.4
    with pytest.raises(ValueError, match="arrivals is the share"):
        synthetic_dataset(100, arrivals=1.5)


class _SignallingProducer:
    """Takes sends in memory; sends SIGTERM to this process at the ``at``-th one."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.sent: list[bytes] = []
        self.flushed = 0

    def send(self, topic: str, **record: object) -> _SignallingProducer:
        self.sent.append(record["value"])  # type: ignore[arg-type]
        if len(self.sent) == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return self

    def add_errback(self, _callback: object) -> None:
        """No send fails in memory."""

    def flush(self) -> None:
        self.flushed += 1


def test_sigterm_stops_the_replay_between_sends_flushed_and_counted() -> None:
    before = signal.getsignal(signal.SIGTERM)
    producer = _SignallingProducer(at=3)
    plan = plan_replay(_dataset(ROWS), partitions=1)
    summary = run_replay(plan, producer, "ratings", MaxPace())
    assert summary.interrupted
    assert summary.sent == len(producer.sent) == 3  # counted exactly, the rest not sent
    assert producer.flushed == 1
    assert signal.getsignal(signal.SIGTERM) is before  # the handler given back
