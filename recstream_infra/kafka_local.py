"""A single-node Apache Kafka broker in KRaft mode, from the jars in the local cache."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.admin import UserScramCredentialUpsertion

from producer.broker import client_options, describe_cluster
from producer.errors import BrokerAuthenticationError, BrokerUnavailableError
from producer.settings import KafkaSettings, jaas_quote
from recstream_infra.artifacts import kafka_broker_bundle
from recstream_infra.local_service import LocalService, ServiceStartError
from recstream_infra.settings import LocalServicesSettings
from recstream_infra.tls import issue_server_certificate

__all__ = ["KafkaNode", "LocalKafka", "kafka_nodes", "new_cluster_id"]

_LOG4J2 = """\
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def new_cluster_id(random_bytes: bytes | None = None) -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    One id in 64 would begin with "-", which Kafka's StorageTool reads as an
    option rather than the value of --cluster-id; Kafka's own generator redraws
    those, and so does this one.
    """
    raw = uuid.uuid4().bytes if random_bytes is None else random_bytes
    while True:
        cluster_id = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id
        raw = uuid.uuid4().bytes


@dataclass(frozen=True)
class KafkaNode:
    """One node of the local cluster: a broker and a KRaft controller in one JVM."""

    node_id: int
    port: int
    controller_port: int

    @property
    def name(self) -> str:
        """``kafka`` for the first node (the single-node name), ``kafka-2`` and on after it."""
        return "kafka" if self.node_id == 1 else f"kafka-{self.node_id}"


def kafka_nodes(local: LocalServicesSettings, kafka: KafkaSettings) -> list[KafkaNode]:
    """Where each of the ``RECSTREAM_LOCAL_KAFKA_BROKERS`` local nodes listens.

    The bootstrap list names every node, or only the first: the others then follow
    two ports apart (9092, 9094, 9096), each with its controller on the port after
    its own.

    Raises:
        ServiceStartError: the bootstrap list names some nodes but not all of them, or a
            controller port is set for more than one node.
    """
    count = local.kafka_brokers
    servers = kafka.servers
    if len(servers) == count:
        ports = [port for _, port in servers]
    elif len(servers) == 1:
        ports = [servers[0][1] + 2 * index for index in range(count)]
    else:
        msg = (
            f"RECSTREAM_KAFKA_BOOTSTRAP_SERVERS lists {len(servers)} brokers but "
            f"RECSTREAM_LOCAL_KAFKA_BROKERS is {count}: list all {count} local brokers, or "
            "only the first (the others follow two ports apart)"
        )
        raise ServiceStartError(msg)
    if count == 1:
        return [KafkaNode(1, ports[0], local.kafka_controller_port or ports[0] + 1)]
    if local.kafka_controller_port is not None:
        msg = (
            "RECSTREAM_LOCAL_KAFKA_CONTROLLER_PORT is for a single broker; with "
            f"{count} brokers each node's controller listens on the port after its own"
        )
        raise ServiceStartError(msg)
    return [KafkaNode(index + 1, port, port + 1) for index, port in enumerate(ports)]


class LocalKafka(LocalService):
    """One Kafka node (broker and controller in one JVM) of the local cluster.

    With one node (the default) it is the whole cluster, listening on the bootstrap
    address. With ``RECSTREAM_LOCAL_KAFKA_BROKERS=3`` three of these form the KRaft
    quorum together; ``node`` picks which one this is (its index in ``kafka_nodes``).
    """

    name = "kafka"

    def __init__(self, local: LocalServicesSettings, kafka: KafkaSettings, node: int = 0) -> None:
        self.quorum = kafka_nodes(local, kafka)
        self.node = self.quorum[node]
        self.name = self.node.name
        servers = kafka.servers
        super().__init__(
            servers[min(node, len(servers) - 1)][0],
            self.node.port,
            local.state_dir / self.node.name,
            local.start_timeout_s,
        )
        self.controller_port = self.node.controller_port
        self.heap = local.kafka_heap
        self.bundle = kafka_broker_bundle(local.cache_dir, local.kafka_version)
        self.kafka = kafka
        if kafka.tls and kafka.ssl_cafile is None:
            msg = (
                f"the local broker with {kafka.security_protocol} needs "
                "RECSTREAM_KAFKA_SSL_CAFILE: the path of the CA file the project makes and "
                "signs the broker's certificate with (e.g. .state/tls/ca.pem)"
            )
            raise ServiceStartError(msg)
        # Probe exactly this broker, briefly: start polls it many times. The broker logs
        # itself in with PLAIN, and so does the probe: SCRAM users exist only once the
        # broker runs (``_add_scram_user``).
        self._probe = kafka.model_copy(
            update={"bootstrap_servers": self.address, "connect_timeout_s": 1.0}
        )
        if kafka.sasl:
            self._probe = self._probe.model_copy(update={"sasl_mechanism": "PLAIN"})

    @property
    def config_file(self) -> Path:
        """server.properties of the broker."""
        return self.folder / "server.properties"

    def answers(self) -> bool:
        """A metadata request succeeds and names every node of the cluster.

        Raises:
            ServiceStartError: a broker answers but refuses our SASL login.
        """
        try:
            info = describe_cluster(self._probe)
        except BrokerAuthenticationError as exc:
            msg = (
                f"{exc}; a broker started with other credentials may be running: "
                "`make services-down`, then start it again"
            )
            raise ServiceStartError(msg) from None
        except BrokerUnavailableError:
            return False
        # A node of a cluster is ready once every node is registered with the quorum:
        # until then a topic with replication factor 3 could not be created.
        return info.broker_count >= len(self.quorum)

    def wait_until_answering(self) -> None:
        """Return once the node answers, with the clients' SCRAM user created by then."""
        super().wait_until_answering()
        self._add_scram_user()

    def _add_scram_user(self) -> None:
        """Give the clients' user SCRAM-SHA-256 and -512 credentials (idempotent).

        They are sent through the admin API, logged in with PLAIN as the broker itself
        is: only the salted password crosses the connection, and it never appears on a
        command line.
        """
        kafka = self.kafka
        if not kafka.sasl or kafka.sasl_mechanism == "PLAIN" or kafka.sasl_password is None:
            return
        secret = kafka.sasl_password.get_secret_value()
        admin = KafkaAdminClient(**client_options(self._probe), client_id="recstream-local")
        try:
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):  # one request each
                upsert = UserScramCredentialUpsertion(kafka.sasl_username, mechanism, secret)
                refused = admin.alter_user_scram_credentials([upsert])
                errors = [message for message in refused.values() if message]
                if errors:
                    msg = (
                        f"creating the {mechanism} user {kafka.sasl_username!r} failed: {errors[0]}"
                    )
                    raise ServiceStartError(msg)
        finally:
            admin.close()

    def _prepare(self) -> list[str]:
        if not self.bundle.is_resolved():
            msg = f"the {self.bundle.name} jars are not in {self.bundle.target}; run `make setup`"
            raise ServiceStartError(msg)
        java = _java()
        data = self.folder / "data"
        log4j = self.folder / "log4j2.properties"
        log4j.write_text(_LOG4J2)
        # With SASL the file holds the password: only its owner may read it.
        self.config_file.touch(mode=0o600)
        self.config_file.chmod(0o600)
        self.config_file.write_text(self._server_properties(data))
        classpath = f"{self.bundle.target.resolve()}/*"
        jvm = [
            java,
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={self.folder / 'logs'}",
            "-cp",
            classpath,
        ]
        if not (data / "meta.properties").is_file():
            self._format_storage(jvm, data)
        return [*jvm, "kafka.Kafka", str(self.config_file)]

    def _format_storage(self, jvm: list[str], data: Path) -> None:
        # Formatting is a short foreground run of Kafka's own StorageTool. The nodes of a
        # cluster are formatted one after the other with the first one's id.
        cluster_id = self._siblings_cluster_id() or new_cluster_id()
        format_log = self.folder / "format.log"
        command = [
            *jvm,
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
            str(self.config_file),
        ]
        with format_log.open("w") as log:
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)  # noqa: S603
        if done.returncode != 0:
            tail = " | ".join(format_log.read_text().strip().splitlines()[-3:])
            msg = f"formatting Kafka storage in {data} failed ({tail}); see {format_log}"
            raise ServiceStartError(msg)

    def _siblings_cluster_id(self) -> str | None:
        """The cluster id another node of this cluster was formatted with, if any."""
        for node in self.quorum:
            meta = self.folder.parent / node.name / "data" / "meta.properties"
            if node != self.node and meta.is_file():
                for line in meta.read_text().splitlines():
                    key, _, value = line.partition("=")
                    if key.strip() == "cluster.id" and value.strip():
                        return value.strip()
        return None

    def _server_properties(self, data: Path) -> str:
        host, port = self.host, self.port
        client = self.kafka.security_protocol
        voters = ",".join(f"{n.node_id}@{host}:{n.controller_port}" for n in self.quorum)
        # Internal topics as replicated as the cluster allows: 3 copies, 2 in sync.
        copies = str(min(3, len(self.quorum)))
        in_sync = str(min(2, len(self.quorum)))
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(self.node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"{client}://{host}:{port},CONTROLLER://{host}:{self.controller_port}",
            "advertised.listeners": f"{client}://{host}:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": client,
            "listener.security.protocol.map": f"{client}:{client},CONTROLLER:{client}",
            **self._sasl_properties(),
            **self._tls_properties(),
            "log.dirs": str(data),
            "num.partitions": "1",
            "default.replication.factor": copies,
            "min.insync.replicas": in_sync,
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": copies,
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": copies,
            "transaction.state.log.min.isr": in_sync,
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": copies,
            "share.coordinator.state.topic.min.isr": in_sync,
            "group.initial.rebalance.delay.ms": "0",
            # Replayed ratings carry their historic timestamps (1997-2003); time-based
            # retention would delete them as soon as a segment rolls.
            "log.retention.ms": "-1",
        }
        return "".join(f"{key}={_escape(value)}\n" for key, value in settings.items())

    def _tls_properties(self) -> dict[str, str]:
        """With TLS: a certificate signed by the project's CA, for 127.0.0.1 and localhost.

        The node is a TLS client of the quorum too, so it trusts the same CA. Both are
        PEM files, which Kafka reads since 2.7 (``ssl.keystore.type=PEM``).
        """
        if not self.kafka.tls or self.kafka.ssl_cafile is None:
            return {}
        issued = issue_server_certificate(self.kafka.ssl_cafile, self.folder)
        keystore = self.folder / "tls-keystore.pem"
        keystore.touch(mode=0o600)
        keystore.chmod(0o600)
        keystore.write_text(issued.chain_with_key())
        return {
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(issued.ca),
        }

    def _sasl_properties(self) -> dict[str, str]:
        """With SASL: one user (the clients'), used by the broker too.

        The broker logs in with PLAIN on both listeners; the clients' listener offers
        SCRAM-SHA-256 and -512 as well, whose credentials ``_add_scram_user`` creates.
        The controller listener needs a login as well, or anyone reaching its port could
        send it admin requests.
        """
        kafka = self.kafka
        if not kafka.sasl or kafka.sasl_username is None or kafka.sasl_password is None:
            return {}
        user = kafka.sasl_username
        password = jaas_quote(kafka.sasl_password.get_secret_value())
        jaas = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{user}" password={password} user_{user}={password};'
        )
        listener = kafka.security_protocol.lower()
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return {
            "sasl.enabled.mechanisms": "PLAIN",
            f"listener.name.{listener}.sasl.enabled.mechanisms": (
                "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
            ),
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "sasl.mechanism.inter.broker.protocol": "PLAIN",
            "sasl.mechanism.controller.protocol": "PLAIN",
            f"listener.name.{listener}.plain.sasl.jaas.config": jaas,
            f"listener.name.{listener}.scram-sha-256.sasl.jaas.config": scram,
            f"listener.name.{listener}.scram-sha-512.sasl.jaas.config": scram,
            "listener.name.controller.plain.sasl.jaas.config": jaas,
        }


def _escape(value: str) -> str:
    """A value as java.util.Properties reads it back (ISO-8859-1, backslash escapes)."""
    out = []
    for char in value:
        if char == "\\":
            out.append("\\\\")
        elif 32 <= ord(char) < 127:
            out.append(char)
        else:
            out.extend(f"\\u{unit:04x}" for unit in _utf16_units(char))
    return "".join(out)


def _utf16_units(char: str) -> list[int]:
    raw = char.encode("utf-16-be")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        msg = "Java 17 or newer is needed for the Kafka broker and Spark; run `make setup`"
        raise ServiceStartError(msg)
    return java
