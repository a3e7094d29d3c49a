"""POST /ratings' pure logic: a body becomes checked events; the token; the sender's retries."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import KafkaConnectionError, KafkaTimeoutError
from pydantic import SecretStr, ValidationError

from producer.events import RatingEvent
from producer.settings import KafkaSettings
from serving.errors import (
    IngestOffError,
    IngestRejectedError,
    IngestTokenError,
    KafkaUnavailableError,
)
from serving.ingest import MAX_RATINGS, RatingSender, check_token, events_from_body
from serving.settings import ApiSettings

NOW = 1_700_000_000


def _events(body: Any) -> list[RatingEvent]:
    return events_from_body(body, default_source="ml-1m", now_s=NOW)


def test_one_rating_or_a_list_becomes_contract_events() -> None:
    assert _events({"user_id": 7, "movie_id": 42, "rating": 4}) == [
        RatingEvent("ml-1m", 7, 42, 4.0, NOW)
    ]
    body = [
        {"user_id": 7, "movie_id": 42, "rating": 4.5, "source": "ml-latest", "timestamp": 5},
        {"user_id": 8, "movie_id": 1, "rating": 1, "timestamp": None, "source": None},
    ]
    assert _events(body) == [
        RatingEvent("ml-latest", 7, 42, 4.5, 5),
        RatingEvent("ml-1m", 8, 1, 1.0, NOW),
    ]


def test_the_same_rating_sent_twice_gets_the_same_event_id() -> None:
    body = {"user_id": 7, "movie_id": 42, "rating": 4, "timestamp": 881250949}
    first, again = _events(body)[0], _events(dict(body))[0]
    assert first.event_id == again.event_id == RatingEvent("ml-1m", 7, 42, 4.0, 881250949).event_id


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "the body holds no rating; send one object or a list"),
        ([{"user_id": 1, "movie_id": 1, "rating": 1}] * (MAX_RATINGS + 1),
         f"the body holds {MAX_RATINGS + 1} ratings; send at most {MAX_RATINGS} per request"),
        ([{"user_id": 1, "movie_id": 1, "rating": 1}, 5], "rating 1 is not a JSON object"),
        ({"user_id": 1, "movie_id": 1, "rating": 1, "event_id": "x"},
         "rating 0: unknown field 'event_id'; a rating has user_id, movie_id, rating and "
         "optionally timestamp and source"),
        ({"movie_id": 1, "rating": 1}, "rating 0: missing field user_id"),
        ({"user_id": "7", "movie_id": 1, "rating": 1},
         "rating 0: field user_id has the wrong type"),
        ({"user_id": 7, "movie_id": 1, "rating": True},
         "rating 0: field rating has the wrong type"),
        ({"user_id": 0, "movie_id": 1, "rating": 1}, "rating 0: user_id outside 1..2147483647"),
        ({"user_id": 7, "movie_id": 2**31, "rating": 1},
         "rating 0: movie_id outside 1..2147483647"),
        ({"user_id": 7, "movie_id": 1, "rating": 4.5},
         "rating 0: rating 4.5 is off the scale of source ml-1m"),
        ({"user_id": 7, "movie_id": 1, "rating": 4, "source": "netflix"},
         "rating 0: unknown source netflix"),
        ({"user_id": 7, "movie_id": 1, "rating": 4, "timestamp": NOW + 2 * 86_400},
         "rating 0: timestamp before 1970 or more than a day in the future"),
        ({"user_id": 7, "movie_id": 1, "rating": 4, "timestamp": 1.5},
         "rating 0: field timestamp has the wrong type"),
    ],
)  # fmt: skip
def test_a_bad_body_is_refused_naming_the_rating_and_the_field(body: Any, reason: str) -> None:
    with pytest.raises(IngestRejectedError) as refused:
        _events(body)
    assert str(refused.value) == reason


def test_writes_need_the_configured_token() -> None:
    token = SecretStr("s3cret-token")
    check_token(token, "Bearer s3cret-token")
    check_token(token, "bearer  s3cret-token")
    with pytest.raises(IngestOffError):
        check_token(None, "Bearer s3cret-token")
    for header in (None, "", "Bearer", "Bearer other", "Basic s3cret-token", "s3cret-token"):
        with pytest.raises(IngestTokenError) as refused:
            check_token(token, header)
        assert "s3cret-token" not in str(refused.value)
        assert "s3cret-token" not in (refused.value.public_message or "")


class _Future:
    def __init__(self, failure: Exception | None) -> None:
        self.failure = failure

    def get(self, timeout: float) -> None:
        if self.failure is not None:
            raise self.failure


class _Producer:
    """Stands in for kafka-python's producer: records sends, fails when told to."""

    def __init__(self, failure: Exception | None = None) -> None:
        self.failure = failure
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.closed = False

    def send(self, topic: str, key: bytes, value: bytes) -> _Future:
        self.sent.append((topic, key, value))
        return _Future(self.failure)

    def close(self, timeout: float) -> None:
        self.closed = True


def test_the_sender_opens_once_and_reopens_after_kafka_fails() -> None:
    producers = [_Producer(KafkaTimeoutError("no ack")), _Producer()]
    opened: list[dict[str, Any]] = []

    def opener(options: dict[str, Any]) -> Any:
        opened.append(options)
        return producers[len(opened) - 1]

    sender = RatingSender(KafkaSettings(topic="rated"), 2.0, opener=opener)
    events = [RatingEvent("ml-1m", 7, 42, 4.0, NOW), RatingEvent("ml-1m", 8, 1, 1.0, NOW)]
    with pytest.raises(KafkaUnavailableError):
        sender.send(events)
    assert producers[0].closed
    sender.send(events)
    sender.send(events[:1])
    assert len(opened) == 2
    assert opened[0]["enable_idempotence"] is True
    assert opened[0]["acks"] == "all"
    assert opened[0]["max_block_ms"] == 2000
    assert producers[1].sent == [
        ("rated", b"7", events[0].to_json()),
        ("rated", b"8", events[1].to_json()),
        ("rated", b"7", events[0].to_json()),
    ]
    sender.close()
    assert producers[1].closed


def test_no_broker_at_all_is_kafka_unavailable() -> None:
    def opener(options: dict[str, Any]) -> Any:
        msg = "no broker"
        raise KafkaConnectionError(msg)

    sender = RatingSender(KafkaSettings(), 1.0, opener=opener)
    with pytest.raises(KafkaUnavailableError) as refused:
        sender.send([RatingEvent("ml-1m", 7, 42, 4.0, NOW)])
    assert refused.value.status_code == 503
    assert refused.value.retry_later


def test_settings_refuse_a_short_token_and_an_unknown_source() -> None:
    with pytest.raises(ValidationError, match="at least 16 characters") as short:
        ApiSettings(ingest_token=SecretStr("short"))
    assert "'short'" not in str(short.value)  # the value stays masked
    with pytest.raises(ValidationError, match="ingest_source must be one of ml-100k"):
        ApiSettings(ingest_source="netflix")
    assert ApiSettings().ingest_token is None  # off by default
    assert ApiSettings(ingest_token="").ingest_token is None  # and when given empty
