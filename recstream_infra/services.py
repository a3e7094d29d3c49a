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
from recstream_infra.local_service import LocalService, ServiceGroup, ServiceStartError
from recstream_infra.redis_local import LocalRedis
from recstream_infra.settings import LocalServicesSettings
from serving.connection import ping
from serving.errors import RedisUnavailableError
from serving.settings import RedisSettings

__all__ = ["LocalServices", "check", "main"]


class LocalServices(ServiceGroup):
    """Kafka and Redis as local processes, driven by the same settings as the clients."""

    def __init__(
        self,
        local: LocalServicesSettings | None = None,
        kafka: KafkaSettings | None = None,
        redis: RedisSettings | None = None,
    ) -> None:
        local = local or LocalServicesSettings()
        self.kafka = LocalKafka(local, kafka or KafkaSettings())
        self.redis = LocalRedis(local, redis or RedisSettings())

    @property
    def services(self) -> tuple[LocalService, ...]:
        """Redis, then Kafka."""
        return (self.redis, self.kafka)


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
    return services.command(args.command, width=6)


if __name__ == "__main__":
    sys.exit(main())
