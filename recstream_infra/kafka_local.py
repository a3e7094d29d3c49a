"""A single-node Apache Kafka broker in KRaft mode, from the jars in the local cache."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from producer.broker import describe_cluster
from producer.errors import BrokerUnavailableError
from producer.settings import KafkaSettings
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
        # Probe exactly this broker, briefly: start polls it many times.
        self._probe = kafka.model_copy(
            update={"bootstrap_servers": self.address, "connect_timeout_s": 1.0}
        )

    @property
    def config_file(self) -> Path:
        """server.properties of the broker."""
        return self.folder / "server.properties"

    def answers(self) -> bool:
        """A metadata request succeeds."""
        try:
            describe_cluster(self._probe)
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
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{host}:{controller}",
            "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller}",
            "advertised.listeners": f"PLAINTEXT://{host}:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
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
        return "".join(f"{key}={value}\n" for key, value in settings.items())


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        msg = "Java 17 or newer is needed for the Kafka broker and Spark; run `make setup`"
        raise ServiceStartError(msg)
    return java
