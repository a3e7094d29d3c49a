"""Talking to the Kafka cluster: client options, a readiness probe, topic management."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

from producer.errors import BrokerAuthenticationError, BrokerUnavailableError
from producer.login import login_refusal
from producer.settings import KafkaSettings
from recstream_base.net import port_open, speaks_tls, tls_problem

__all__ = ["ClusterInfo", "client_options", "create_topic", "delete_topic", "describe_cluster"]


@dataclass(frozen=True)
class ClusterInfo:
    """What a metadata request told us about the cluster."""

    cluster_id: str | None
    broker_count: int
    controller_id: int | None


def client_options(
    settings: KafkaSettings, *, connect_timeout_s: float | None = None
) -> dict[str, Any]:
    """Keyword arguments shared by every kafka-python client recstream builds."""
    timeout = settings.connect_timeout_s if connect_timeout_s is None else connect_timeout_s
    options: dict[str, Any] = {
        "bootstrap_servers": [f"{host}:{port}" for host, port in settings.servers],
        "bootstrap_timeout_ms": int(timeout * 1000),
        "request_timeout_ms": int(settings.request_timeout_s * 1000),
        "reconnect_backoff_max_ms": 1000,
        "security_protocol": settings.security_protocol,
    }
    if settings.tls:
        options["ssl_check_hostname"] = True
        if settings.ssl_cafile is not None:
            options["ssl_cafile"] = str(settings.ssl_cafile)
    if settings.sasl and settings.sasl_password is not None:
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return options


# kafka-python's loggers that narrate each failed connection attempt of a bootstrap.
_CONNECTION_LOGGERS = ("kafka.net.manager", "kafka.net.connection")


class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextmanager
def _quiet_bootstrap() -> Iterator[None]:
    """Mute kafka-python's per-attempt connection lines while an admin client bootstraps.

    A failed bootstrap ends in our own error naming the address and the fix, so a line
    per retry only buries it (they print wherever a handler is configured: TFDS's absl
    configures one on first use). Other clients of the process are muted as long, too.
    """
    mute = _DropAll()
    loggers = [logging.getLogger(name) for name in _CONNECTION_LOGGERS]
    for logger in loggers:
        logger.addFilter(mute)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(mute)


def _admin(settings: KafkaSettings, connect_timeout_s: float | None = None) -> KafkaAdminClient:
    options = client_options(settings, connect_timeout_s=connect_timeout_s)
    try:
        with _quiet_bootstrap():
            return KafkaAdminClient(**options, client_id="recstream-admin")
    except KafkaError as exc:
        failure = exc
    timeout = settings.connect_timeout_s if connect_timeout_s is None else connect_timeout_s
    tls = _tls_failure(settings)
    if tls is not None:
        raise BrokerUnavailableError(tls) from failure
    refusal = login_refusal(settings, options, timeout)
    if refusal is not None:
        msg = (
            f"the Kafka broker at {settings.bootstrap_servers} refused the "
            f"{settings.security_protocol} {settings.sasl_mechanism} login of user "
            f"{settings.sasl_username!r} ({refusal}); check RECSTREAM_KAFKA_SASL_USERNAME, "
            "RECSTREAM_KAFKA_SASL_PASSWORD and RECSTREAM_KAFKA_SASL_MECHANISM"
        )
        raise BrokerAuthenticationError(msg) from None
    msg = (
        f"no Kafka broker answered at {settings.bootstrap_servers} within {timeout:g} s "
        f"({type(failure).__name__}); start the local one with `make services` or point "
        "RECSTREAM_KAFKA_BOOTSTRAP_SERVERS at a running broker"
    )
    if not settings.tls and any(speaks_tls(host, port) for host, port in settings.servers):
        msg = (
            f"the Kafka broker at {settings.bootstrap_servers} speaks TLS, and this client "
            f"does not ({settings.security_protocol}); set RECSTREAM_KAFKA_SECURITY_PROTOCOL="
            "SSL (SASL_SSL with a SASL user) and RECSTREAM_KAFKA_SSL_CAFILE to the CA that "
            "signed its certificate"
        )
    elif not settings.sasl and any(port_open(host, port) for host, port in settings.servers):
        msg += (
            "; something does accept connections there: if the broker wants a SASL login, "
            "set RECSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT (SASL_SSL over TLS) and "
            "the SASL user"
        )
    raise BrokerUnavailableError(msg) from failure


def _tls_failure(settings: KafkaSettings) -> str | None:
    """With TLS on: why the handshake with the first broker that answers fails, if it does."""
    if not settings.tls:
        return None
    for host, port in settings.servers:
        problem = tls_problem(host, port, settings.ssl_cafile, "RECSTREAM_KAFKA_SSL_CAFILE")
        if problem is None:
            continue
        msg = f"TLS to the Kafka broker failed: {problem}"
        if "does not speak TLS" in problem:
            msg += (
                "; if its listener is plain, set RECSTREAM_KAFKA_SECURITY_PROTOCOL=PLAINTEXT "
                "(SASL_PLAINTEXT with a SASL user)"
            )
        return msg
    return None


def describe_cluster(
    settings: KafkaSettings, *, connect_timeout_s: float | None = None
) -> ClusterInfo:
    """Send a metadata request; the probe that says a broker really answers.

    Raises:
        BrokerUnavailableError: nothing answered at the bootstrap address in time.
    """
    admin = _admin(settings, connect_timeout_s)
    try:
        cluster = admin.describe_cluster()
    finally:
        admin.close()
    return ClusterInfo(
        cluster_id=cluster.get("cluster_id"),
        broker_count=len(cluster.get("brokers", [])),
        controller_id=cluster.get("controller_id"),
    )


def create_topic(
    settings: KafkaSettings,
    name: str | None = None,
    *,
    partitions: int | None = None,
    replication_factor: int | None = None,
    configs: dict[str, str] | None = None,
) -> bool:
    """Create a topic (default: the ratings topic) unless it exists; True if it was created.

    It gets the settings' ``min.insync.replicas`` when one is set, unless ``configs``
    names another.
    """
    topic_configs = dict(configs or {})
    if settings.min_insync_replicas is not None:
        topic_configs.setdefault("min.insync.replicas", str(settings.min_insync_replicas))
    topic = NewTopic(
        name=name or settings.topic,
        num_partitions=partitions or settings.partitions,
        replication_factor=replication_factor or settings.replication_factor,
        topic_configs=topic_configs,
    )
    admin = _admin(settings)
    try:
        admin.create_topics([topic])
    except TopicAlreadyExistsError:
        return False
    finally:
        admin.close()
    return True


def delete_topic(settings: KafkaSettings, name: str) -> bool:
    """Delete a topic; False when it did not exist."""
    admin = _admin(settings)
    try:
        admin.delete_topics([name])
    except UnknownTopicOrPartitionError:
        return False
    finally:
        admin.close()
    return True
