"""Resolve the JVM jars recstream needs (``python -m recstream_infra.bootstrap``, in make setup)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pyspark

from recstream_infra.artifacts import (
    ArtifactResolutionError,
    JarBundle,
    connector_bundle,
    kafka_broker_bundle,
    resolve,
)
from recstream_infra.settings import LocalServicesSettings
from streaming.settings import SparkSettings

__all__ = ["main", "required_bundles"]


def required_bundles(local: LocalServicesSettings, spark: SparkSettings) -> list[JarBundle]:
    """The Kafka broker and Spark's Kafka connector at the installed pyspark version."""
    pyspark_jars = Path(pyspark.__file__).parent / "jars"
    return [
        kafka_broker_bundle(local.cache_dir, local.kafka_version),
        connector_bundle(spark.jar_cache_dir, pyspark.__version__, pyspark_jars),
    ]


def main() -> int:
    """Resolve every bundle that is not resolved yet; print what happened."""
    try:
        local, spark = LocalServicesSettings(), SparkSettings()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    maven_repo = local.cache_dir / "m2"
    for bundle in required_bundles(local, spark):
        began = time.monotonic()
        try:
            ran = resolve(bundle, maven_repo)
        except ArtifactResolutionError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        took = f"resolved in {time.monotonic() - began:.1f} s" if ran else "already resolved"
        print(f"jars: {bundle.name}: {took} ({len(bundle.jars())} jars in {bundle.target})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
