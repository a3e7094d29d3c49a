"""``BatchPipeline``: one micro-batch through every stage (see ``streaming.pipeline``)."""

from __future__ import annotations

import copy
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from streaming.heap import release_free_memory
from streaming.ingest.history import RecentRatings, latest_ratings
from streaming.ingest.intake import TakenBatch
from streaming.ingest.store import BatchCommit
from streaming.model.blend import ShortTerm, transition_counts
from streaming.model.holdout import CUTOFF
from streaming.model.policy import RetrainPolicy
from streaming.model.retrain import Retrainer, RetrainOutcome, RetrainRequest
from streaming.model.versions import ModelVersion, stars_version, training_split
from streaming.pipeline.contracts import BatchStore, ListPublisher, Models, StarsFitting, Topic
from streaming.pipeline.report import (
    BatchReport,
    batch_stats,
    freshness,
    keep_newest,
    live_hits,
)
from streaming.publish.publisher import PublishOutcome
from streaming.rating.fitter import FittedStars, StarsInput
from streaming.settings import ModelSettings, StreamSettings
from streaming.timing import timed

__all__ = [
    "RECENT_USERS_KEPT",
    "REPORTS_KEPT",
    "TRIM_EVERY_S",
    "BatchPipeline",
    "latest_offsets",
    "ratings_since",
    "with_stars",
]

_log = logging.getLogger("recstream.streaming")
# The newest micro-batches' reports kept in memory (the commit records keep them all).
REPORTS_KEPT = 10_000
# Users whose lists wait kept in the driver at most; past this (a long Redis outage, a
# long build on a busy feed) the lists are published in full from the store instead.
RECENT_USERS_KEPT = 50_000
# Seconds between two trims of malloc's free pages besides the one at each switch: what the
# batches and a build in flight free between switches stays resident otherwise (one trim
# 52 minutes into the soak gave back 41 MB of a 408 MB driver).
TRIM_EVERY_S = 30.0


def latest_offsets(commits: Sequence[BatchCommit]) -> dict[int, int]:
    """The offset after the last record read of each partition, from the commit records."""
    offsets: dict[int, int] = {}
    for record in commits:
        offsets.update({int(p): o for p, o in record.offsets.items()})
    return offsets


def ratings_since(commits: Sequence[BatchCommit], model: ModelVersion | None) -> int:
    """Valid ratings the batches after ``model``'s training batch stored."""
    trained_in = -1 if model is None or model.meta.batch_id is None else model.meta.batch_id
    return sum(record.valid for record in commits if record.batch_id > trained_in)


def with_stars(model: ModelVersion, fitted: FittedStars) -> ModelVersion:
    """``model`` with the rating model of ``fitted``.

    Its RMSE goes into the evaluation when it was fitted on this version's own training
    ratings.
    """
    evaluation = model.meta.evaluation
    if fitted.version == model.version and evaluation is not None:
        evaluation = {
            **evaluation,
            "rmse": fitted.rmse,
            "rmse_pairs": fitted.rmse_pairs,
            "rmse_model": "rating-model" if fitted.rmse_pairs else None,
        }
    timings = {**model.meta.timings_s, "rating_model": round(fitted.seconds, 3)}
    update = {"stars_from_version": fitted.version, "timings_s": timings, "evaluation": evaluation}
    meta = model.meta.model_copy(update=update)
    return replace(model, stars=fitted.model, meta=meta)


class BatchPipeline:
    """The micro-batch stages and the state they carry between batches.

    Args:
        store: takes (validates, stores) each batch and writes its commit record.
        models: saved versions and new fits.
        publisher: the lists' destination.
        topic: the catalog and the topic's end offsets.
        stars: the rating model's fits beside the stream.
        commits: the commit records so far (the offsets and counts are derived from them).
        arrivals: the stored first ratings of a movie, one (users, movies) pair of
            aligned arrays per stored batch, in the order the batches came and each in
            the order it had them: the short-term counts are rebuilt from them exactly
            as the batches counted them.
        model: the current version, if any.
        clock: seconds since the epoch (``time.time``).
        retrain_executor: where new versions are built (a driver thread in the job);
            None builds them inside the micro-batch that starts them.
    """

    def __init__(
        self,
        *,
        store: BatchStore,
        models: Models,
        publisher: ListPublisher,
        topic: Topic,
        stars: StarsFitting,
        stream: StreamSettings,
        model_settings: ModelSettings,
        commits: Sequence[BatchCommit] = (),
        arrivals: Iterable[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = (),
        model: ModelVersion | None = None,
        clock: Callable[[], float] = time.time,
        retrain_executor: Executor | None = None,
    ) -> None:
        self.store = store
        self.models = models
        self.publisher = publisher
        self.topic = topic
        self.stars = stars
        self.stream = stream
        self.model_settings = model_settings
        self.clock = clock
        self.policy = RetrainPolicy.from_settings(model_settings)
        # Short-term state rebuilt from the stored arrivals, then counted batch by batch.
        self.transitions = transition_counts(model_settings)
        for users, movies in arrivals:
            self.transitions.observe(users, movies)
        self.recent = RecentRatings()
        self.stored = sum(record.valid for record in commits)  # counted through:
        self._counted_through = max((record.batch_id for record in commits), default=-1)
        self._publish_in_full = False  # too many users waited: the next switch is in full
        self.short_term = ShortTerm.of(self.transitions, model_settings)
        self.model = model
        self.offsets = latest_offsets(commits)
        self.new_since_model = ratings_since(commits, model)
        self.retrainer = Retrainer(self._build, retrain_executor)
        # Since the running build's snapshot: the users who rated, and how many ratings.
        self._rated_meanwhile: set[int] = set()
        self._stored_meanwhile = 0
        self._last_batch: int | None = None  # the newest batch this run has seen
        self._trimmed_at = clock()
        self.reports: list[BatchReport] = []

    def resume(self) -> None:
        """After a (re)start.

        Publish the current version (idempotent if Redis has it) and ask for its stars if it
        has not got them.
        """
        if self.model is not None:
            self.publisher.new_model(self.model)
            self._ask_for_stars(self.model)

    def run(self, records: Any, batch_id: int) -> BatchReport:
        """Run one micro-batch (see the module docstring); safe to run again for the same id."""
        began = time.perf_counter()
        building = self.retrainer.busy
        self.adopt_stars()
        taken = self.store.take(records, batch_id)
        timings = dict(taken.timings_s)
        batch = taken.ratings.copy()
        batch["batch_id"] = batch_id
        offsets = taken.next_offsets()
        self.offsets.update(offsets)
        reasons = dict(Counter(reason for _, _, reason in taken.rejected))
        invalid = len(taken.rejected)
        with timed(timings, "history"):
            checked, hits, popular_hits = self._check_lists(batch, taken)
            after, changed = latest_ratings(taken.held, batch)
            self.recent.update(after)
            first_ratings = batch["first"].to_numpy(dtype=bool)
            self.transitions.observe(batch["user_id"].to_numpy()[first_ratings],
                                     batch["movie_id"].to_numpy()[first_ratings])  # fmt: skip
            self.new_since_model += len(batch)
            if batch_id > self._counted_through:  # a replayed batch's commit counted it
                self.stored += len(batch)
                self._counted_through = batch_id
            if self.retrainer.busy:
                self._rated_meanwhile.update(changed.tolist())
                self._stored_meanwhile += len(batch)

        reason = None if self.retrainer.busy else self._due()
        if reason is not None:
            with timed(timings, "retrain"):
                self._start_retrain(batch_id, reason)
        self._last_batch = batch_id
        switched = self._switch_if_ready()
        if switched is None and self.stream.fold_in and len(changed):
            self.publisher.users_changed(changed.tolist(), batch_id)

        outcome = self._flush()
        timings["publish"] = outcome.seconds
        if self.clock() - self._trimmed_at >= TRIM_EVERY_S:
            with timed(timings, "trim"):
                self._release_free_memory()
        commit = BatchCommit(
            batch_id=batch_id,
            offsets={str(p): o for p, o in offsets.items()},
            valid=len(batch),
            invalid=invalid,
            invalid_reasons=reasons,
            model_version=None if self.model is None else self.model.version,
            retrained=reason is not None,
            checked=checked,
            hits_at_10=hits,
            popular_hits_at_10=popular_hits,
            rating_time=[int(batch["timestamp"].min()), int(batch["timestamp"].max())]
            if len(batch)
            else [],
            freshness_s=freshness(batch["appended_s"].to_numpy(), self.clock()),
        )
        self.store.commit(commit)
        report = BatchReport(
            batch_id=batch_id,
            records=len(batch) + invalid,
            valid=len(batch),
            invalid=invalid,
            lag=self._lag(),
            retrain=reason,
            switched_to=switched,
            fold_in_users=outcome.fold_in_lists,
            publish=outcome,
            timings_s={name: round(s, 3) for name, s in timings.items()},
            seconds=round(time.perf_counter() - began, 3),
            building=building or self.retrainer.busy,
        )
        keep_newest(self.reports, report, REPORTS_KEPT)
        _log.info("%s", report.line)
        self.publisher.record_batch(batch_stats(commit, report, self.clock()))
        return report

    def between_batches(self, *, verify: bool = True) -> PublishOutcome | None:
        """Switch to a built version, adopt finished stars, requeue what Redis lost, publish.

        Without ``verify`` (at stop) Redis is not checked for a lost version. The outcome,
        or None when nothing waited.
        """
        self._switch_if_ready()
        self.adopt_stars()
        if verify:
            self.publisher.verify()
        if not self.publisher.has_pending:
            return None
        return self._flush()

    def adopt_stars(self) -> None:
        """Give the current version a rating model that finished fitting, and republish it.

        A fit for an older version than the current one's stars is dropped; one for a
        newer version than the stars it carries replaces them.
        """
        fitted = self.stars.take()
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
        self.model = with_stars(self.model, fitted)
        self.models.save(self.model)
        self.publisher.new_model(self.model)
        rmse = "" if fitted.rmse is None else f", held-out RMSE {fitted.rmse:.3f}"
        _log.info("rating model of version %d ready after %.1f s%s: version %d republished "
                  "with its stars", fitted.version, fitted.seconds, rmse,
                  self.model.version)  # fmt: skip

    def _flush(self) -> PublishOutcome:
        """Publish what waits; then let go of the recent users no list waits for.

        Past ``RECENT_USERS_KEPT`` users kept, the current version is queued in full
        (from the store) instead of their fold-ins, and so is the version being built.
        """
        outcome = self.publisher.flush(self.recent)
        if len(self.recent) > RECENT_USERS_KEPT:
            _log.warning("%d users' lists wait; the lists will be published in full from "
                         "the store instead", len(self.recent))  # fmt: skip
            if self.model is not None:
                self.publisher.new_model(self.model)
            self._publish_in_full = self.retrainer.busy
            self.recent.clear()
        elif not self.publisher.pending_users and not self.retrainer.busy:
            self.recent.clear()
        return outcome

    def _lag(self) -> int | None:
        """Records in the topic past what the job has read; None when unknown."""
        ends = self.topic.end_offsets()
        if ends is None:
            return None
        return sum(max(0, end - self.offsets.get(p, 0)) for p, end in ends.items())

    def _check_lists(self, batch: pd.DataFrame, taken: TakenBatch) -> tuple[int, int, int]:
        """(ratings checked, hits, popular hits): ``live_hits`` against the served lists.

        The lists are read as the lists' store holds them before the batch
        (``ListPublisher.served``: read, not ranked again). Without fold-in or a model,
        or when the store cannot answer, nothing is checked.
        """
        if self.model is None or not self.stream.fold_in or batch.empty:
            return 0, 0, 0
        served = self.publisher.served(np.unique(batch["user_id"].to_numpy()).tolist(), CUTOFF)
        if served is None:
            return 0, 0, 0
        return live_hits(batch, taken.held, served, [item for item, _ in self.model.popular])

    def _ask_for_stars(self, model: ModelVersion) -> None:
        """Have the rating model for ``model`` fitted beside the stream, unless it has it."""
        settings = self.model_settings
        if settings.rating_samples == 0 or not settings.rating_in_background:
            return
        if stars_version(model) == model.version:
            return
        through, cutoff = model.meta.batch_id, model.meta.holdout_from_timestamp

        def local() -> tuple[pd.DataFrame, pd.DataFrame]:
            return training_split(self.store.ratings(through), cutoff)

        self.stars.request(
            model.version, StarsInput(through, cutoff, model.meta.ratings or 0, local)
        )

    def _due(self) -> str | None:
        """Why a retrain is due now (``RetrainPolicy``), or None."""
        return self.policy.reason(
            stored=self.stored,
            new_since=self.new_since_model,
            seconds_since=None if self.model is None else self.clock() - self.model.meta.trained_at,
            has_model=self.model is not None,
        )

    def _start_retrain(self, batch_id: int, reason: str) -> None:
        """Start building version ``batch_id + 1`` on the store through now, counts copied."""
        self._rated_meanwhile.clear()
        self._stored_meanwhile = 0
        short_term = copy.deepcopy(self.short_term)
        request = RetrainRequest(batch_id + 1, batch_id, reason, short_term, self.model,
                                 self.clock())  # fmt: skip
        self.retrainer.start(request)

    def _build(self, request: RetrainRequest) -> tuple[ModelVersion, int | None]:
        """Fit, evaluate and save ``request``'s version, then write its lists (not current).

        Runs on the retrain executor: it compacts the store first (``BatchStore.compact``),
        then reads it through the request's batch and the request's copies. A batch that
        ran before a crash and saved this version finds it instead of fitting it again.
        """
        compacted = self.store.compact(request.batch_id)
        if compacted is not None and compacted.written is not None:
            _log.info("store: batches %d-%d compacted (%d batch folders, %d segments merged) "
                      "in %.1f s; %d superseded folders deleted, %d wait", *compacted.written,
                      compacted.batches, compacted.merged, compacted.seconds, compacted.deleted,
                      compacted.deferred)  # fmt: skip
        model = self.models.saved(request.version)
        if model is None:
            background = self.model_settings.rating_in_background
            model = self.models.train(version=request.version, batch_id=request.batch_id,
                                      reason=request.reason, fit_stars=not background)  # fmt: skip
            current = request.current
            if background and current is not None and current.stars is not None:
                meta = model.meta.model_copy(update={"stars_from_version": stars_version(current)})
                model = replace(model, stars=current.stars, meta=meta)
            self.models.save(model)
        began = time.perf_counter()
        staged = self.publisher.stage(model, request.batch_id, request.short_term)
        timings = {**model.meta.timings_s, "lists": round(time.perf_counter() - began, 3)}
        if compacted is not None:
            timings["compact"] = compacted.seconds
        model = replace(model, meta=model.meta.model_copy(update={"timings_s": timings}))
        self.models.save(model)  # with the time its lists took
        return model, staged

    def _switch_if_ready(self) -> int | None:
        """Switch to a version whose build finished; its number, or None."""
        outcome = self.retrainer.take()
        if outcome is None:
            return None
        meanwhile = sorted(self._rated_meanwhile)
        stored_since = self._stored_meanwhile
        self._rated_meanwhile.clear()
        self._stored_meanwhile = 0
        model = outcome.model
        if model is None:
            _log.error("version %d was not built (%s); the next batch that finds a retrain "
                       "due starts another", outcome.request.version, outcome.error)  # fmt: skip
        else:
            self._switch(model, outcome, meanwhile, stored_since)
        # A build frees tens of MB of small blocks around ones that live on, and malloc
        # keeps their pages: give them back at each switch, and every TRIM_EVERY_S
        # between (after every batch it cost p99: docs/benchmarks.md).
        self._release_free_memory()
        return None if model is None else model.version

    def _release_free_memory(self) -> None:
        release_free_memory()
        self._trimmed_at = self.clock()

    def _switch(
        self, model: ModelVersion, outcome: RetrainOutcome, meanwhile: list[int], stored: int
    ) -> None:
        """Make ``model`` current.

        The switch is queued with the users who rated since its build started, the
        catalog refreshed, its stars asked for.
        """
        self.model = model
        self.new_since_model = stored
        staged = None if self._publish_in_full else outcome.staged
        self._publish_in_full = False
        self.publisher.new_model(model, staged=staged, users=meanwhile,
                                 through_batch=self._last_batch)  # fmt: skip
        movies, bad = self.topic.catalog()
        if movies:
            self.publisher.catalog(movies)
        if bad:
            _log.warning("catalog: %d unusable entries skipped", bad)
        self._ask_for_stars(model)
        _log.info("switching to version %d, built in %.1f s, with %d users who rated "
                  "meanwhile folded in", model.version, outcome.seconds,
                  len(meanwhile))  # fmt: skip
