"""The streaming updater: Kafka ratings in, fresh top-N lists in Redis out.

Each micro-batch (``foreachBatch``) runs, in order:

1. validate the records and set aside repeats of events already held; store the valid
   ones and the dead letters under its batch id (overwrite, so a replayed batch
   replaces its first attempt instead of adding to it);
2. merge the stored ratings into the driver's history, and count each user's first
   ratings of a movie into the short-term transitions (``streaming.model.transitions``);
3. retrain when the policy says so: fit, evaluate, save the model under version
   ``batch_id + 1`` (its rating model, for the predicted stars, is fitted beside the
   stream by ``streaming.rating.fitter`` and adopted when ready); otherwise note the users who
   rated, for fold-in;
4. flush to Redis (a new version in full then one atomic switch, or fold-in lists
   into the current version), retrying with backoff while Redis is down; between
   batches a thread goes on retrying, and republishes a version Redis lost;
5. write the batch's commit record (offsets, counts, model version), last.

A restart rebuilds the history (and the transitions, from it) from the store and loads
the newest saved model; the Structured Streaming checkpoint then replays any batch
whose commit Spark had not recorded, and steps 1-5 are idempotent for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import pandas as pd
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming.query import StreamingQuery

from producer.settings import KafkaSettings
from serving.settings import RedisSettings
from streaming.ingest.history import HISTORY_COLUMNS, RatingHistory
from streaming.ingest.store import BatchCommit, RatingStore
from streaming.ingest.topics import TopicWatcher, spark_source_options
from streaming.ingest.validation import DUPLICATE_REASON, parse_records, set_aside, split_parsed
from streaming.model.blend import ShortTerm, transition_counts
from streaming.model.holdout import CUTOFF
from streaming.model.policy import RetrainPolicy
from streaming.model.versions import (
    ModelVersion,
    load_latest_model,
    load_model,
    save_model,
    stars_version,
    train_model,
    training_split,
)
from streaming.publish.publisher import Publisher, PublishOutcome
from streaming.rating.fitter import FittedStars, StarsFitter
from streaming.settings import ModelSettings, StreamSettings
from streaming.timing import timed

__all__ = ["REPORTS_KEPT", "BatchReport", "StreamingJob", "keep_newest", "stop_between_batches"]

_log = logging.getLogger("recstream.streaming")
# The newest micro-batches' reports kept in memory (the commit records keep them all).
REPORTS_KEPT = 10_000


@dataclass(frozen=True)
class BatchReport:
    """What one micro-batch did; its ``line`` is the job's log line."""

    batch_id: int
    records: int
    valid: int
    invalid: int
    lag: int | None
    retrain: str | None
    fold_in_users: int
    publish: PublishOutcome
    timings_s: dict[str, float]

    @property
    def line(self) -> str:
        """One log line: counts, lag, fold-in, retrain, publishing, durations."""
        lag = "?" if self.lag is None else f"{self.lag:,}"
        retrain = f"yes ({self.retrain})" if self.retrain else "no"
        times = " ".join(f"{name} {seconds:.2f}s" for name, seconds in self.timings_s.items())
        publish = self.publish.state
        if self.publish.error:
            publish += f" ({self.publish.error})"
        return (
            f"batch {self.batch_id}: {self.records:,} records, {self.valid:,} valid, "
            f"{self.invalid:,} invalid, lag {lag}, fold-in {self.fold_in_users:,} users, "
            f"retrain {retrain}, redis {publish}, {times}"
        )


def _next_offsets(valid: pd.DataFrame, rejected: list[Row]) -> dict[int, int]:
    """The offset after the last record of each partition the batch read."""
    following: dict[int, int] = {}
    if len(valid):
        last = valid.groupby("partition")["offset"].max()
        following = {int(p): int(o) + 1 for p, o in last.items()}
    for row in rejected:
        partition = int(row["partition"])
        following[partition] = max(following.get(partition, 0), int(row["offset"]) + 1)
    return following


def _freshness(appended_s: npt.NDArray[np.float64]) -> list[float]:
    """[p50, max] seconds from the Kafka append of each event to now; empty for none."""
    if not len(appended_s):
        return []
    ages = time.time() - appended_s
    return [round(float(np.median(ages)), 3), round(float(ages.max()), 3)]


def keep_newest(reports: list[BatchReport], report: BatchReport, kept: int) -> None:
    """Append ``report``; past ``2 × kept`` reports, drop all but the newest ``kept``.

    Trimming by halves keeps appends cheap, and a list (unlike a bounded deque) can be
    read by another thread while a micro-batch appends to it.
    """
    reports.append(report)
    if len(reports) > 2 * kept:
        del reports[: len(reports) - kept]


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
    """The ``foreachBatch`` body and its state; ``start`` wires it to the Kafka source."""

    def __init__(
        self,
        spark: SparkSession,
        kafka: KafkaSettings,
        redis_settings: RedisSettings,
        stream: StreamSettings,
        model: ModelSettings,
    ) -> None:
        self.spark = spark
        self.kafka = kafka
        self.stream = stream
        self.model_settings = model
        self.policy = RetrainPolicy.from_settings(model)
        self.store = RatingStore(spark, stream.state_dir / "store")
        self.models_dir = stream.state_dir / "models"
        self.publisher = Publisher(spark, redis_settings, stream, model)
        self.watcher = TopicWatcher(kafka)
        self.fitter = StarsFitter(model)
        self.history = RatingHistory()
        self.history.add(self.store.stored_rows().select(*HISTORY_COLUMNS).toPandas())
        # Short-term state derived from the history, then counted batch by batch.
        self.transitions = transition_counts(model)
        self.transitions.observe(*self.history.arrival_order())
        self.short_term = ShortTerm.of(self.transitions, model)
        self.publisher.short_term = self.short_term
        self.model: ModelVersion | None = load_latest_model(self.models_dir)
        commits = self.store.commits()
        self._offsets: dict[int, int] = {}
        for record in commits:
            self._offsets.update({int(p): o for p, o in record.offsets.items()})
        trained_in = -1 if self.model is None else int(self.model.meta["batch_id"])
        self._new_since_model = sum(c.valid for c in commits if c.batch_id > trained_in)
        if self.model is not None:
            self.publisher.new_model(self.model)  # idempotent if Redis already has it
            self._ask_for_stars(self.model)  # its own were not ready before the stop
        self.reports: list[BatchReport] = []
        # Micro-batches and the between-batch publisher share the history and the
        # publisher; the lock keeps them apart.
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._keeper: threading.Thread | None = None

    def process_batch(self, records: DataFrame, batch_id: int) -> BatchReport:
        """Run one micro-batch (see the module docstring); safe to run again for the same id."""
        timings: dict[str, float] = {}
        self._adopt_stars()
        parsed = parse_records(records).persist()
        try:
            with timed(timings, "validate"):
                batch, valid, invalid, rejected = self._validate(parsed, batch_id)
            with timed(timings, "store"):
                self.store.write_batch(
                    batch_id, valid.drop("kafka_timestamp"), invalid if rejected else None
                )
        finally:
            parsed.unpersist()
        offsets = _next_offsets(batch, rejected)
        reasons = dict(Counter(str(row["reason"]) for row in rejected))
        self._offsets.update(offsets)
        batch["batch_id"] = batch_id
        with timed(timings, "history"):
            checked, hits, popular_hits = self._check_lists(batch)
            first_ratings = self.history.unseen(batch)
            changed = self.history.add(batch[list(HISTORY_COLUMNS)])
            self.transitions.observe(batch["user_id"].to_numpy()[first_ratings],
                                     batch["movie_id"].to_numpy()[first_ratings])  # fmt: skip
            self._new_since_model += len(batch)

        reason = self.policy.reason(
            stored=len(self.history),
            new_since=self._new_since_model,
            seconds_since=None
            if self.model is None
            else time.time() - self.model.meta["trained_at"],
            has_model=self.model is not None,
        )
        if reason is not None:
            with timed(timings, "retrain"):
                self.model = self._retrain(batch_id, reason)
                self._new_since_model = 0
                movies, bad = self.watcher.catalog()
                if movies:
                    self.publisher.catalog(movies)
                if bad:
                    _log.warning("catalog: %d unusable entries skipped", bad)
        elif self.stream.fold_in and len(changed):
            self.publisher.users_changed(changed.tolist(), batch_id)

        outcome = self.publisher.flush(self.history)
        timings["publish"] = outcome.seconds
        self.store.commit(
            BatchCommit(
                batch_id=batch_id,
                offsets={str(p): o for p, o in offsets.items()},
                valid=len(batch),
                invalid=sum(reasons.values()),
                invalid_reasons=reasons,
                model_version=None if self.model is None else self.model.version,
                retrained=reason is not None,
                checked=checked,
                hits_at_10=hits,
                popular_hits_at_10=popular_hits,
                rating_time=[int(batch["timestamp"].min()), int(batch["timestamp"].max())]
                if len(batch)
                else [],
                freshness_s=_freshness(batch["appended_s"].to_numpy()),
            )
        )
        ends = self.watcher.end_offsets()
        lag = None
        if ends is not None:
            lag = sum(max(0, end - self._offsets.get(p, 0)) for p, end in ends.items())
        report = BatchReport(
            batch_id=batch_id,
            records=len(batch) + sum(reasons.values()),
            valid=len(batch),
            invalid=sum(reasons.values()),
            lag=lag,
            retrain=reason,
            fold_in_users=outcome.fold_in_lists,
            publish=outcome,
            timings_s={name: round(s, 3) for name, s in timings.items()},
        )
        keep_newest(self.reports, report, REPORTS_KEPT)
        _log.info("%s", report.line)
        return report

    def _validate(
        self, parsed: DataFrame, batch_id: int
    ) -> tuple[pd.DataFrame, DataFrame, DataFrame, list[Row]]:
        """The batch's valid ratings in the driver (partition/offset order, repeats of
        events already held set aside), the valid and invalid frames to store, and the
        rejected records' positions and reasons."""
        valid, invalid = split_parsed(parsed, now_s=int(time.time()))
        batch = pd.DataFrame(
            valid.select(
                *HISTORY_COLUMNS[:-2],
                "partition",
                "offset",
                F.col("kafka_timestamp").cast("double").alias("appended_s"),
            ).toPandas()
        )
        batch = batch.sort_values(["partition", "offset"], ignore_index=True)
        repeated = self.history.repeats(batch, batch_id)
        if repeated.any():
            positions = self.spark.createDataFrame(
                batch.loc[repeated, ["partition", "offset"]], "partition int, offset long"
            )
            valid, invalid = set_aside(parsed, valid, invalid, positions, DUPLICATE_REASON)
            batch = batch.loc[~repeated].reset_index(drop=True)
        return batch, valid, invalid, invalid.select("partition", "offset", "reason").collect()

    def _check_lists(self, batch: pd.DataFrame) -> tuple[int, int, int]:
        """(ratings checked, hits, popular hits): each rating against its user's list
        before the batch, and against the model's popular list less the user's rated
        movies (the baseline the lists must beat).

        With fold-in on, the lists served from the history before the batch are exactly
        what Redis holds for those users (the retrain's list, or the last fold-in's).
        Without fold-in or a model there is nothing to check against.
        """
        if self.model is None or not self.stream.fold_in or batch.empty:
            return 0, 0, 0
        users = np.unique(batch["user_id"].to_numpy(dtype=np.int64))
        histories = self.history.of_users(users)
        served = self.model.served_lists(histories, self.model_settings, CUTOFF,
                                         self.short_term)  # fmt: skip
        popular = [movie for movie, _ in self.model.popular]
        listed, baseline = {}, {}
        for position, user in enumerate(users.tolist()):
            listed[user] = set(served[position])
            rated = set(histories.of(position)[0].tolist())
            baseline[user] = set([m for m in popular if m not in rated][:CUTOFF])
        pairs = list(zip(batch["user_id"].tolist(), batch["movie_id"].tolist(), strict=True))
        return (len(batch), sum(movie in listed[user] for user, movie in pairs),
                sum(movie in baseline[user] for user, movie in pairs))  # fmt: skip

    def start(self, *, available_now: bool = False) -> StreamingQuery:
        """Start the query: the Kafka source, ``process_batch`` per micro-batch, the trigger."""
        reader = (
            self.spark.readStream.format("kafka")
            .options(**spark_source_options(self.kafka))
            .option("subscribe", self.kafka.topic)
            .option("startingOffsets", self.stream.starting_offsets)
            .option("maxOffsetsPerTrigger", str(self.stream.max_offsets_per_trigger))
        )
        writer = (
            reader.load()
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

    def _run_batch(self, records: DataFrame, batch_id: int) -> None:
        with self._lock:
            self.process_batch(records, batch_id)

    def _keep_published(self) -> None:
        """Between batches: retry what waits for Redis, and republish what Redis lost.

        Spark runs a micro-batch only when records arrive, so on a quiet feed nothing
        else would publish the lists that piled up while Redis was down.
        """
        while not self._closing.wait(self.stream.redis_retry_initial_s):
            if not self._lock.acquire(blocking=False):
                continue  # a micro-batch is running; it flushes itself
            try:
                self._adopt_stars()
                self.publisher.verify()
                if self.publisher.has_pending:
                    outcome = self.publisher.flush(self.history)
                    if outcome.state == "published":
                        _log.info(
                            "redis published between batches: version %s, %d model lists, "
                            "%d fold-in lists",
                            outcome.version,
                            outcome.model_lists,
                            outcome.fold_in_lists,
                        )
            except Exception:  # a bug here must not end the thread silently
                _log.exception("publishing between batches failed")
            finally:
                self._lock.release()

    def close(self, *, settle: bool = True, settle_timeout_s: float = 900.0) -> None:
        """Stop the between-batch publisher; release the Kafka consumer held outside Spark.

        With ``settle`` (a run that ended by itself, such as ``available_now``), first wait
        up to ``settle_timeout_s`` for the rating model being fitted and publish its stars;
        without (an interrupted run), cancel the fit: the next start fits it again.
        """
        if settle and self.model is not None:
            if self.fitter.busy:
                _log.info("waiting for the rating model before stopping")
            if not self.fitter.wait(settle_timeout_s):
                _log.warning("the rating model was not ready within %.0f s; the next start "
                             "fits it again", settle_timeout_s)  # fmt: skip
            with self._lock:
                self._adopt_stars()
                if self.publisher.has_pending:
                    outcome = self.publisher.flush(self.history)
                    _log.info("redis %s at stop: version %s, %d model lists", outcome.state,
                              outcome.version, outcome.model_lists)  # fmt: skip
        self._closing.set()
        if self._keeper is not None:
            self._keeper.join(timeout=60)
        self.fitter.close()
        self.watcher.close()

    def _ask_for_stars(self, model: ModelVersion) -> None:
        """Have the rating model for ``model`` fitted beside the stream, unless it has it."""
        settings = self.model_settings
        if settings.rating_samples == 0 or not settings.rating_in_background:
            return
        if stars_version(model) == model.version:
            return
        training, held_out = training_split(
            self.history.frame(), model.meta.get("holdout_from_timestamp")
        )
        if len(training):
            self.fitter.request(model.version, training, held_out)

    def _adopt_stars(self) -> None:
        """Give the current version a rating model that finished fitting, and republish it.

        Called with the lock held (or before the query starts). A fit for an older
        version than the current one's stars is dropped; one for a newer version than
        the stars it carries replaces them.
        """
        fitted = self.fitter.take()
        if fitted is None or self.model is None:
            return
        if fitted.model is None:
            if fitted.error:
                _log.error("rating model for version %d failed (%s); lists keep the stars "
                           "they have", fitted.version, fitted.error)  # fmt: skip
            return
        current = stars_version(self.model)
        if current is not None and fitted.version <= current:
            return
        self.model = _with_stars(self.model, fitted)
        save_model(self.models_dir, self.model)
        self.publisher.new_model(self.model)
        rmse = "" if fitted.rmse is None else f", held-out RMSE {fitted.rmse:.3f}"
        _log.info("rating model of version %d ready after %.1f s%s: version %d republished "
                  "with its stars", fitted.version, fitted.seconds, rmse,
                  self.model.version)  # fmt: skip

    def _retrain(self, batch_id: int, reason: str) -> ModelVersion:
        version = batch_id + 1
        saved = self.models_dir / f"v{version}.npz"
        if saved.is_file():  # this batch ran before a crash and already trained it
            model = load_model(saved)
        else:
            background = self.model_settings.rating_in_background
            model = train_model(
                self.store.ratings(),
                self.history,
                self.model_settings,
                version=version,
                batch_id=batch_id,
                reason=reason,
                fit_stars=not background,
            )
            if background and self.model is not None and self.model.stars is not None:
                meta = {**model.meta, "stars_from_version": stars_version(self.model)}
                model = replace(model, stars=self.model.stars, meta=meta)
            save_model(self.models_dir, model)
        self.publisher.new_model(model)
        self._ask_for_stars(model)
        return model


def _with_stars(model: ModelVersion, fitted: FittedStars) -> ModelVersion:
    """``model`` with the rating model of ``fitted``; its RMSE goes into the evaluation
    when it was fitted on this version's own training ratings."""
    meta = {**model.meta, "stars_from_version": fitted.version}
    meta["timings_s"] = {**meta.get("timings_s", {}), "rating_model": round(fitted.seconds, 3)}
    evaluation = meta.get("evaluation")
    if fitted.version == model.version and evaluation is not None:
        meta["evaluation"] = {
            **evaluation,
            "rmse": fitted.rmse,
            "rmse_pairs": fitted.rmse_pairs,
            "rmse_model": "rating-model" if fitted.rmse_pairs else None,
        }
    return replace(model, stars=fitted.model, meta=meta)
