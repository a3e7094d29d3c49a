"""The chain everything else stands on: kafka-python → Kafka → Spark's kafka source → Redis."""

from __future__ import annotations

import json

import pytest
from kafka import KafkaConsumer, KafkaProducer
from pyspark.sql import DataFrame, SparkSession

from producer.broker import client_options
from serving.connection import open_redis
from serving.layout import RedisLayout
from serving.settings import RedisSettings
from streaming.ingest.topics import spark_source_options
from tests.conftest import Services

pytestmark = pytest.mark.integration

MESSAGES = 1_000


def _events() -> list[dict[str, int | float]]:
    return [
        {
            "seq": seq,
            "user_id": 1 + seq % 37,
            "movie_id": 1 + (seq * 7) % 101,
            "rating": float(1 + seq % 5),
        }
        for seq in range(MESSAGES)
    ]


def _produce(services: Services, topic: str, events: list[dict[str, int | float]]) -> None:
    producer = KafkaProducer(**client_options(services.kafka), acks="all", linger_ms=5)
    try:
        for event in events:
            producer.send(
                topic, key=str(event["user_id"]).encode(), value=json.dumps(event).encode()
            )
        producer.flush(timeout=30)
    finally:
        producer.close()


def test_kafka_python_creates_produces_and_consumes(services: Services, kafka_topic: str) -> None:
    events = _events()[:50]
    _produce(services, kafka_topic, events)

    consumer = KafkaConsumer(
        kafka_topic,
        **client_options(services.kafka),
        group_id=f"{kafka_topic}-reader",
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    try:
        received = [json.loads(message.value) for message in consumer]
    finally:
        consumer.close()

    assert sorted(received, key=lambda event: event["seq"]) == events


def test_spark_kafka_source_writes_every_message_to_redis(
    services: Services,
    spark: SparkSession,
    kafka_topic: str,
    redis_settings: RedisSettings,
    tmp_path: object,
) -> None:
    events = _events()
    _produce(services, kafka_topic, events)
    prefix = RedisLayout(redis_settings.key_prefix).tag  # so the fixture deletes its keys

    def write_batch(batch: DataFrame, batch_id: int) -> None:
        rows = batch.selectExpr("CAST(value AS STRING) AS value", "partition", "offset").collect()
        client = open_redis(redis_settings)
        try:
            with client.pipeline(transaction=False) as pipe:
                for row in rows:
                    seq = json.loads(row["value"])["seq"]
                    record = {
                        "value": row["value"],
                        "partition": row["partition"],
                        "offset": row["offset"],
                        "batch_id": batch_id,
                    }
                    pipe.set(f"{prefix}:message:{seq}", json.dumps(record))
                pipe.execute()
        finally:
            client.close()

    stream = (
        spark.readStream.format("kafka")
        .options(**spark_source_options(services.kafka))
        .option("subscribe", kafka_topic)
        .option("startingOffsets", "earliest")
        .load()
    )
    query = (
        stream.writeStream.foreachBatch(write_batch)
        .option("checkpointLocation", f"{tmp_path}/checkpoint")
        .trigger(availableNow=True)
        .start()
    )
    finished = query.awaitTermination(timeout=300)
    assert finished, "the availableNow query did not finish within 300 s"
    assert query.exception() is None

    client = open_redis(redis_settings)
    try:
        stored = client.mget([f"{prefix}:message:{seq}" for seq in range(MESSAGES)])
    finally:
        client.close()
    assert all(value is not None for value in stored), "some messages never reached Redis"
    records = [json.loads(value) for value in stored if value is not None]
    assert [json.loads(record["value"]) for record in records] == events
    # Every message came through Spark's Kafka source once, from both partitions.
    positions = {(record["partition"], record["offset"]) for record in records}
    assert len(positions) == MESSAGES
    assert {partition for partition, _ in positions} == {0, 1}
