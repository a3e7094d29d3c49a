"""A Redis Cluster on this machine: ``python -m recstream_infra.redis_cluster``.

``up`` starts six ``redis-server`` processes from the same Debian package as the single
server, with ``cluster-enabled yes``: the first listens where ``RECSTREAM_REDIS_URL``
points, the others on the five ports after it. Once all six answer, ``redis-cli
--cluster create`` makes three of them masters of a third of the slots each and the
others their replicas, and ``up`` returns when every node reports ``cluster_state:ok``.
``down`` stops them, ``status`` shows them. Clients set ``RECSTREAM_REDIS_CLUSTER=true``
(``make redis-cluster`` sets both for the command it runs, and prints them).

With ``cluster-node-timeout`` of ``RECSTREAM_LOCAL_REDIS_CLUSTER_NODE_TIMEOUT_MS`` a
replica takes over a master that stopped answering within a few seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

import redis

from recstream_infra.local_service import (
    LocalService,
    ServiceGroup,
    ServiceStartError,
    StartOutcome,
    group_main,
)
from recstream_infra.redis_local import LocalRedis, config_quote
from recstream_infra.settings import LocalServicesSettings
from serving.connection import open_redis
from serving.settings import RedisSettings

__all__ = ["LocalRedisCluster", "RedisClusterNode", "main"]

NODES, REPLICAS = 6, 1  # three masters, each with one replica
_BUS_OFFSET = 10_000  # each node's cluster bus port: its own + 10000


class RedisClusterNode(LocalRedis):
    """One ``redis-server`` with ``cluster-enabled yes``; it answers once PING does."""

    def __init__(self, local: LocalServicesSettings, settings: RedisSettings, number: int) -> None:
        port = settings.port + number
        node = settings.model_copy(update={"url": _url_with_port(settings, port)})
        self.name = f"redis-{port}"
        super().__init__(local, node, folder=local.state_dir / "redis-cluster" / str(port))
        self.node_timeout_ms = local.redis_cluster_node_timeout_ms

    def _extra_lines(self) -> list[str]:
        lines = [
            "cluster-enabled yes",
            f"cluster-config-file {config_quote(str(self.folder / 'nodes.conf'))}",
            f"cluster-node-timeout {self.node_timeout_ms}",
        ]
        if self.settings.password is not None:  # a replica logs in to its master
            lines.append(f"masterauth {config_quote(self.settings.password.get_secret_value())}")
            if self.settings.username and self.settings.username != "default":
                lines.append(f"masteruser {self.settings.username}")
        return lines

    def cluster_info(self) -> dict[str, str]:
        """``CLUSTER INFO`` of this node, values as text ({} when it does not answer)."""
        client = open_redis(self._probe)
        try:
            raw = client.cluster("INFO")
        except redis.RedisError:
            return {}
        finally:
            client.close()
        if isinstance(raw, dict):
            return {str(key): str(value) for key, value in raw.items()}
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return dict(line.strip().split(":", 1) for line in text.splitlines() if ":" in line)

    def role(self) -> str | None:
        """``master`` or ``slave`` (``ROLE``); None when the node does not answer."""
        client = open_redis(self._probe)
        try:
            reply = client.role()
        except redis.RedisError:
            return None
        finally:
            client.close()
        first = reply[0] if reply else None
        return first.decode() if isinstance(first, bytes) else str(first)


def _url_with_port(settings: RedisSettings, port: int) -> str:
    scheme = "rediss" if settings.tls else "redis"
    return f"{scheme}://{settings.host}:{port}/0"


class LocalRedisCluster(ServiceGroup):
    """Six cluster nodes as local processes, joined into one cluster by ``start``."""

    launch_together = True  # six nodes, each answering on its own: launched at once

    def __init__(
        self, local: LocalServicesSettings | None = None, redis: RedisSettings | None = None
    ) -> None:
        local = local or LocalServicesSettings()
        redis = redis or RedisSettings()
        if not redis.cluster:
            msg = (
                "the local Redis Cluster is for clients with RECSTREAM_REDIS_CLUSTER=true and "
                "RECSTREAM_REDIS_URL at its first node (e.g. redis://127.0.0.1:7000/0); "
                "`make redis-cluster` sets both"
            )
            raise ServiceStartError(msg)
        if redis.port + NODES - 1 + _BUS_OFFSET > 65535:
            msg = (
                f"a Redis Cluster node's bus listens 10000 ports above it, so the first node "
                f"must be at port {65535 - _BUS_OFFSET - NODES + 1} or lower, not "
                f"{redis.port}; change the port of RECSTREAM_REDIS_URL"
            )
            raise ServiceStartError(msg)
        self.settings = redis
        self.start_timeout_s = local.start_timeout_s
        self.nodes = [RedisClusterNode(local, redis, n) for n in range(NODES)]

    @property
    def services(self) -> tuple[LocalService, ...]:
        """The six nodes, the first at the URL's port."""
        return tuple(self.nodes)

    def start(self) -> Iterator[tuple[LocalService, StartOutcome, float]]:
        """Start the nodes, then join them into a cluster unless they already form one."""
        yield from super().start()
        if not self.healthy():
            self._create()
        deadline = time.monotonic() + self.start_timeout_s
        while not self.healthy():
            if time.monotonic() > deadline:
                msg = (
                    f"the Redis Cluster at {self.settings.url} did not reach cluster_state:ok "
                    f"within {self.start_timeout_s:g} s; see {self.nodes[0].process.log_file}"
                )
                raise ServiceStartError(msg)
            time.sleep(0.25)

    def healthy(self) -> bool:
        """Every node answers and reports ``cluster_state:ok`` with all slots assigned."""
        infos = [node.cluster_info() for node in self.nodes]
        return all(
            info.get("cluster_state") == "ok" and info.get("cluster_slots_assigned") == "16384"
            for info in infos
        )

    def masters(self) -> list[RedisClusterNode]:
        """The nodes that are masters now (a failover changes which)."""
        return [node for node in self.nodes if node.role() == "master"]

    def _create(self) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            msg = "redis-cli is not installed; run `make setup` (Debian package redis-tools)"
            raise ServiceStartError(msg)
        env = dict(os.environ)
        if self.settings.password is not None:  # never on the command line
            env["REDISCLI_AUTH"] = self.settings.password.get_secret_value()
        command = [cli, "--cluster", "create", *(node.address for node in self.nodes),
                   "--cluster-replicas", str(REPLICAS), "--cluster-yes"]  # fmt: skip
        if self.settings.username:
            command[1:1] = ["--user", self.settings.username]
        if self.settings.tls:
            command[1:1] = ["--tls", "--cacert", str(self.settings.tls_ca_file)]
        done = subprocess.run(  # noqa: S603 - our own arguments
            command, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
            msg = f"redis-cli --cluster create failed: {tail}"
            raise ServiceStartError(msg)


def _after_up(cluster: LocalRedisCluster) -> None:
    print(f"clients: RECSTREAM_REDIS_CLUSTER=true RECSTREAM_REDIS_URL={cluster.settings.url}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``up``, ``down`` or ``status``."""
    return group_main(argv, "python -m recstream_infra.redis_cluster", __doc__,
                      LocalRedisCluster, width=10, after_up=_after_up)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
