"""The micro-batch pipeline driven batch by batch with in-memory stores, no services."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from streaming.ingest.store import BatchCommit
from streaming.ingest.validation import DUPLICATE_REASON
from streaming.model.retrain import RetrainState
from streaming.model.versions import ModelVersion
from streaming.pipeline import (
    TRIM_EVERY_S,
    BatchPipeline,
    latest_offsets,
    live_hits,
    popular_hits,
    ratings_since,
)
from streaming.rating.fitter import FittedStars
from streaming.rating.fm import RatingModel
from streaming.settings import StreamSettings
from tests.conftest import model_settings
from tests.memory import (
    ManualExecutor,
    MemoryBatch,
    MemoryClock,
    MemoryModels,
    MemoryPublisher,
    MemoryStars,
    MemoryStore,
    MemoryTopic,
)

DAY = 86_400


class Wiring:
    """A pipeline and its in-memory collaborators; ``background`` builds versions on a
    ``ManualExecutor`` (``builds``), else inside the batch."""

    def __init__(self, tmp_path: Path, *, background: bool = False, **settings: Any) -> None:
        self.builds = ManualExecutor()
        self.background = background
        self.clock = MemoryClock()
        self.store = MemoryStore()
        self.models = MemoryModels(self.clock, self.store)
        self.topic = MemoryTopic(movies=[(1, "One", ["Drama"])], ends={0: 0})
        self.stars = MemoryStars()
        values = {"min_ratings": 20, "retrain_every_ratings": 30, "retrain_every_s": 3600.0,
                  "rating_samples": 0, **settings}  # fmt: skip
        self.settings = model_settings(**values)
        self.publisher = MemoryPublisher(self.store, self.settings)
        self.stream = StreamSettings(state_dir=tmp_path / "state")
        self.pipeline = self.build([], None)

    def build(self, commits: list[BatchCommit], model: ModelVersion | None) -> BatchPipeline:
        """A pipeline (re)started on the store as it is, like the job after a crash."""
        stored = self.store.ratings()
        arrivals = [(stored["user_id"].to_numpy(np.int64), stored["movie_id"].to_numpy(np.int64))]
        return BatchPipeline(
            store=self.store, models=self.models, publisher=self.publisher, topic=self.topic,
            stars=self.stars, stream=self.stream, model_settings=self.settings,
            commits=commits, arrivals=arrivals, model=model, clock=self.clock,
            retrain_executor=self.builds if self.background else None,
        )  # fmt: skip


def _state(pipeline: BatchPipeline) -> RetrainState:
    return pipeline.retrainer.state  # read afresh each time (mypy would keep the first answer)


def _version(pipeline: BatchPipeline) -> int | None:
    return None if pipeline.model is None else pipeline.model.version


def ratings(users: range, movies: range, at: int) -> list[tuple[int, int, float, int]]:
    """Every user of ``users`` rates every movie of ``movies`` (4 stars), one second apart."""
    rows = [(u, m, 4.0, at + i) for i, (u, m) in enumerate((u, m) for u in users for m in movies)]
    return rows


def test_a_batch_is_stored_counted_and_committed_last(tmp_path: Path) -> None:
    wired = Wiring(tmp_path)
    wired.topic.ends = {0: 15}
    report = wired.pipeline.run(
        MemoryBatch(ratings(range(1, 4), range(10, 14), DAY), rejected=["bad json"]), 0
    )
    assert (report.records, report.valid, report.invalid) == (13, 12, 1)
    assert report.lag == 2  # offsets 0-12 read, the topic ends at 15
    assert report.retrain is None  # 12 ratings < min_ratings
    assert report.fold_in_users == 0  # no model yet: the users wait for one
    assert wired.publisher.has_pending
    assert list(report.timings_s) == ["history", "publish"]
    commit = wired.store.commits[0]
    assert (commit.valid, commit.invalid, commit.invalid_reasons) == (12, 1, {"bad json": 1})
    assert commit.offsets == {"0": 13}
    assert commit.model_version is None and not commit.retrained
    assert commit.rating_time == [DAY, DAY + 11]
    assert wired.pipeline.stored == 12
    assert wired.store.stored[0]["first"].all()  # every rating a first of its movie
    assert wired.pipeline.new_since_model == 12
    (stats,) = wired.publisher.batch_stats  # the figures the console shows, after the commit
    assert (stats.batch_id, stats.valid, stats.invalid, stats.lag) == (0, 12, 1, 2)
    assert (stats.seconds, stats.model_version, stats.retrain) == (report.seconds, None, None)


def test_the_first_model_then_fold_in_then_a_retrain_every_n_ratings(tmp_path: Path) -> None:
    wired = Wiring(tmp_path)
    pipeline = wired.pipeline
    first = pipeline.run(MemoryBatch(ratings(range(1, 6), range(10, 15), DAY)), 0)
    assert first.retrain is not None and first.retrain.startswith("first model")
    assert wired.models.trained == [1] and wired.publisher.published_versions == [1]
    assert wired.publisher.catalogs == [wired.topic.movies]
    assert wired.store.commits[0].model_version == 1 and pipeline.new_since_model == 0

    second = pipeline.run(MemoryBatch(ratings(range(1, 3), range(15, 17), 2 * DAY), 25), 1)
    assert second.retrain is None
    assert wired.publisher.fold_ins == [(1, [1, 2])]
    assert second.fold_in_users == 2
    commit = wired.store.commits[1]
    assert commit.checked == 4  # each rating checked against its user's list before
    assert 0 <= commit.hits_at_10 <= 4 and 0 <= commit.popular_hits_at_10 <= 4

    third = pipeline.run(MemoryBatch(ratings(range(6, 9), range(10, 20), 3 * DAY), 29), 2)
    assert third.retrain == "34 new ratings >= 30"
    assert wired.models.trained == [1, 3] and wired.publisher.published_versions == [1, 3]
    assert pipeline.model is not None and pipeline.model.version == 3
    assert wired.store.compacted == [0, 2]  # each build compacts the store it is to read


def test_a_retrain_is_due_after_the_interval_once_something_new_came(tmp_path: Path) -> None:
    wired = Wiring(tmp_path)
    wired.pipeline.run(MemoryBatch(ratings(range(1, 6), range(10, 15), DAY)), 0)
    wired.clock.advance(3_599)
    assert wired.pipeline.run(MemoryBatch([(1, 20, 3.0, 2 * DAY)], 25), 1).retrain is None
    wired.clock.advance(1)
    due = wired.pipeline.run(MemoryBatch([(2, 20, 3.0, 2 * DAY)], 26), 2).retrain
    assert due == "3600 s since the last retrain >= 3600 s"


def test_a_replayed_batch_replaces_its_first_attempt_and_reuses_its_model(tmp_path: Path) -> None:
    wired = Wiring(tmp_path)
    batch = MemoryBatch(ratings(range(1, 6), range(10, 15), DAY))
    wired.pipeline.run(batch, 0)
    # The job crashed before Spark recorded batch 0: a restart recovers the state from
    # what the first attempt left (the store, commits, model) and runs batch 0 again,
    # against the users' state as it was before batch 0.
    resumed = wired.build(list(wired.store.commits.values()), wired.models.saved(1))
    again = resumed.run(batch, 0)
    assert (again.valid, again.invalid) == (25, 0)  # its own first attempt is no repeat
    assert wired.models.trained == [1]  # the saved version 1 is loaded, not fitted again
    assert resumed.stored == 25 and len(wired.store.stored[0]) == 25


def test_repeats_of_events_held_from_other_batches_are_set_aside(tmp_path: Path) -> None:
    wired = Wiring(tmp_path)
    rows = ratings(range(1, 3), range(10, 13), DAY)
    wired.pipeline.run(MemoryBatch(rows), 0)
    report = wired.pipeline.run(MemoryBatch([*rows[:2], (9, 10, 5.0, 2 * DAY)], 6), 1)
    assert (report.valid, report.invalid) == (1, 2)
    assert wired.store.commits[1].invalid_reasons == {DUPLICATE_REASON: 2}
    assert [reason for *_, reason in wired.store.dead_letters[1]] == [DUPLICATE_REASON] * 2
    assert wired.store.commits[1].offsets == {"0": 9}  # set-aside records still read


def test_lists_that_redis_refused_wait_and_go_between_batches(tmp_path: Path) -> None:
    wired = Wiring(tmp_path)
    wired.publisher.down = True
    report = wired.pipeline.run(MemoryBatch(ratings(range(1, 6), range(10, 15), DAY)), 0)
    assert report.publish.state == "waiting" and wired.publisher.published_versions == []
    assert wired.store.commits[0].model_version == 1  # the commit does not wait for Redis
    assert wired.pipeline.between_batches() is not None  # still down: tried, kept
    wired.publisher.down = False
    outcome = wired.pipeline.between_batches()
    assert outcome is not None and (outcome.state, outcome.version) == ("published", 1)
    assert wired.pipeline.between_batches() is None  # nothing left
    assert wired.publisher.verified == 3
    assert wired.publisher.batch_stats == []  # the batch's figures were dropped, not queued


def test_fold_in_off_queues_no_lists_and_checks_nothing(tmp_path: Path) -> None:
    wired = Wiring(tmp_path)
    wired.stream = wired.stream.model_copy(update={"fold_in": False})
    pipeline = wired.build([], None)
    pipeline.run(MemoryBatch(ratings(range(1, 6), range(10, 15), DAY)), 0)
    pipeline.run(MemoryBatch([(1, 20, 3.0, 2 * DAY)], 25), 1)
    assert wired.publisher.fold_ins == []
    assert wired.store.commits[1].checked == 0


def test_resume_publishes_the_current_version_and_asks_for_its_stars(tmp_path: Path) -> None:
    wired = Wiring(tmp_path, rating_samples=2, rating_sweeps=4, rating_burn_in=1)
    wired.pipeline.run(MemoryBatch(ratings(range(1, 6), range(10, 15), DAY)), 0)
    assert wired.stars.requested == [1]  # fitted beside the stream, not in the batch
    resumed = wired.build(list(wired.store.commits.values()), wired.models.saved(1))
    resumed.resume()
    assert wired.stars.requested == [1, 1]
    assert wired.publisher.has_pending  # version 1 queued again (idempotent in Redis)


def test_a_finished_rating_model_is_adopted_saved_and_republished(tmp_path: Path) -> None:
    wired = Wiring(tmp_path, rating_samples=2, rating_sweeps=4, rating_burn_in=1)
    pipeline = wired.pipeline
    pipeline.run(MemoryBatch(ratings(range(1, 6), range(10, 15), DAY)), 0)
    wired.stars.finish(FittedStars(1, _stars(), 0.93, 5, 1.5))
    pipeline.run(MemoryBatch([(1, 20, 3.0, 2 * DAY)], 25), 1)  # adopts at its start
    assert pipeline.model is not None and pipeline.model.stars is not None
    assert pipeline.model.meta.stars_from_version == 1
    saved = wired.models.saved(1)
    assert saved is not None and saved.stars is not None
    assert wired.publisher.published_versions == [1, 1]  # republished with its stars
    wired.stars.finish(FittedStars(1, _stars(), 0.95, 5, 1.5))  # not newer: dropped
    wired.stars.finish(FittedStars(2, None, None, 0, 0.1, error="boom"))  # failed: logged
    pipeline.adopt_stars()
    pipeline.adopt_stars()
    assert pipeline.model.meta.stars_from_version == 1


def test_state_is_derived_from_the_commit_records() -> None:
    commits = [
        BatchCommit(batch_id=0, offsets={"0": 10, "1": 4}, valid=14, invalid=0),
        BatchCommit(batch_id=1, offsets={"0": 18}, valid=8, invalid=0),
        BatchCommit(batch_id=2, offsets={"1": 9}, valid=5, invalid=0),
    ]
    assert latest_offsets(commits) == {0: 18, 1: 9}
    assert ratings_since(commits, None) == 27
    wired_model = MemoryModels(MemoryClock(), MemoryStore())
    model = wired_model.train(version=2, batch_id=1, reason="r", fit_stars=False)
    assert ratings_since(commits, model) == 5  # only batch 2 came after the fit in batch 1


def _stars() -> RatingModel:
    """A two-draw rating model of movies 10-14 (values do not matter here)."""
    draws, movies, rank = 2, 5, 2
    rng = np.random.default_rng(0)
    return RatingModel(
        movie_ids=np.arange(10, 15, dtype=np.int64),
        rated_factors=rng.normal(size=(draws, movies, rank)),
        rated_weights=rng.normal(size=(draws, movies)),
        movie_factors=rng.normal(size=(draws, movies, rank)),
        movie_bias=np.full((draws, movies), 3.5),
        prior_mean=np.zeros((draws, rank + 1)),
        prior_precision=np.ones((draws, rank + 1)),
        noise_precision=np.ones(draws),
    )


def test_reports_stay_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kept = 3
    monkeypatch.setattr("streaming.pipeline.batch.REPORTS_KEPT", kept)
    wired = Wiring(tmp_path)
    for batch_id in range(8):
        batch = MemoryBatch([(1, 10 + batch_id, 3.0, DAY + batch_id)], batch_id)
        wired.pipeline.run(batch, batch_id)
    assert len(wired.pipeline.reports) <= 2 * kept
    assert wired.pipeline.reports[-1].batch_id == 7


def test_malloc_is_trimmed_at_a_switch_and_every_trim_interval_between(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trims: list[float] = []
    wired = Wiring(tmp_path)
    monkeypatch.setattr(
        "streaming.pipeline.batch.release_free_memory", lambda: trims.append(wired.clock())
    )
    began = wired.clock()
    first = wired.pipeline.run(MemoryBatch(ratings(range(1, 6), range(10, 15), DAY)), 0)
    assert first.switched_to == 1 and trims == [began]  # the first version's switch
    assert "trim" not in first.timings_s  # that one is the switch's, not the interval's
    wired.clock.advance(TRIM_EVERY_S - 1)
    batch = MemoryBatch([(1, 20, 3.0, 2 * DAY)], 25)
    assert "trim" not in wired.pipeline.run(batch, 1).timings_s
    wired.clock.advance(1)
    trimmed = wired.pipeline.run(MemoryBatch([(2, 20, 3.0, 2 * DAY)], 26), 2)
    assert "trim" in trimmed.timings_s and trims == [began, began + TRIM_EVERY_S]
    assert "trim" not in wired.pipeline.run(MemoryBatch([(3, 20, 3.0, 2 * DAY)], 27), 3).timings_s
    assert len(trims) == 2


def test_a_version_builds_beside_the_batches_and_switches_in_with_who_rated_meanwhile(
    tmp_path: Path,
) -> None:
    wired = Wiring(tmp_path, background=True)
    pipeline = wired.pipeline
    first = pipeline.run(MemoryBatch(ratings(range(1, 6), range(10, 15), DAY)), 0)
    assert first.retrain is not None and first.switched_to is None
    assert _state(pipeline) is RetrainState.RUNNING
    assert pipeline.model is None and wired.store.commits[0].retrained

    # While it builds, batches go on against the current state, and no second build
    # starts (a first model would be due again at every batch).
    second = pipeline.run(MemoryBatch([(1, 20, 3.0, 2 * DAY), (9, 10, 5.0, 2 * DAY)], 25), 1)
    assert second.retrain is None and wired.models.trained == []
    assert wired.store.commits[1].model_version is None

    wired.builds.finish()  # fit, save and the lists of everyone in batch 0's snapshot
    assert _state(pipeline) is RetrainState.READY
    assert wired.models.trained == [1] and wired.models.saved(1) is not None
    assert wired.publisher.staged == {1: [1, 2, 3, 4, 5]}  # user 9 came after it
    assert wired.publisher.published_versions == []  # written, not switched yet

    third = pipeline.run(MemoryBatch([(3, 21, 4.0, 3 * DAY)], 27), 2)
    assert third.switched_to == 1 and _state(pipeline) is RetrainState.IDLE
    # the users who rated in batches 1 and 2 are folded into version 1 before the switch
    assert wired.publisher.switches == [(1, 5, [1, 3, 9])]
    assert wired.publisher.published_versions == [1]
    assert wired.publisher.fold_ins == [(-1, [1, 3, 9])]
    assert wired.store.commits[2].model_version == 1
    assert pipeline.new_since_model == 3  # the ratings stored after the snapshot
    assert wired.stars.requested == []  # rating_samples 0: no stars to fit


def test_a_version_ready_between_batches_is_switched_in_there(tmp_path: Path) -> None:
    wired = Wiring(tmp_path, background=True)
    wired.pipeline.run(MemoryBatch(ratings(range(1, 6), range(10, 15), DAY)), 0)
    wired.builds.finish()
    outcome = wired.pipeline.between_batches()
    assert outcome is not None and (outcome.state, outcome.version) == ("published", 1)
    assert wired.pipeline.model is not None and wired.pipeline.model.version == 1


def test_a_failed_build_is_dropped_and_the_next_due_batch_starts_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wired = Wiring(tmp_path, background=True)
    pipeline = wired.pipeline
    pipeline.run(MemoryBatch(ratings(range(1, 6), range(10, 15), DAY)), 0)
    train = wired.models.train
    monkeypatch.setattr(wired.models, "train", lambda *a, **k: 1 / 0)
    wired.builds.finish()
    monkeypatch.setattr(wired.models, "train", train)
    failed = pipeline.run(MemoryBatch([(1, 20, 3.0, 2 * DAY)], 25), 1)
    assert failed.switched_to is None and _version(pipeline) is None
    again = pipeline.run(MemoryBatch([(2, 20, 3.0, 2 * DAY)], 26), 2)
    assert again.retrain is not None  # a later batch, a higher version
    wired.builds.finish()
    assert pipeline.between_batches() is not None
    assert _version(pipeline) == 3


def test_lists_not_staged_are_published_in_full_at_the_switch(tmp_path: Path) -> None:
    wired = Wiring(tmp_path, background=True)
    wired.pipeline.run(MemoryBatch(ratings(range(1, 6), range(10, 15), DAY)), 0)
    wired.publisher.down = True  # Redis refuses the lists written beside the stream
    wired.builds.finish()
    wired.pipeline.run(MemoryBatch([(9, 10, 5.0, 2 * DAY)], 25), 1)
    assert wired.publisher.switches == [(1, None, [9])]  # in full: the fold-ins are moot
    wired.publisher.down = False
    assert wired.pipeline.between_batches() is not None
    assert wired.publisher.published_versions == [1] and wired.publisher.fold_ins == []


def test_a_build_carries_the_current_stars_until_its_own_are_fitted(tmp_path: Path) -> None:
    wired = Wiring(tmp_path, background=True, rating_samples=2, rating_sweeps=4,
                   rating_burn_in=1, min_ratings=5, retrain_every_ratings=3)  # fmt: skip
    pipeline = wired.pipeline
    pipeline.run(MemoryBatch(ratings(range(1, 3), range(10, 13), DAY)), 0)
    wired.builds.finish()
    pipeline.between_batches()
    wired.stars.finish(FittedStars(1, _stars(), 0.9, 3, 1.0))
    pipeline.adopt_stars()
    pipeline.run(MemoryBatch(ratings(range(3, 5), range(10, 12), 2 * DAY), 6), 1)  # due
    wired.builds.finish()
    pipeline.between_batches()
    assert pipeline.model is not None and pipeline.model.version == 2
    assert pipeline.model.stars is not None and pipeline.model.meta.stars_from_version == 1
    assert wired.stars.requested == [1, 2]  # and its own are asked for at the switch


def test_a_re_rating_is_kept_and_a_late_older_copy_changes_nothing(tmp_path: Path) -> None:
    wired = Wiring(tmp_path)
    wired.pipeline.run(MemoryBatch(ratings(range(1, 6), range(10, 15), DAY)), 0)
    newer = wired.pipeline.run(MemoryBatch([(1, 10, 1.0, 2 * DAY)], 25), 1)
    assert (newer.valid, newer.invalid) == (1, 0) and newer.fold_in_users == 1
    assert not wired.store.stored[1]["first"].any()  # a re-rating is no first rating
    older = wired.pipeline.run(MemoryBatch([(2, 10, 1.0, DAY - 5)], 26), 2)
    assert (older.valid, older.fold_in_users) == (1, 0)  # stored, but no list changed
    assert wired.store.ratings().query("user_id == 1 and movie_id == 10")["rating"].item() == 1.0


def test_users_kept_for_their_lists_are_let_go_once_published(tmp_path: Path) -> None:
    wired = Wiring(tmp_path)
    wired.pipeline.run(MemoryBatch(ratings(range(1, 6), range(10, 15), DAY)), 0)
    wired.publisher.down = True
    wired.pipeline.run(MemoryBatch([(1, 20, 3.0, 2 * DAY), (2, 20, 3.0, 2 * DAY)], 25), 1)
    assert len(wired.pipeline.recent) == 2  # their lists wait for Redis
    wired.publisher.down = False
    wired.pipeline.run(MemoryBatch([(3, 20, 3.0, 2 * DAY)], 27), 2)
    assert wired.publisher.fold_ins[-1] == (2, [3]) and len(wired.pipeline.recent) == 0


def test_too_many_waiting_users_turn_into_one_publication_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("streaming.pipeline.batch.RECENT_USERS_KEPT", 3)
    wired = Wiring(tmp_path)
    wired.pipeline.run(MemoryBatch(ratings(range(1, 6), range(10, 15), DAY)), 0)
    wired.publisher.down = True
    wired.pipeline.run(MemoryBatch(ratings(range(1, 5), range(20, 21), 2 * DAY), 25), 1)
    assert len(wired.pipeline.recent) == 0  # let go: version 1 is queued in full instead
    assert wired.publisher.switches[-1] == (1, None, [])
    wired.publisher.down = False
    assert wired.pipeline.between_batches() is not None
    assert wired.publisher.published_versions == [1, 1]


def test_the_live_check_reads_the_served_lists_and_skips_while_they_cannot_be_read(
    tmp_path: Path,
) -> None:
    wired = Wiring(tmp_path)
    pipeline = wired.pipeline
    pipeline.run(MemoryBatch(ratings(range(1, 6), range(10, 15), DAY)), 0)  # version 1
    wired.publisher.down = True
    pipeline.run(MemoryBatch(ratings(range(1, 3), range(15, 17), 2 * DAY), 25), 1)
    assert wired.store.commits[1].checked == 0  # nothing to read: nothing checked
    wired.publisher.down = False
    pipeline.run(MemoryBatch(ratings(range(1, 3), range(17, 19), 3 * DAY), 29), 2)
    assert wired.store.commits[2].checked == 4


def test_the_popular_baseline_skips_each_users_rated_movies() -> None:
    popular = np.array([10, 11, 12, 13], dtype=np.int64)
    users = np.array([1, 2], dtype=np.int64)
    # user 1 had rated 10 and 12: their baseline at cutoff 10 is 11, 13; user 2 had none
    held_users, held_movies = np.array([1, 1, 2]), np.array([10, 12, 99])
    rater = np.array([1, 1, 1, 2, 2])
    movie = np.array([11, 13, 12, 12, 50])  # 12 was rated by user 1: not in their list
    assert popular_hits(rater, movie, popular, users, held_users, held_movies) == 3


def test_live_hits_counts_the_served_lists_hits_beside_the_popular_baselines() -> None:
    batch = pd.DataFrame({"user_id": [1, 1, 1, 2, 2], "movie_id": [11, 13, 12, 12, 50]})
    held = pd.DataFrame({"user_id": [1, 1, 2], "movie_id": [10, 12, 99]})
    served = {1: [11, 20], 2: [50]}  # (1, 11) and (2, 50) were listed
    assert live_hits(batch, held, served, [10, 11, 12, 13]) == (5, 2, 3)
