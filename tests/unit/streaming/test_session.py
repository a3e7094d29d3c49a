"""The Spark session the job builds: native linear algebra, one BLAS thread per task."""

from __future__ import annotations

import os

from pyspark.sql import SparkSession

from streaming.session import NATIVE_BLAS, linear_algebra


def test_als_runs_on_the_native_blas_that_make_setup_installs(spark: SparkSession) -> None:
    assert linear_algebra(spark) == NATIVE_BLAS, "no libblas.so.3: run make setup"
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    assert spark.conf.get("spark.executorEnv.OPENBLAS_NUM_THREADS") == "1"


def test_reads_of_the_store_leave_no_file_listing_in_the_jvm(spark: SparkSession) -> None:
    # Each read by path would cache its listing under a key of its own, never looked up
    # again, up to 250 MB of the driver's heap; with the cache off Spark hands out a cache
    # that keeps nothing.
    files = spark._jvm.org.apache.spark.sql.execution.datasources.FileStatusCache  # type: ignore[union-attr]
    cache = files.getOrCreate(spark._jsparkSession)  # what each read of a folder gets
    assert cache.getClass().getSimpleName().startswith("NoopCache")
