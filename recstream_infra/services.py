"""The local services recstream develops and tests against: ``python -m recstream_infra.services``.

``up`` starts a single-node Kafka (KRaft) and a Redis server on 127.0.0.1 where the
settings point (``RECSTREAM_KAFKA_BOOTSTRAP_SERVERS``, ``RECSTREAM_REDIS_URL``), waits
until each answers, and records pid and log files under the state folder. ``down``
stops exactly the processes ``up`` started; ``status`` shows what runs; ``check``
probes the configured Kafka and Redis wherever they are, local or not.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from producer.broker import describe_cluster
from producer.errors import BrokerUnavailableError
from producer.settings import KafkaSettings
from recstream_infra.kafka_local import LocalKafka
from recstream_infra.local_service import (
    LocalService,
    ServiceGroup,
    ServiceStartError,
    ServiceStatus,
)
from recstream_infra.redis_local import LocalRedis
from recstream_infra.settings import LocalServicesSettings
from serving.connection import ping
from serving.errors import RedisUnavailableError
from serving.settings import RedisSettings

__all__ = ["LocalServices", "check", "main"]


class LocalServices(ServiceGroup):
    """Kafka and Redis as local processes, driven by the same settings as the clients.

    Kafka is one node, or ``RECSTREAM_LOCAL_KAFKA_BROKERS`` of them forming one cluster.
    ``stop`` and ``status`` also cover nodes a larger cluster left running, so
    ``make services-down`` stops what ``make services KAFKA_BROKERS=3`` started.
    """

    launch_together = True  # a Kafka quorum answers only once its nodes run

    def __init__(
        self,
        local: LocalServicesSettings | None = None,
        kafka: KafkaSettings | None = None,
        redis: RedisSettings | None = None,
    ) -> None:
        local = local or LocalServicesSettings()
        kafka = kafka or KafkaSettings()
        self.kafka_nodes = tuple(
            LocalKafka(local, kafka, node) for node in range(local.kafka_brokers)
        )
        self.kafka = self.kafka_nodes[0]
        self.redis = LocalRedis(local, redis or RedisSettings())
        self._left_running = tuple(_nodes_left_running(local, kafka))

    @property
    def services(self) -> tuple[LocalService, ...]:
        """Redis, then the Kafka node(s)."""
        return (self.redis, *self.kafka_nodes)

    def stop(self) -> dict[str, bool]:
        """Stop what we started, the nodes of a larger cluster started before included."""
        stopped = {node.name: node.stop() for node in reversed(self._left_running)}
        return {**stopped, **super().stop()}

    def status(self) -> list[ServiceStatus]:
        """One status per service, and per node a larger cluster left running."""
        return [*super().status(), *(node.status() for node in self._left_running)]

    def cluster_hint(self) -> str | None:
        """With several nodes: the client settings that reach them all, replicated."""
        if len(self.kafka_nodes) == 1:
            return None
        servers = ",".join(node.address for node in self.kafka_nodes)
        copies = min(3, len(self.kafka_nodes))
        return (
            f"clients of this cluster: RECSTREAM_KAFKA_BOOTSTRAP_SERVERS={servers} "
            f"RECSTREAM_KAFKA_REPLICATION_FACTOR={copies}"
        )


def _nodes_left_running(local: LocalServicesSettings, kafka: KafkaSettings) -> list[LocalKafka]:
    """Nodes beyond the configured count whose pid file says they still run."""
    bigger = local.model_copy(update={"kafka_brokers": 9, "kafka_controller_port": None})
    first = kafka.model_copy(update={"bootstrap_servers": kafka.bootstrap_servers.split(",")[0]})
    found = []
    for node in range(local.kafka_brokers, 9):
        candidate = LocalKafka(bigger, first, node)
        if candidate.process.pid() is not None:
            found.append(candidate)
    return found


def check(kafka: KafkaSettings, redis: RedisSettings) -> list[str]:
    """Probe Kafka (metadata request) and Redis (PING); the problems found, if any."""
    problems = []
    try:
        info = describe_cluster(kafka)
        print(f"kafka  answers at {kafka.bootstrap_servers} ({info.broker_count} broker(s))")
    except BrokerUnavailableError as exc:
        problems.append(str(exc))
    try:
        ping(redis)
        print(f"redis  answers at {redis.url}")
    except RedisUnavailableError as exc:
        problems.append(str(exc))
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``up``, ``down``, ``status`` or ``check``."""
    parser = argparse.ArgumentParser(prog="python -m recstream_infra.services", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "check"])
    args = parser.parse_args(argv)
    if args.command == "check":
        try:
            problems = check(KafkaSettings(), RedisSettings())
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1 if problems else 0
    try:
        services = LocalServices()
    except (ValueError, ServiceStartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    code = services.command(args.command, width=7 if len(services.kafka_nodes) > 1 else 6)
    hint = services.cluster_hint()
    if args.command == "up" and code == 0 and hint:
        print(hint)
    return code


if __name__ == "__main__":
    sys.exit(main())
