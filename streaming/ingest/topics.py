"""What the job reads from Kafka outside Spark: the movie catalog, and the topic's end offsets.

The catalog is the compacted ``<topic>.movies`` topic the producer writes (one JSON
entry per movie, keyed by movie id); the latest entry per movie wins. End offsets give
the consumer lag in each micro-batch's log line.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from producer.broker import client_options
from producer.replay import catalog_topic
from producer.settings import KafkaSettings

__all__ = ["TopicWatcher", "spark_source_options"]

_log = logging.getLogger(__name__)
Movie = tuple[int, str, Sequence[str]]


def spark_source_options(settings: KafkaSettings) -> dict[str, str]:
    """The ``kafka.*`` options of Spark's Kafka source: brokers, TLS and the SASL login.

    With TLS the Java client trusts the CA file itself (a PEM trust store, as Kafka
    clients read since 2.7) and checks the broker's host name, as kafka-python does.
    The JAAS line carries the password; the session's redaction settings
    (``streaming.session``) keep it out of plans and the UI.
    """
    options = {
        "kafka.bootstrap.servers": settings.bootstrap_servers,
        "kafka.security.protocol": settings.security_protocol,
    }
    if settings.tls and settings.ssl_cafile is not None:
        options["kafka.ssl.truststore.type"] = "PEM"
        options["kafka.ssl.truststore.location"] = str(settings.ssl_cafile.resolve())
    if settings.sasl:
        options["kafka.sasl.mechanism"] = settings.sasl_mechanism
        options["kafka.sasl.jaas.config"] = settings.jaas_config()
    return options


class TopicWatcher:
    """One kafka-python consumer (no group, no commits) for the catalog and the lag."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._consumer: KafkaConsumer | None = None

    def end_offsets(self) -> dict[int, int] | None:
        """Next offset to be written, per partition of the ratings topic (None: unknown)."""
        try:
            consumer = self._client()
            partitions = consumer.partitions_for_topic(self.settings.topic) or set()
            ends = consumer.end_offsets(
                [TopicPartition(self.settings.topic, p) for p in partitions]
            )
        except KafkaError as exc:
            _log.warning("end offsets of %s unavailable: %s", self.settings.topic, exc)
            return None
        return {tp.partition: int(offset) for tp, offset in ends.items()}

    def catalog(self, timeout_s: float = 10.0) -> tuple[list[Movie], int]:
        """Every movie of the catalog topic, latest entry per id, and how many were unusable."""
        topic = catalog_topic(self.settings.topic)
        movies: dict[int, Movie] = {}
        bad = 0
        try:
            consumer = self._client()
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
            if not partitions:
                return [], 0
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            ends = consumer.end_offsets(partitions)
            deadline = time.monotonic() + timeout_s
            while any(consumer.position(tp) < ends[tp] for tp in partitions):
                if time.monotonic() > deadline:
                    _log.warning("catalog topic %s: read stopped after %.0f s", topic, timeout_s)
                    break
                for records in consumer.poll(timeout_ms=500).values():
                    for record in records:
                        movie = _movie(record.value)
                        if movie is None:
                            bad += 1
                        else:
                            movies[movie[0]] = movie
            consumer.unsubscribe()
        except KafkaError as exc:
            _log.warning("catalog topic %s unavailable: %s", topic, exc)
        return sorted(movies.values()), bad

    def close(self) -> None:
        """Close the consumer."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _client(self) -> KafkaConsumer:
        if self._consumer is None:
            self._consumer = KafkaConsumer(
                **client_options(self.settings), enable_auto_commit=False, group_id=None
            )
        return self._consumer


def _movie(raw: bytes | None) -> Movie | None:
    try:
        entry = json.loads(raw or b"")
        movie = (int(entry["movie_id"]), str(entry["title"]), [str(g) for g in entry["genres"]])
    except (ValueError, KeyError, TypeError):
        return None
    return movie if movie[0] > 0 else None
