"""The streaming updater's wiring: Kafka ratings in, fresh top-N lists in Redis out.

``StreamingJob`` builds the real collaborators of the micro-batch pipeline
(``streaming.pipeline``): Spark's intake and store, the model folder, the Redis
publisher, the Kafka topic watcher and the rating model's fitter. It recovers what the
driver keeps (the short-term transition counts, rebuilt from the store one stored batch
at a time, and the newest saved model), starts the query (the Kafka source, validation and
every user's ratings in Spark's state: ``streaming.ingest.state``) with ``foreachBatch``
over the pipeline, keeps publishing between batches, and stops cleanly.

On a restart the Structured Streaming checkpoint brings back the users' state and
replays any batch whose commit Spark had not recorded; the pipeline's stages are
idempotent for it.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming.query import StreamingQuery

from producer.settings import KafkaSettings
from serving.settings import RedisSettings
from streaming import heap
from streaming.ingest.intake import SparkIntake
from streaming.ingest.state import with_user_state
from streaming.ingest.store import RatingStore
from streaming.ingest.topics import TopicWatcher, spark_source_options
from streaming.model.versions import ModelFolder, ModelVersion
from streaming.pipeline import BatchPipeline, BatchReport
from streaming.publish.publisher import Publisher
from streaming.rating.fitter import StarsFitter
from streaming.session import RETRAIN_POOL, STREAM_POOL
from streaming.settings import ModelSettings, StreamSettings

__all__ = ["RETRAIN_JOB_GROUP", "StreamingJob", "stop_between_batches"]

_log = logging.getLogger("recstream.streaming")
# The Spark jobs of a version built beside the stream (cancelled together at stop).
RETRAIN_JOB_GROUP = "recstream-retrain"


def stop_between_batches(query: StreamingQuery, timeout_s: float = 60.0) -> bool:
    """Stop the query once no micro-batch runs (``stop`` alone cancels a running one).

    Waits up to ``timeout_s`` for a gap between batches, then stops regardless (a
    cancelled batch is replayed from the checkpoint at the next start, idempotently).
    True when it found the gap.
    """
    deadline = time.monotonic() + timeout_s
    idle = False
    while query.isActive and time.monotonic() < deadline:
        if not query.status["isTriggerActive"]:
            idle = True
            break
        time.sleep(0.02)
    query.stop()
    return idle


class StreamingJob:
    """The pipeline wired to Spark, Kafka and Redis; ``start`` runs it as a query.

    Construction recovers the state from the store (reads only); ``start`` publishes
    the current version (idempotently) and starts the query.
    """

    def __init__(
        self,
        spark: SparkSession,
        kafka: KafkaSettings,
        redis_settings: RedisSettings,
        stream: StreamSettings,
        model: ModelSettings,
    ) -> None:
        # Large buffers freed go back to the operating system, Arrow's included. The
        # arena cap is whole only if settled before the process started threads, as
        # ``python -m streaming run`` does first; here it stops further arenas only.
        heap.settle()
        self.spark = spark
        self.kafka = kafka
        self.stream = stream
        self.store = RatingStore(spark, stream.state_dir / "store", stream.compact_min_batches)
        # Before anything reads the store: what the last run left loose or superseded.
        self.store.compact()
        self.watcher = TopicWatcher(kafka)
        # A build beside the stream runs at most this many tasks at once.
        slots = model.retrain_slots or max(1, spark.sparkContext.defaultParallelism - 1)
        beside = slots if model.retrain_in_background else None
        # The fitter and the publisher read the store beside the build that compacts it.
        self.fitter = StarsFitter(model, self.store.ratings, slots, reading=self.store.reading)
        self.publisher = Publisher(spark, self.store.ratings, redis_settings, stream, model,
                                   stage_partitions=beside, reading=self.store.reading)  # fmt: skip
        models = ModelFolder(stream.state_dir / "models", self.store.ratings, model, beside)
        self._builder: ThreadPoolExecutor | None = None
        if model.retrain_in_background:
            self._builder = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="recstream-retrain",
                initializer=self._in_retrain_pool,
            )  # fmt: skip
        self.pipeline = BatchPipeline(
            store=SparkIntake(spark, self.store),
            models=models,
            publisher=self.publisher,
            topic=self.watcher,
            stars=self.fitter,
            stream=stream,
            model_settings=model,
            commits=self.store.commits(),
            arrivals=self.store.arrivals(),
            model=models.latest(),
            retrain_executor=self._builder,
        )
        self.publisher.short_term = self.pipeline.short_term
        # Micro-batches and the between-batch publisher share the pipeline; the lock
        # keeps them apart.
        self._lock = threading.Lock()
        self._resumed = False
        self._closing = threading.Event()
        self._keeper: threading.Thread | None = None

    @property
    def model(self) -> ModelVersion | None:
        """The current model version, if any."""
        return self.pipeline.model

    @property
    def reports(self) -> list[BatchReport]:
        """The newest micro-batches' reports (``streaming.pipeline.batch.REPORTS_KEPT``)."""
        return self.pipeline.reports

    def process_batch(self, records: DataFrame, batch_id: int) -> BatchReport:
        """Run one micro-batch through the pipeline; safe to run again for the same id."""
        with self._lock:
            self._resume()
            return self.pipeline.run(records, batch_id)

    def _in_retrain_pool(self) -> None:
        """Run the retrain thread's Spark jobs in their pool, under one cancellable group."""
        context = self.spark.sparkContext
        context.setLocalProperty("spark.scheduler.pool", RETRAIN_POOL)
        context.setJobGroup(RETRAIN_JOB_GROUP, "a model version built beside the stream",
                            interruptOnCancel=True)  # fmt: skip

    def _run_batch(self, records: DataFrame, batch_id: int) -> None:
        self.process_batch(records, batch_id)

    def _resume(self) -> None:
        if not self._resumed:
            self.pipeline.resume()
            self._resumed = True

    def start(self, *, available_now: bool = False) -> StreamingQuery:
        """Start the query: the Kafka source, ``process_batch`` per micro-batch, the trigger."""
        with self._lock:
            self._resume()
        # The query's micro-batches run in this thread's pool, ahead of a retrain's jobs.
        self.spark.sparkContext.setLocalProperty("spark.scheduler.pool", STREAM_POOL)
        reader = (
            self.spark.readStream.format("kafka")
            .options(**spark_source_options(self.kafka))
            .option("subscribe", self.kafka.topic)
            .option("startingOffsets", self.stream.starting_offsets)
            .option("maxOffsetsPerTrigger", str(self.stream.max_offsets_per_trigger))
        )
        writer = (
            with_user_state(reader.load())
            .writeStream.foreachBatch(self._run_batch)
            .option("checkpointLocation", self.stream.checkpoint_path())
            .queryName("recstream-updater")
        )
        if available_now:
            writer = writer.trigger(availableNow=True)
        else:
            writer = writer.trigger(processingTime=f"{self.stream.trigger_interval_s} seconds")
            if self._keeper is None:
                self._keeper = threading.Thread(
                    target=self._keep_published, name="recstream-publisher", daemon=True
                )
                self._keeper.start()
        return writer.start()

    def _keep_published(self) -> None:
        """Between batches: retry what waits for Redis, and republish what Redis lost.

        Spark runs a micro-batch only when records arrive, so on a quiet feed nothing
        else would publish the lists that piled up while Redis was down.
        """
        while not self._closing.wait(self.stream.redis_retry_initial_s):
            if not self._lock.acquire(blocking=False):
                continue  # a micro-batch is running; it flushes itself
            try:
                outcome = self.pipeline.between_batches()
                if outcome is not None and outcome.state == "published":
                    _log.info("redis published between batches: version %s, %d model lists, "
                              "%d fold-in lists", outcome.version, outcome.model_lists,
                              outcome.fold_in_lists)  # fmt: skip
            except Exception:  # a bug here must not end the thread silently
                _log.exception("publishing between batches failed")
            finally:
                self._lock.release()

    def close(self, *, settle: bool = True, settle_timeout_s: float = 900.0) -> None:
        """Stop the between-batch publisher; release the Kafka consumer held outside Spark.

        With ``settle`` (a run that ended by itself, such as ``available_now``), first wait
        up to ``settle_timeout_s`` for the version being built and switch to it, then for
        the rating model being fitted and publish its stars; without (an interrupted run),
        cancel both: the next start retrains when due, and fits the stars again.
        """
        retrainer = self.pipeline.retrainer
        if settle and self._resumed and retrainer.busy:
            _log.info("waiting for version %s being built before stopping",
                      retrainer.request.version if retrainer.request else "?")  # fmt: skip
            if not retrainer.wait(settle_timeout_s):
                _log.warning("the version being built was not ready within %.0f s; the next "
                             "start retrains", settle_timeout_s)  # fmt: skip
            with self._lock:  # switch to it (and ask for its stars) before they are awaited
                self.pipeline.between_batches(verify=False)
        if settle and self.model is not None and self._resumed:
            if self.fitter.busy:
                _log.info("waiting for the rating model before stopping")
            if not self.fitter.wait(settle_timeout_s):
                _log.warning("the rating model was not ready within %.0f s; the next start "
                             "fits it again", settle_timeout_s)  # fmt: skip
            with self._lock:
                outcome = self.pipeline.between_batches(verify=False)
            if outcome is not None:
                _log.info("redis %s at stop: version %s, %d model lists", outcome.state,
                          outcome.version, outcome.model_lists)  # fmt: skip
        self._closing.set()
        if self._keeper is not None:
            self._keeper.join(timeout=60)
        if self._builder is not None:
            if retrainer.busy:
                self.spark.sparkContext.cancelJobGroup(RETRAIN_JOB_GROUP)
            self._builder.shutdown(wait=False, cancel_futures=True)
        self.fitter.close()
        self.watcher.close()
