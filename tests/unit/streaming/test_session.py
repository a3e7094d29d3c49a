"""The Spark session the job builds: native linear algebra, one BLAS thread per task."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
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


def _tasks_of_group(spark: SparkSession, group: str) -> list[int]:
    """The task count of each stage the jobs of ``group`` ran."""
    tracker = spark.sparkContext.statusTracker()
    tasks = []
    for job in tracker.getJobIdsForGroup(group):
        info = tracker.getJobInfo(job)
        for stage in info.stageIds if info else []:
            stage_info = tracker.getStageInfo(stage)
            tasks.append(stage_info.numTasks if stage_info else -1)
    return tasks


def test_the_driver_lists_a_store_of_many_batch_folders_without_a_job_of_a_task_each(
    spark: SparkSession, tmp_path: Path
) -> None:
    # Past Spark's threshold (32 by default) the listing is a job of a task a folder:
    # seconds on two cores for the batches between two compactions.
    for batch in range(40):
        folder = tmp_path / "ratings" / f"batch_id={batch}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"user_id": [batch]}), folder / "part-0.parquet")
    context = spark.sparkContext
    context.setJobGroup("listing", "the store's listing")
    try:
        rows = spark.read.parquet(str(tmp_path / "ratings"))  # lists the 40 folders
        assert _tasks_of_group(spark, "listing") == [1]  # the schema's, from one footer
        assert rows.count() == 40
    finally:
        context.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]
