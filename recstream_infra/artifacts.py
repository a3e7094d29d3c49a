"""Resolve the JVM artifacts recstream runs on from Maven Central into a local cache.

Two bundles: the Apache Kafka broker (``kafka_2.13`` with its runtime dependencies
and a logging binding) and Spark's Kafka connector at the installed pyspark version.
Each bundle is resolved by Maven into a temporary folder and renamed into place with
a stamp file, so an interrupted run never leaves a half bundle that looks complete,
and a second run on a warm machine only reads the stamps.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from recstream_base.errors import RecstreamError
from streaming.session import connector_dir

__all__ = [
    "ArtifactResolutionError",
    "JarBundle",
    "connector_bundle",
    "kafka_broker_bundle",
    "pyspark_jar_artifact_ids",
    "resolve",
]

# Pinned so that resolution does not depend on whichever plugin version is newest.
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
# Kafka's own distribution logs through log4j 2 behind slf4j 1.7; the kafka_2.13 POM
# leaves the binding out, so it is added here at the log4j-core version Kafka uses.
_KAFKA_LOG_BINDING = "org.apache.logging.log4j:log4j-slf4j-impl:2.24.3"
_STAMP = ".complete"
_VERSION_SUFFIX = re.compile(r"-\d.*\.jar$")


class ArtifactResolutionError(RecstreamError):
    """Maven could not resolve a bundle (no network, unknown version, no Maven)."""


@dataclass(frozen=True)
class JarBundle:
    """A set of Maven coordinates resolved, with their runtime dependencies, into one folder."""

    name: str
    coordinates: tuple[str, ...]
    target: Path
    exclude_artifact_ids: tuple[str, ...] = ()

    @property
    def fingerprint(self) -> str:
        """Identifies what the folder must contain; a changed bundle is resolved again."""
        text = "\n".join((*self.coordinates, *self.exclude_artifact_ids))
        return hashlib.sha256(text.encode()).hexdigest()

    def is_resolved(self) -> bool:
        """True when the folder holds a complete resolution of exactly these coordinates."""
        stamp = self.target / _STAMP
        return stamp.is_file() and stamp.read_text().strip() == self.fingerprint

    def jars(self) -> list[Path]:
        """The jar files of a resolved bundle, sorted by name."""
        return sorted(self.target.glob("*.jar"))


def kafka_broker_bundle(cache_dir: Path, kafka_version: str) -> JarBundle:
    """The Apache Kafka broker (KRaft-capable ``kafka_2.13``) and a log4j binding."""
    return JarBundle(
        name=f"Apache Kafka broker {kafka_version}",
        coordinates=(f"org.apache.kafka:kafka_2.13:{kafka_version}", _KAFKA_LOG_BINDING),
        target=cache_dir / "jars" / f"kafka_2.13-{kafka_version}",
    )


def connector_bundle(jar_cache_dir: Path, spark_version: str, pyspark_jars: Path) -> JarBundle:
    """Spark's Kafka connector at ``spark_version``, without jars pyspark already ships.

    pyspark carries its own copies of compression and logging libraries that the
    connector also depends on; a second copy of a different version on the classpath
    is a source of ``NoSuchMethodError`` at run time, so those are left out.
    """
    return JarBundle(
        name=f"Spark Kafka connector {spark_version}",
        coordinates=(f"org.apache.spark:spark-sql-kafka-0-10_2.13:{spark_version}",),
        target=connector_dir(jar_cache_dir, spark_version),
        exclude_artifact_ids=tuple(sorted(pyspark_jar_artifact_ids(pyspark_jars))),
    )


def pyspark_jar_artifact_ids(pyspark_jars: Path) -> set[str]:
    """Artifact ids of pyspark's jars (``zstd-jni-1.5.7-7.jar`` → ``zstd-jni``)."""
    return {_VERSION_SUFFIX.sub("", jar.name) for jar in pyspark_jars.glob("*.jar")}


def resolve(bundle: JarBundle, maven_repo: Path, *, mvn: str = "mvn") -> bool:
    """Resolve ``bundle`` unless it already is; return True when Maven had to run.

    Raises:
        ArtifactResolutionError: Maven is missing or failed; the message carries
            Maven's own last lines, which name the artifact or host at fault.
    """
    if bundle.is_resolved():
        return False
    if shutil.which(mvn) is None:
        msg = f"Maven ('{mvn}') is not on PATH; install it (Debian: apt-get install maven)"
        raise ArtifactResolutionError(msg)
    target = bundle.target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".resolving-") as work:
        work_dir = Path(work)
        pom = work_dir / "pom.xml"
        pom.write_text(_pom_for(bundle))
        out_dir = work_dir / "jars"
        command = [
            mvn,
            "-B",
            "-q",
            "-f",
            str(pom),
            f"-Dmaven.repo.local={maven_repo.resolve()}",
            f"{_DEPENDENCY_PLUGIN}:copy-dependencies",
            f"-DoutputDirectory={out_dir}",
            "-DincludeScope=runtime",
        ]
        if bundle.exclude_artifact_ids:
            command.append(f"-DexcludeArtifactIds={','.join(bundle.exclude_artifact_ids)}")
        done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode != 0 or not any(out_dir.glob("*.jar")):
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            msg = (
                f"could not resolve {bundle.name} ({', '.join(bundle.coordinates)}) from "
                f"Maven Central; is the repository reachable (a mirror in ~/.m2/settings.xml "
                f"is honoured)? Maven said:\n{tail}"
            )
            raise ArtifactResolutionError(msg)
        (out_dir / _STAMP).write_text(bundle.fingerprint + "\n")
        if target.exists():
            shutil.rmtree(target)
        out_dir.rename(target)
    return True


def _pom_for(bundle: JarBundle) -> str:
    dependencies = []
    for coordinate in bundle.coordinates:
        group, artifact, version = coordinate.split(":")
        dependencies.append(
            "<dependency>"
            f"<groupId>{escape(group)}</groupId>"
            f"<artifactId>{escape(artifact)}</artifactId>"
            f"<version>{escape(version)}</version>"
            "</dependency>"
        )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0">'
        "<modelVersion>4.0.0</modelVersion>"
        "<groupId>recstream.local</groupId>"
        f"<artifactId>{re.sub(r'[^A-Za-z0-9_.-]', '-', bundle.name)}</artifactId>"
        "<version>0</version><packaging>pom</packaging>"
        f"<dependencies>{''.join(dependencies)}</dependencies>"
        "</project>\n"
    )
