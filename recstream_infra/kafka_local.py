"""A single-node Apache Kafka broker in KRaft mode, from the jars in the local cache."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from producer.broker import describe_cluster
from producer.errors import BrokerAuthenticationError, BrokerUnavailableError
from producer.settings import KafkaSettings, jaas_quote
from recstream_infra.artifacts import kafka_broker_bundle
from recstream_infra.local_service import LocalService, ServiceStartError
from recstream_infra.settings import LocalServicesSettings

__all__ = ["LocalKafka", "new_cluster_id"]

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


class LocalKafka(LocalService):
    """Kafka (broker and controller in one JVM) listening on the bootstrap address."""

    name = "kafka"

    def __init__(self, local: LocalServicesSettings, kafka: KafkaSettings) -> None:
        host, port = kafka.servers[0]
        super().__init__(host, port, local.state_dir / "kafka", local.start_timeout_s)
        self.controller_port = local.kafka_controller_port or port + 1
        self.heap = local.kafka_heap
        self.bundle = kafka_broker_bundle(local.cache_dir, local.kafka_version)
        self.kafka = kafka
        if kafka.sasl and kafka.sasl_mechanism != "PLAIN":
            msg = (
                f"the local broker offers SASL PLAIN only, not {kafka.sasl_mechanism}; "
                "set RECSTREAM_KAFKA_SASL_MECHANISM=PLAIN for it"
            )
            raise ServiceStartError(msg)
        # Probe exactly this broker, briefly: start polls it many times.
        self._probe = kafka.model_copy(
            update={"bootstrap_servers": self.address, "connect_timeout_s": 1.0}
        )

    @property
    def config_file(self) -> Path:
        """server.properties of the broker."""
        return self.folder / "server.properties"

    def answers(self) -> bool:
        """A metadata request succeeds.

        Raises:
            ServiceStartError: a broker answers but refuses our SASL login.
        """
        try:
            describe_cluster(self._probe)
        except BrokerAuthenticationError as exc:
            msg = (
                f"{exc}; a broker started with other credentials may be running: "
                "`make services-down`, then start it again"
            )
            raise ServiceStartError(msg) from None
        except BrokerUnavailableError:
            return False
        return True

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
        # Formatting is a short foreground run of Kafka's own StorageTool.
        cluster_id = new_cluster_id()
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

    def _server_properties(self, data: Path) -> str:
        host, port, controller = self.host, self.port, self.controller_port
        client = self.kafka.security_protocol
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{host}:{controller}",
            "listeners": f"{client}://{host}:{port},CONTROLLER://{host}:{controller}",
            "advertised.listeners": f"{client}://{host}:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": client,
            "listener.security.protocol.map": f"{client}:{client},CONTROLLER:{client}",
            **self._sasl_properties(),
            "log.dirs": str(data),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Replayed ratings carry their historic timestamps (1997-2003); time-based
            # retention would delete them as soon as a segment rolls.
            "log.retention.ms": "-1",
        }
        return "".join(f"{key}={_escape(value)}\n" for key, value in settings.items())

    def _sasl_properties(self) -> dict[str, str]:
        """With SASL: PLAIN on both listeners, one user (the clients'), used by the broker too.

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
        return {
            "sasl.enabled.mechanisms": "PLAIN",
            "sasl.mechanism.inter.broker.protocol": "PLAIN",
            "sasl.mechanism.controller.protocol": "PLAIN",
            f"listener.name.{listener}.plain.sasl.jaas.config": jaas,
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
