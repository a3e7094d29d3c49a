"""POST /ratings against a real Kafka: events of the contract, the token, Kafka down."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, TopicPartition
from pydantic import SecretStr

from producer.broker import client_options
from producer.events import RatingEvent
from producer.settings import KafkaSettings
from serving.api import create_app
from serving.settings import ApiSettings, RedisSettings
from tests.conftest import Services

pytestmark = pytest.mark.integration

TOKEN = "tok-9d1e7c2b-ingest"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _topic_records(kafka: KafkaSettings, topic: str) -> list[tuple[bytes, bytes]]:
    """Every record of ``topic`` (two partitions), in no particular order."""
    consumer = KafkaConsumer(**client_options(kafka), enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in range(2)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        found: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + 30
        while sum(consumer.position(tp) for tp in partitions) < sum(ends.values()):
            assert time.monotonic() < deadline, "the topic was not read within 30 s"
            for messages in consumer.poll(timeout_ms=500).values():
                found += [(message.key, message.value) for message in messages]
        return found
    finally:
        consumer.close()


@pytest.fixture
def ingest(
    services: Services, kafka_topic: str, redis_settings: RedisSettings
) -> Iterator[TestClient]:
    kafka = services.kafka.model_copy(update={"topic": kafka_topic})
    api = ApiSettings(ingest_token=SecretStr(TOKEN), ingest_source="ml-100k")
    app = create_app(redis_settings, api, kafka)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_posted_ratings_reach_the_topic_as_contract_events(
    ingest: TestClient, services: Services, kafka_topic: str
) -> None:
    body = [
        {"user_id": 196, "movie_id": 242, "rating": 3, "timestamp": 881250949},
        {"user_id": 186, "movie_id": 302, "rating": 3.0, "timestamp": 891717742},
    ]
    answer = ingest.post("/ratings", json=body, headers=AUTH)
    assert answer.status_code == 202, answer.text
    expected = [
        RatingEvent("ml-100k", 196, 242, 3.0, 881250949),
        RatingEvent("ml-100k", 186, 302, 3.0, 891717742),
    ]
    assert answer.json() == {"accepted": 2, "event_ids": [e.event_id for e in expected]}
    one = ingest.post("/ratings", json={"user_id": 7, "movie_id": 1, "rating": 5}, headers=AUTH)
    assert one.status_code == 202, one.text

    records = _topic_records(services.kafka, kafka_topic)
    assert sorted(r for r in records if r[0] != b"7") == sorted(
        (event.key, event.to_json()) for event in expected
    )
    (latest,) = [RatingEvent.from_json(value) for key, value in records if key == b"7"]
    assert (latest.source, latest.user_id, latest.movie_id, latest.rating) == (
        "ml-100k", 7, 1, 5.0,
    )  # fmt: skip
    assert abs(latest.timestamp - time.time()) < 60
    assert one.json()["event_ids"] == [latest.event_id]


def test_a_refused_body_names_the_field_and_sends_nothing(
    ingest: TestClient, services: Services, kafka_topic: str
) -> None:
    body = [
        {"user_id": 196, "movie_id": 242, "rating": 3},
        {"user_id": 196, "movie_id": 242, "rating": 3.5},
    ]
    answer = ingest.post("/ratings", json=body, headers=AUTH)
    assert answer.status_code == 422
    assert answer.json() == {"detail": "rating 1: rating 3.5 is off the scale of source ml-100k"}
    garbled = ingest.post("/ratings", content=b"{not json", headers=AUTH)
    assert garbled.status_code == 422
    assert garbled.json()["detail"].startswith("the body is not JSON")
    huge = ingest.post("/ratings", content=b"[" + b" " * (1024 * 1024) + b"]", headers=AUTH)
    assert huge.status_code == 422
    assert huge.json()["detail"].startswith("the body is larger than 1048576 bytes")
    assert _topic_records(services.kafka, kafka_topic) == []


def test_writes_need_the_token_which_never_shows(
    ingest: TestClient, redis_settings: RedisSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = {"user_id": 196, "movie_id": 242, "rating": 3}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        answer = ingest.post("/ratings", json=body, headers=headers)
        assert answer.status_code == 401, answer.text
        assert "RECSTREAM_API_INGEST_TOKEN" in answer.json()["detail"]
        assert TOKEN not in answer.text
    with TestClient(create_app(redis_settings, ApiSettings())) as off:
        answer = off.post("/ratings", json=body, headers=AUTH)
        assert answer.status_code == 403
        assert "RECSTREAM_API_INGEST_TOKEN" in answer.json()["detail"]
    assert ingest.post("/ratings", json=body, headers=AUTH).status_code == 202
    assert TOKEN not in caplog.text
    assert TOKEN not in ingest.get("/openapi.json").text


def test_kafka_down_is_503_with_retry_after_never_500(
    redis_settings: RedisSettings, free_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port}")
    api = ApiSettings(ingest_token=SecretStr(TOKEN), ingest_timeout_s=1.0)
    with TestClient(create_app(redis_settings, api, kafka), raise_server_exceptions=False) as app:
        for _ in range(2):  # the second call opens a new producer, and fails the same way
            began = time.monotonic()
            answer = app.post(
                "/ratings", json={"user_id": 1, "movie_id": 1, "rating": 1}, headers=AUTH
            )
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"] == "5"
            assert answer.json() == {
                "detail": "the ratings topic (Kafka) is unavailable; retry later"
            }
            assert time.monotonic() - began < 10
    assert f"127.0.0.1:{free_port}" in caplog.text  # the address goes to the log only


def test_documented_with_examples(ingest: TestClient) -> None:
    spec = ingest.get("/openapi.json").json()
    post = spec["paths"]["/ratings"]["post"]
    content = post["requestBody"]["content"]["application/json"]
    assert set(content["examples"]) == {"one", "several"}
    assert {"202", "401", "403", "422", "503"} <= set(post["responses"])
