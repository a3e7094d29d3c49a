"""The Spark session the job builds: native linear algebra, one BLAS thread per task."""

from __future__ import annotations

import os

from pyspark.sql import SparkSession

from streaming.session import NATIVE_BLAS, linear_algebra


def test_als_runs_on_the_native_blas_that_make_setup_installs(spark: SparkSession) -> None:
    assert linear_algebra(spark) == NATIVE_BLAS, "no libblas.so.3: run make setup"
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    assert spark.conf.get("spark.executorEnv.OPENBLAS_NUM_THREADS") == "1"
