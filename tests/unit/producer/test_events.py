"""The rating event contract, pinned byte for byte."""

from __future__ import annotations

import json

import pytest

from producer.events import RATING_SCALES, SCHEMA_VERSION, RatingEvent, RatingScale, event_id

# The first line of ML-100K's u.data ("196 242 3 881250949") as an event. uuid5 is a
# standard, so the id is the same on every machine; a change here breaks consumers.
GOLDEN = (
    b'{"schema_version":1,"event_id":"403d8cc7-bbb3-5479-be82-af48ee171058",'
    b'"source":"ml-100k","user_id":196,"movie_id":242,"rating":3.0,"timestamp":881250949}'
)


def test_event_json_is_pinned() -> None:
    event = RatingEvent(source="ml-100k", user_id=196, movie_id=242, rating=3, timestamp=881250949)
    assert event.to_json() == GOLDEN
    assert event.event_id == "403d8cc7-bbb3-5479-be82-af48ee171058"
    assert event.key == b"196"


def test_event_id_is_deterministic_and_distinguishes_every_field() -> None:
    base = event_id("ml-100k", 196, 242, 881250949)
    assert base == event_id("ml-100k", 196, 242, 881250949)
    others = {
        event_id("ml-1m", 196, 242, 881250949),
        event_id("ml-100k", 197, 242, 881250949),
        event_id("ml-100k", 196, 243, 881250949),
        event_id("ml-100k", 196, 242, 881250950),
    }
    assert base not in others
    assert len(others) == 4


def test_event_id_is_the_standard_uuid5() -> None:
    import random
    import uuid

    from producer.events import EVENT_NAMESPACE

    rng = random.Random(3)
    for _ in range(2_000):
        source = rng.choice(["ml-100k", "ml-1m", "synthetic"])
        user, movie = rng.randint(1, 2**31 - 1), rng.randint(1, 2**31 - 1)
        stamp = rng.randint(0, 2**40)
        expected = uuid.uuid5(EVENT_NAMESPACE, f"{source}:{user}:{movie}:{stamp}")
        assert event_id(source, user, movie, stamp) == str(expected)


def test_json_round_trip_and_half_stars() -> None:
    event = RatingEvent("ml-latest-small", 1, 2, 3.5, 964982703)
    decoded = json.loads(event.to_json())
    assert decoded["rating"] == 3.5
    assert decoded["schema_version"] == SCHEMA_VERSION
    assert RatingEvent.from_json(event.to_json()) == event


@pytest.mark.parametrize(
    ("scale", "inside", "outside"),
    [
        (RATING_SCALES["ml-100k"], [1.0, 3.0, 5.0], [0.0, 0.5, 3.5, 6.0]),
        (RATING_SCALES["ml-latest"], [0.5, 3.5, 5.0], [0.0, 0.25, 5.5]),
    ],
)
def test_rating_scales(scale: RatingScale, inside: list[float], outside: list[float]) -> None:
    assert all(scale.contains(value) for value in inside)
    assert not any(scale.contains(value) for value in outside)
