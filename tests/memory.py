"""In-memory implementations of the pipeline's interfaces (``streaming.pipeline``).

They keep what they are given in plain Python so a test can drive ``BatchPipeline``
batch by batch without Spark, Kafka or Redis, and read back what each stage did. A
batch's "records" here are a ``MemoryBatch``: the valid-looking ratings and the records
the validation would have rejected. ``MemoryStore`` plays Spark's state of every user's
ratings with the same per-user logic (``streaming.ingest.state.UserLedger``), over the
batches stored before the one at hand, as a restored checkpoint would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from serving.layout import BatchStats, ModelMeta
from streaming.ingest.history import RecentRatings, compressed_rows
from streaming.ingest.intake import BATCH_COLUMNS, HELD_COLUMNS, TakenBatch
from streaming.ingest.state import judge, latest
from streaming.ingest.store import BatchCommit
from streaming.ingest.validation import DUPLICATE_REASON
from streaming.model.blend import ShortTerm
from streaming.model.topn import ItemIndex
from streaming.model.versions import ModelVersion
from streaming.publish.publisher import PublishOutcome
from streaming.rating.fitter import FittedStars, StarsInput
from streaming.settings import ModelSettings


@dataclass
class MemoryBatch:
    """One micro-batch's records: ratings (user, movie, rating, timestamp) on partition 0
    from ``first_offset``, then ``rejected`` (reason per record) after them."""

    ratings: list[tuple[int, int, float, int]]
    first_offset: int = 0
    rejected: list[str] = field(default_factory=list)
    appended_s: float = 0.0

    def frame(self) -> pd.DataFrame:
        """The ratings with their Kafka position and append time (all ``BATCH_COLUMNS`` but one)."""
        frame = pd.DataFrame(self.ratings, columns=["user_id", "movie_id", "rating", "timestamp"])
        frame["partition"] = 0
        frame["offset"] = np.arange(len(frame), dtype=np.int64) + self.first_offset
        frame["appended_s"] = self.appended_s
        return frame[list(BATCH_COLUMNS[:-1])]


class MemoryStore:
    """``BatchStore``: what each batch stored (overwritten by a replay) and its commits."""

    def __init__(self) -> None:
        self.stored: dict[int, pd.DataFrame] = {}
        self.dead_letters: dict[int, list[tuple[int, int, str]]] = {}
        self.commits: dict[int, BatchCommit] = {}
        self.compacted: list[int] = []  # the batch ids compactions were asked up to

    def take(self, records: MemoryBatch, batch_id: int) -> TakenBatch:
        """Set aside the repeats, mark first ratings, store the rest under ``batch_id``."""
        ratings = records.frame()
        after = records.first_offset + len(ratings)
        rejected = [(0, after + i, reason) for i, reason in enumerate(records.rejected)]
        before = [frame for batch, frame in sorted(self.stored.items()) if batch < batch_id]
        earlier = pd.concat(before, ignore_index=True) if before else ratings.iloc[:0]
        held = earlier.loc[earlier["user_id"].isin(ratings["user_id"]), list(HELD_COLUMNS)]
        repeated, first = judge(held, ratings)
        rejected += [(0, int(o), DUPLICATE_REASON) for o in ratings.loc[repeated, "offset"]]
        kept = ratings.assign(first=first).loc[~repeated].reset_index(drop=True)
        self.stored[batch_id] = kept
        self.dead_letters[batch_id] = rejected
        return TakenBatch(kept, rejected, held=latest(held)[list(HELD_COLUMNS)])

    def ratings(self, through_batch: int | None = None) -> pd.DataFrame:
        """The latest stored rating per (user, movie) through ``through_batch`` (None: all)."""
        chosen = [frame for batch, frame in sorted(self.stored.items())
                  if through_batch is None or batch <= through_batch]  # fmt: skip
        if not chosen:
            return pd.DataFrame(columns=list(HELD_COLUMNS))
        every = pd.concat(chosen, ignore_index=True)[list(HELD_COLUMNS)]
        every = every.sort_values(["user_id", "movie_id", "timestamp"], kind="stable")
        return every.drop_duplicates(["user_id", "movie_id"], keep="last").reset_index(drop=True)

    def compact(self, through_batch: int) -> None:
        """Nothing to fold: the batches are frames in memory (``RatingStore.compact``)."""
        self.compacted.append(through_batch)

    def users(self, through_batch: int | None = None) -> list[int]:
        """Every user stored through ``through_batch`` (None: all), ascending."""
        return sorted(set(self.ratings(through_batch)["user_id"].astype(int).tolist()))

    def commit(self, record: BatchCommit) -> None:
        """Keep the record (a replayed batch's replaces its first attempt's)."""
        self.commits[record.batch_id] = record


class MemoryModels:
    """``Models``: versions kept in a dict; a fit gives every known movie a fixed random
    factor (seeded by the version) and ranks the popular list by rating count."""

    def __init__(self, clock: MemoryClock, store: MemoryStore, rank: int = 3) -> None:
        self.clock = clock
        self.store = store
        self.rank = rank
        self.versions: dict[int, ModelVersion] = {}
        self.trained: list[int] = []

    def saved(self, version: int) -> ModelVersion | None:
        """The version saved under ``version``, if any."""
        return self.versions.get(version)

    def train(self, *, version: int, batch_id: int, reason: str, fit_stars: bool) -> ModelVersion:
        """A model of every movie stored through ``batch_id``."""
        self.trained.append(version)
        frame = self.store.ratings(batch_id)
        counts = frame["movie_id"].value_counts()
        movies = np.sort(counts.index.to_numpy(dtype=np.int64))
        factors = np.random.default_rng(version).normal(size=(len(movies), self.rank))
        popular = [(int(m), float(c)) for m, c in counts.items()]
        meta = ModelMeta(version=version, batch_id=batch_id, reason=reason,
                         trained_at=self.clock(), ratings=len(frame))  # fmt: skip
        return ModelVersion(version, ItemIndex(movies, factors), popular, meta)

    def save(self, model: ModelVersion) -> None:
        """Keep ``model`` under its version."""
        self.versions[model.version] = model


class MemoryPublisher:
    """``ListPublisher`` with the Redis publisher's queueing rules: a new version replaces
    queued fold-ins (unless its lists were staged: then the users who rated since are
    folded into it), and fold-ins wait until some version is published. ``flush``
    publishes what it can unless ``down`` (then all stays queued: ``waiting``); ``stage``
    fails while ``down``."""

    def __init__(self, store: MemoryStore, settings: ModelSettings | None = None) -> None:
        self.store = store
        self.settings = settings or ModelSettings()
        self.down = False
        self.staged: dict[int, list[int]] = {}  # version -> users whose lists it wrote
        self.switches: list[tuple[int, int | None, list[int]]] = []  # version, staged, users
        self.published_versions: list[int] = []
        self.fold_ins: list[tuple[int, list[int]]] = []
        self.catalogs: list[list[Any]] = []
        self.verified = 0
        self.batch_stats: list[BatchStats] = []  # what record_batch was given, oldest first
        self._model: ModelVersion | None = None
        self._published: ModelVersion | None = None
        self._users: dict[int, list[int]] = {}
        self._catalog: list[Any] | None = None
        self._served_through: int | None = None  # the newest batch stored at the last flush

    @property
    def has_pending(self) -> bool:
        """Whether anything waits to be published."""
        return self._model is not None or bool(self._users) or self._catalog is not None

    @property
    def pending_users(self) -> int:
        """Users whose fold-in lists wait."""
        return sum(len(users) for users in self._users.values())

    def new_model(
        self, model: ModelVersion, *, staged: int | None = None, users: Sequence[int] = (),
        through_batch: int | None = None,
    ) -> None:  # fmt: skip
        """Queue ``model``, replacing the queued fold-ins: in full, or after ``staged``
        lists with ``users`` folded into it."""
        self._model = model
        self.switches.append((model.version, staged, sorted(users)))
        self._users = {-1: list(users)} if staged is not None and users else {}

    def stage(
        self, model: ModelVersion, through_batch: int, short_term: ShortTerm | None
    ) -> int | None:
        """Note the users whose lists ``model`` would get; None while ``down``."""
        if self.down:
            return None
        self.staged[model.version] = self.store.users(through_batch)
        return len(self.staged[model.version])

    def users_changed(self, users: Sequence[int], batch_id: int) -> None:
        """Queue fold-in lists for ``users``."""
        self._users.setdefault(batch_id, []).extend(users)

    def served(self, users: Sequence[int], k: int) -> dict[int, list[int]] | None:
        """What Redis would serve ``users``: the published version's lists (ALS only) from
        the ratings stored when it last flushed; None while ``down`` or before a version."""
        if self.down or self._published is None:
            return None
        stored = self.store.ratings(self._served_through)
        every = compressed_rows(stored["user_id"], stored["movie_id"], stored["rating"])
        asked = np.asarray(users, dtype=np.int64)
        lists = self._published.served_lists(every.for_users(asked), self.settings, k)
        return dict(zip(asked.tolist(), lists, strict=True))

    def catalog(self, movies: list[Any]) -> None:
        """Queue the catalog."""
        self._catalog = movies

    def verify(self) -> None:
        """Count the checks (nothing here is ever lost)."""
        self.verified += 1

    def record_batch(self, stats: BatchStats) -> bool:
        """Keep a batch's figures, unless ``down`` (then they are dropped, as in Redis)."""
        if self.down:
            return False
        self.batch_stats.append(stats)
        return True

    def flush(self, recent: RecentRatings) -> PublishOutcome:
        """Publish what is queued, or keep it queued while ``down``."""
        if not self.has_pending:
            return PublishOutcome()
        if self.down:
            return PublishOutcome(state="waiting", error="down")
        outcome = PublishOutcome(state="published")
        self._served_through = max(self.store.stored, default=None)
        if self._catalog is not None:
            self.catalogs.append(self._catalog)
            self._catalog = None
        if self._model is not None:
            self.published_versions.append(self._model.version)
            outcome.model_lists = len(self.store.users())
            self._published, self._model = self._model, None
        if self._published is None:
            return outcome
        outcome.version = self._published.version
        for batch_id, users in sorted(self._users.items()):
            missing = [user for user in users if not len(recent.of_users([user]).movies)]
            assert not missing, f"fold-in of users whose ratings are not kept: {missing}"
            self.fold_ins.append((batch_id, sorted(users)))
            outcome.fold_in_lists += len(users)
        self._users = {}
        return outcome


@dataclass
class MemoryTopic:
    """``Topic``: a fixed catalog and end offsets (None: unknown)."""

    movies: list[Any] = field(default_factory=list)
    unusable: int = 0
    ends: dict[int, int] | None = None

    def catalog(self) -> tuple[list[Any], int]:
        """The catalog and its unusable entries."""
        return self.movies, self.unusable

    def end_offsets(self) -> dict[int, int] | None:
        """The end offsets, if known."""
        return self.ends


class MemoryStars:
    """``StarsFitting``: records requests; ``finish`` makes a fit ready for ``take``."""

    def __init__(self) -> None:
        self.requested: list[int] = []
        self._ready: list[FittedStars] = []

    def request(self, version: int, ratings: StarsInput) -> None:
        """Note the request, and load its ratings as the fitter would."""
        ratings.local()
        self.requested.append(version)

    def finish(self, fitted: FittedStars) -> None:
        """Make ``fitted`` the next result ``take`` returns."""
        self._ready.append(fitted)

    def take(self) -> FittedStars | None:
        """The oldest finished fit not taken yet."""
        return self._ready.pop(0) if self._ready else None


class MemoryClock:
    """Seconds that move only when a test says so."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds


class ManualExecutor(Executor):
    """An ``Executor`` whose work runs only when the test calls ``finish``."""

    def __init__(self) -> None:
        self.waiting: list[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Queue ``fn(*args)``; its future completes at ``finish``."""
        future: Future[Any] = Future()
        self.waiting.append((future, fn, args))
        return future

    def finish(self) -> None:
        """Run the queued work, oldest first."""
        waiting, self.waiting = self.waiting, []
        for future, fn, args in waiting:
            future.set_result(fn(*args))
