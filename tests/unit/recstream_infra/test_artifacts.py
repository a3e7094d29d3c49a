"""Resolving JVM jars: what is excluded, when Maven runs, and what a failure says."""

from __future__ import annotations

from pathlib import Path

import pytest

from recstream_infra.artifacts import (
    ArtifactResolutionError,
    JarBundle,
    connector_bundle,
    kafka_broker_bundle,
    pyspark_jar_artifact_ids,
    resolve,
)


def _touch_jars(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_artifact_ids_drop_the_version(tmp_path: Path) -> None:
    _touch_jars(
        tmp_path,
        "zstd-jni-1.5.7-7.jar",
        "snappy-java-1.1.10.8.jar",
        "spark-core_2.13-4.2.0.jar",
        "log4j-slf4j2-impl-2.25.4.jar",
        "netty-transport-native-epoll-4.1.118.Final-linux-x86_64.jar",
        "commons-lang3-3.17.0.jar",
    )
    assert pyspark_jar_artifact_ids(tmp_path) == {
        "zstd-jni",
        "snappy-java",
        "spark-core_2.13",
        "log4j-slf4j2-impl",
        "netty-transport-native-epoll",
        "commons-lang3",
    }


def test_connector_bundle_excludes_what_pyspark_ships(tmp_path: Path) -> None:
    _touch_jars(tmp_path / "pyspark-jars", "lz4-java-1.11.0.jar", "snappy-java-1.1.10.8.jar")
    bundle = connector_bundle(tmp_path / "jars", "4.2.0", tmp_path / "pyspark-jars")
    assert bundle.coordinates == ("org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0",)
    assert bundle.exclude_artifact_ids == ("lz4-java", "snappy-java")
    assert bundle.target == tmp_path / "jars" / "spark-sql-kafka-0-10_2.13-4.2.0"


def test_stamp_decides_whether_a_bundle_is_resolved(tmp_path: Path) -> None:
    bundle = kafka_broker_bundle(tmp_path, "4.1.1")
    assert not bundle.is_resolved()
    _touch_jars(bundle.target, "kafka_2.13-4.1.1.jar")
    assert not bundle.is_resolved()  # jars without a stamp: an interrupted run
    (bundle.target / ".complete").write_text(bundle.fingerprint + "\n")
    assert bundle.is_resolved()
    other = kafka_broker_bundle(tmp_path, "4.1.2")
    assert other.fingerprint != bundle.fingerprint


def test_resolved_bundle_does_not_run_maven(tmp_path: Path) -> None:
    bundle = JarBundle("demo", ("g:a:1",), tmp_path / "demo")
    _touch_jars(bundle.target, "a-1.jar")
    (bundle.target / ".complete").write_text(bundle.fingerprint)
    assert resolve(bundle, tmp_path / "m2", mvn="no-such-maven-binary") is False


def test_missing_maven_is_named(tmp_path: Path) -> None:
    bundle = JarBundle("demo", ("g:a:1",), tmp_path / "demo")
    with pytest.raises(ArtifactResolutionError, match=r"no-such-maven-binary.*not on PATH"):
        resolve(bundle, tmp_path / "m2", mvn="no-such-maven-binary")


@pytest.mark.slow
def test_unknown_artifact_fails_with_the_coordinates(tmp_path: Path) -> None:
    bundle = JarBundle(
        "nonexistent", ("org.apache.kafka:kafka_2.13:0.0.0-no-such-version",), tmp_path / "x"
    )
    with pytest.raises(ArtifactResolutionError, match=r"0\.0\.0-no-such-version"):
        resolve(bundle, tmp_path / "m2")
    assert not bundle.target.exists()  # nothing half-written is left behind
