"""The local services: start, reuse, status, stop, and every way a start can fail.

Each test runs its own services on free ports with a private state folder, so it
never disturbs the session's services.
"""

from __future__ import annotations

import base64
import socket
import time
from pathlib import Path

import pytest

from producer.settings import KafkaSettings
from recstream_infra import services as services_cli
from recstream_infra.kafka_local import LocalKafka, kafka_nodes, new_cluster_id
from recstream_infra.local_service import ServiceStartError, free_port_block, free_tcp_port
from recstream_infra.redis_cluster import LocalRedisCluster
from recstream_infra.redis_local import LocalRedis
from recstream_infra.services import LocalServices
from recstream_infra.settings import LocalServicesSettings
from serving.settings import RedisSettings


def _local(state_dir: Path, **overrides: object) -> LocalServicesSettings:
    # The jar cache is the project's, so the broker comes from what make setup resolved.
    return LocalServicesSettings(state_dir=state_dir, **overrides)  # type: ignore[arg-type]


def test_cluster_id_never_begins_with_a_dash_which_the_storage_tool_reads_as_an_option() -> None:
    # 0xF8 puts 62 in the first six bits: "-" in the URL-safe alphabet.
    dash_first = bytes([0xF8]) + bytes(15)
    assert base64.urlsafe_b64encode(dash_first).decode().startswith("-")
    cluster_id = new_cluster_id(dash_first)
    assert not cluster_id.startswith("-")
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    plain = bytes(range(16))
    assert new_cluster_id(plain) == base64.urlsafe_b64encode(plain).decode().rstrip("=")


@pytest.mark.parametrize("host", ["10.1.2.3", "[::1]"])
def test_address_other_than_ipv4_loopback_is_refused(state_dir: Path, host: str) -> None:
    with pytest.raises(ServiceStartError, match=r"only runs on 127\.0\.0\.1.*:6379"):
        LocalRedis(_local(state_dir), RedisSettings(url=f"redis://{host}:6379/0"))


def test_kafka_without_resolved_jars_says_run_make_setup(state_dir: Path, free_port: int) -> None:
    local = _local(state_dir, cache_dir=state_dir / "empty-cache")
    kafka = LocalKafka(local, KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port}"))
    with pytest.raises(ServiceStartError, match="make setup"):
        kafka.start()
    assert kafka.process.pid() is None


def test_status_of_nothing_running(state_dir: Path, free_port: int) -> None:
    local = LocalServices(
        _local(state_dir),
        KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port}"),
        RedisSettings(url=f"redis://127.0.0.1:{free_port}/0"),
    )
    assert [(status.name, status.state) for status in local.status()] == [
        ("redis", "stopped"),
        ("kafka", "stopped"),
    ]
    assert local.stop() == {"kafka": False, "redis": False}


def test_cli_status_and_down_read_the_environment(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    state_dir: Path,
    free_port: int,
) -> None:
    monkeypatch.setenv("RECSTREAM_LOCAL_STATE_DIR", str(state_dir))
    monkeypatch.setenv("RECSTREAM_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port}")
    monkeypatch.setenv("RECSTREAM_REDIS_URL", f"redis://127.0.0.1:{free_port}/0")
    assert services_cli.main(["status"]) == 0
    assert services_cli.main(["down"]) == 0
    out = capsys.readouterr().out
    assert f"redis  stopped              127.0.0.1:{free_port}" in out
    assert "kafka  was not running (nothing to stop)" in out


def test_cli_check_names_both_unreachable_addresses(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], free_port: int
) -> None:
    monkeypatch.setenv("RECSTREAM_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port}")
    monkeypatch.setenv("RECSTREAM_KAFKA_CONNECT_TIMEOUT_S", "1")
    monkeypatch.setenv("RECSTREAM_REDIS_URL", f"redis://127.0.0.1:{free_port}/0")
    began = time.monotonic()
    assert services_cli.main(["check"]) == 1
    assert time.monotonic() - began < 10
    err = capsys.readouterr().err
    assert f"no Kafka broker answered at 127.0.0.1:{free_port} within 1 s" in err
    assert f"no Redis answered at redis://127.0.0.1:{free_port}/0" in err


def test_cli_reports_bad_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RECSTREAM_KAFKA_BOOTSTRAP_SERVERS", "localhost")
    assert services_cli.main(["status"]) == 2
    assert "bootstrap servers must be host:port" in capsys.readouterr().err


def test_three_nodes_follow_the_first_address_two_ports_apart(state_dir: Path) -> None:
    local = _local(state_dir, kafka_brokers=3)
    nodes = kafka_nodes(local, KafkaSettings(bootstrap_servers="127.0.0.1:9092"))
    assert [(n.node_id, n.port, n.controller_port, n.name) for n in nodes] == [
        (1, 9092, 9093, "kafka"),
        (2, 9094, 9095, "kafka-2"),
        (3, 9096, 9097, "kafka-3"),
    ]
    listed = KafkaSettings(bootstrap_servers="127.0.0.1:9200,localhost:9300,127.0.0.1:9400")
    assert [(n.port, n.controller_port) for n in kafka_nodes(local, listed)] == [
        (9200, 9201),
        (9300, 9301),
        (9400, 9401),
    ]


@pytest.mark.parametrize(
    ("servers", "overrides", "message"),
    [
        (
            "127.0.0.1:9092,127.0.0.1:9094",
            {},
            "lists 2 brokers but RECSTREAM_LOCAL_KAFKA_BROKERS is 3",
        ),
        (
            "127.0.0.1:9092",
            {"kafka_controller_port": 9999},
            "CONTROLLER_PORT is for a single broker",
        ),
    ],
)
def test_a_cluster_layout_that_does_not_add_up_is_refused(
    state_dir: Path, servers: str, overrides: dict[str, object], message: str
) -> None:
    local = _local(state_dir, kafka_brokers=3, **overrides)
    with pytest.raises(ServiceStartError, match=message):
        kafka_nodes(local, KafkaSettings(bootstrap_servers=servers))


def _properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_a_node_of_three_votes_with_the_others_and_replicates_internal_topics(
    state_dir: Path,
) -> None:
    local = _local(state_dir, kafka_brokers=3)
    node = LocalKafka(local, KafkaSettings(bootstrap_servers="127.0.0.1:9092"), node=1)
    assert (node.name, node.address, node.folder.name) == ("kafka-2", "127.0.0.1:9094", "kafka-2")
    config = _properties(node._server_properties(node.folder / "data"))
    assert config["node.id"] == "2"
    assert config["controller.quorum.voters"] == (
        "1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097"
    )
    assert config["listeners"] == "PLAINTEXT://127.0.0.1:9094,CONTROLLER://127.0.0.1:9095"
    assert config["default.replication.factor"] == config["offsets.topic.replication.factor"] == "3"
    assert config["min.insync.replicas"] == config["transaction.state.log.min.isr"] == "2"
    single = LocalKafka(_local(state_dir), KafkaSettings(bootstrap_servers="127.0.0.1:9092"))
    alone = _properties(single._server_properties(single.folder / "data"))
    assert alone["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert alone["default.replication.factor"] == alone["min.insync.replicas"] == "1"


def test_the_nodes_share_the_cluster_id_the_first_was_formatted_with(state_dir: Path) -> None:
    local = _local(state_dir, kafka_brokers=3)
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:9092")
    first, second = LocalKafka(local, settings, 0), LocalKafka(local, settings, 1)
    assert second._siblings_cluster_id() is None
    (first.folder / "data").mkdir(parents=True)
    (first.folder / "data" / "meta.properties").write_text("version=1\ncluster.id=abcDEF123\n")
    assert second._siblings_cluster_id() == "abcDEF123"
    assert first._siblings_cluster_id() is None  # its own id is not a sibling's


def test_down_also_stops_nodes_a_bigger_cluster_left_running(state_dir: Path) -> None:
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:9092")
    third = LocalKafka(_local(state_dir, kafka_brokers=3), settings, 2)
    third.folder.mkdir(parents=True)
    third.process.start(["sleep", "60"])
    single = LocalServices(_local(state_dir), settings, RedisSettings())
    assert [s.name for s in single.status()] == ["redis", "kafka", "kafka-3"]
    assert single.stop()["kafka-3"] is True
    assert third.process.pid() is None


def test_min_insync_replicas_above_the_replication_factor_is_refused() -> None:
    with pytest.raises(ValueError, match="no write could ever succeed"):
        KafkaSettings(replication_factor=1, min_insync_replicas=2)


def test_a_local_redis_cluster_needs_cluster_clients_and_room_for_its_bus_ports(
    state_dir: Path,
) -> None:
    with pytest.raises(ServiceStartError, match="RECSTREAM_REDIS_CLUSTER=true"):
        LocalRedisCluster(_local(state_dir), RedisSettings(url="redis://127.0.0.1:7000/0"))
    high = RedisSettings(url="redis://127.0.0.1:60000/0", cluster=True)
    with pytest.raises(ServiceStartError, match="port 55530 or lower"):
        LocalRedisCluster(_local(state_dir), high)
    with pytest.raises(ValueError, match="database 0 only"):
        RedisSettings(url="redis://127.0.0.1:7000/3", cluster=True)
    cluster = LocalRedisCluster(
        _local(state_dir), RedisSettings(url="redis://127.0.0.1:7000/0", cluster=True)
    )
    assert [node.port for node in cluster.nodes] == [7000, 7001, 7002, 7003, 7004, 7005]
    config = cluster.nodes[3]._extra_lines()
    assert "cluster-enabled yes" in config and "cluster-node-timeout 2000" in config


def test_free_ports_are_bindable_together_never_repeated_and_below_the_outgoing_range() -> None:
    # Linux gives outgoing connections their ports from 32768 up: a port from there can
    # be taken by a client between the probe and the service's bind (CI saw a Kafka
    # controller die of "Address already in use" on the port after a bind(0) one).
    firsts = [free_port_block(2) for _ in range(50)]
    singles = [free_tcp_port() for _ in range(50)]
    handed = [port for first in firsts for port in (first, first + 1)] + singles
    assert len(set(handed)) == len(handed)
    assert all(1024 < port < 32_768 for port in handed)
    with socket.socket() as one, socket.socket() as two:
        one.bind(("127.0.0.1", firsts[0]))
        two.bind(("127.0.0.1", firsts[0] + 1))
    shifted = free_port_block(3, shifted_by=10_000)  # a Redis Cluster's nodes and buses
    assert shifted + 2 + 10_000 < 32_768
    with pytest.raises(ValueError, match="at least 1"):
        free_port_block(0)
    with pytest.raises(ValueError, match="fits"):
        free_port_block(3, shifted_by=20_000)
