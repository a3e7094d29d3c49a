"""Getting models and fold-in lists into Redis, and waiting out a Redis that is down.

The job hands the publisher what should be in Redis (a new model version, the users
whose lists changed, the catalog) and asks it to ``flush`` once per micro-batch. When
Redis fails, the work stays pending and the next attempt waits with exponential
backoff; the job keeps accumulating ratings meanwhile, and one flush after Redis is back
publishes everything: a pending model covers every user, so fold-in users that piled
up behind it need no separate write. A Redis that comes back empty (restarted without
persistence) gets the current version and the catalog again, in full.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import redis
from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession

from serving.connection import open_redis
from serving.layout import (
    PIPELINE_KEPT,
    BatchStats,
    LayoutDecodeError,
    ModelMeta,
    RedisLayout,
    decode_list,
    encode_list,
)
from serving.settings import RedisSettings
from streaming.ingest.history import RecentRatings
from streaming.model.blend import ShortTerm
from streaming.model.lists import lists_for
from streaming.model.versions import ModelVersion
from streaming.publish.executors import ListTarget, publish_ratings
from streaming.publish.writes import (
    delete_abandoned_versions,
    delete_expired_versions,
    encoded_lists,
    mark_building,
    publish_catalog,
    switch_current,
    write_factors,
    write_lists,
    write_similar,
    write_version,
)
from streaming.settings import ModelSettings, StreamSettings

__all__ = ["PublishOutcome", "Publisher"]

_log = logging.getLogger(__name__)
# Executor-side Redis failures reach the driver wrapped in a Spark error.
_PUBLISH_ERRORS = (redis.RedisError, OSError, Py4JJavaError, PySparkException)


@dataclass
class PublishOutcome:
    """What one flush did."""

    state: str = "idle"  # idle | published | waiting | failed
    version: int | None = None
    model_lists: int = 0
    fold_in_lists: int = 0
    error: str = ""
    seconds: float = 0.0


@dataclass
class _Pending:
    model: ModelVersion | None = None
    staged: int | None = None  # lists of ``model`` already written, before the switch
    users: set[int] = field(default_factory=set)
    catalog: list[tuple[int, str, Sequence[str]]] | None = None
    last_batch: int | None = None

    def empty(self) -> bool:
        return self.model is None and not self.users and self.catalog is None


class Publisher:
    """Pending Redis work of the streaming job, flushed with retry and backoff.

    A version's lists for everyone are scored from ``ratings(through_batch)``, the
    store's ratings (latest per user and movie) through that batch (None: all), on the
    executors; fold-in lists from the recent users' ratings the job hands ``flush``.
    """

    def __init__(
        self,
        spark: SparkSession,
        ratings: Callable[[int | None], DataFrame],
        settings: RedisSettings,
        stream: StreamSettings,
        model_settings: ModelSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        stage_partitions: int | None = None,
        reading: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> None:
        self.spark = spark
        self.ratings = ratings
        self.reading = reading  # keeps the store's files while a publication reads them
        self.settings = settings
        self.layout = RedisLayout(settings.key_prefix)
        self.stream = stream
        self.model_settings = model_settings
        self.published: ModelVersion | None = None
        # The hybrid's short-term part; the job updates its counts in place every batch.
        self.short_term: ShortTerm | None = None
        self._folded_in: tuple[int | None, int | None] = (None, None)  # (version, batch)
        self._pending = _Pending()
        self._clock = clock
        self._retry_at = 0.0
        self._backoff = stream.redis_retry_initial_s
        self._catalog: list[tuple[int, str, Sequence[str]]] | None = None  # the last written
        # Partitions of the lists ``stage`` writes beside the stream (None: all cores).
        self.stage_partitions = stage_partitions

    def new_model(
        self, model: ModelVersion, *, staged: int | None = None, users: Sequence[int] = (),
        through_batch: int | None = None,
    ) -> None:  # fmt: skip
        """Switch to this version at the next flush.

        Without ``staged`` it is published in full. With ``staged`` (how many of its lists
        ``stage`` wrote, for everyone who had rated when it was built), only ``users``, who
        rated since (up to batch ``through_batch``, which its metadata then names as the
        last folded in), get their lists in it before the switch; should the lists' store have
        lost the staged lists, it is published in full after all. Either way the pending
        fold-ins into the older version are superseded.
        """
        self._pending.model = model
        self._pending.staged = staged
        self._pending.users = set() if staged is None else {int(user) for user in users}
        if staged is not None and users:
            self._pending.last_batch = through_batch

    def stage(
        self, model: ModelVersion, through_batch: int, short_term: ShortTerm | None
    ) -> int | None:
        """Write ``model``'s lists of everyone stored through ``through_batch``, before the switch.

        Then its movies' nearest movies and its factor table (should that fail, the
        switch writes them).
        Safe beside a flush on another thread: it writes only the new version's keys
        and touches none of the pending work. How many lists; None when writing them
        failed (the switch then publishes the version in full).
        """
        try:
            client = open_redis(self.settings)
            try:
                mark_building(client, self.layout, model.version)
            finally:
                client.close()
            staged = self._model_lists(model, through_batch, short_term, self.stage_partitions)
        except _PUBLISH_ERRORS as exc:
            _log.warning("writing version %d's lists ahead of its switch failed (%s); it will "
                         "be published in full", model.version, type(exc).__name__)  # fmt: skip
            return None
        try:
            client = open_redis(self.settings)
            try:
                self._write_items(client, model)
            finally:
                client.close()
        except _PUBLISH_ERRORS as exc:
            _log.warning("writing version %d's nearest movies and factors ahead of its switch "
                         "failed (%s); the switch writes them", model.version,
                         type(exc).__name__)  # fmt: skip
        return staged

    def users_changed(self, users: Sequence[int], batch_id: int) -> None:
        """Refresh these users' lists in the current version at the next flush."""
        self._pending.users.update(int(user) for user in users)
        self._pending.last_batch = batch_id

    def catalog(self, movies: list[tuple[int, str, Sequence[str]]]) -> None:
        """Write these catalog entries at the next flush."""
        self._pending.catalog = movies

    @property
    def has_pending(self) -> bool:
        """True while something waits to be written to Redis."""
        return not self._pending.empty()

    def verify(self) -> None:
        """Queue the current version again if Redis lost it (a quiet check between batches).

        Errors are ignored: a Redis that is down is found, and waited out, by ``flush``.
        """
        if self.published is None or self.has_pending:
            return
        try:
            client = open_redis(self.settings)
            try:
                self._requeue_if_lost(client)
            finally:
                client.close()
        except (redis.RedisError, OSError):
            return

    def served(self, users: Sequence[int], k: int) -> dict[int, list[int]] | None:
        """The first ``k`` movies each of ``users`` is served now, as serving reads them.

        Their list in the current version, or that version's popular list for a user
        without one. None when Redis cannot answer (down, no current version, or a value
        it cannot read): then nothing is checked against it.
        """
        try:
            client = open_redis(self.settings)
            try:
                current = client.get(self.layout.current)
                if current is None:
                    return None
                version = int(current)
                with client.pipeline(transaction=False) as pipe:
                    pipe.get(self.layout.popular(version))
                    pipe.hmget(self.layout.lists(version), [str(user) for user in users])
                    popular_raw, lists_raw = pipe.execute()
            finally:
                client.close()
            if popular_raw is None:
                return None
            popular = [movie for movie, _ in decode_list(popular_raw).items[:k]]
            return {
                int(user): popular if raw is None
                else [movie for movie, _ in decode_list(raw).items[:k]]
                for user, raw in zip(users, lists_raw, strict=True)
            }  # fmt: skip
        except (redis.RedisError, OSError, ValueError, LayoutDecodeError) as exc:
            _log.warning("the served lists could not be read for the live check (%s); this "
                         "batch's ratings are not checked", type(exc).__name__)  # fmt: skip
            return None

    def record_batch(self, stats: BatchStats) -> bool:
        """Push one micro-batch's figures onto ``p:pipeline`` (kept to ``PIPELINE_KEPT``).

        Best effort: figures Redis does not take (down) are dropped, not retried, since
        they describe the past and the data itself is published by ``flush``. True when
        written.
        """
        try:
            client = open_redis(self.settings)
            try:
                with client.pipeline(transaction=True) as pipe:
                    pipe.lpush(self.layout.pipeline, stats.to_json())
                    pipe.ltrim(self.layout.pipeline, 0, PIPELINE_KEPT - 1)
                    pipe.execute()
            finally:
                client.close()
        except (redis.RedisError, OSError) as exc:
            _log.debug("batch %d's figures not written (%s)", stats.batch_id, type(exc).__name__)
            return False
        return True

    @property
    def pending_users(self) -> int:
        """Users whose refreshed lists wait for Redis."""
        return len(self._pending.users)

    def flush(self, recent: RecentRatings) -> PublishOutcome:
        """Publish what is pending, unless a retry wait is running; never raises for Redis."""
        if self._pending.empty():
            return PublishOutcome()
        now = self._clock()
        if now < self._retry_at:
            wait = self._retry_at - now
            return PublishOutcome("waiting", error=f"Redis retry in {wait:.1f} s")
        began = time.perf_counter()
        outcome = PublishOutcome("published")
        try:
            self._publish(recent, outcome)
        except _PUBLISH_ERRORS as exc:
            self._retry_at = now + self._backoff
            outcome.state = "failed"
            outcome.error = f"{type(exc).__name__}; next attempt in {self._backoff:.1f} s"
            _log.warning("publishing to Redis failed: %s", outcome.error)
            self._backoff = min(self._backoff * 2, self.stream.redis_retry_max_s)
        else:
            self._backoff = self.stream.redis_retry_initial_s
        outcome.seconds = time.perf_counter() - began
        return outcome

    def _publish(self, recent: RecentRatings, outcome: PublishOutcome) -> None:
        client = open_redis(self.settings)
        try:
            client.ping()  # fail on the driver before any executor work starts
            self._requeue_if_lost(client)
            if self._pending.catalog is not None:
                publish_catalog(client, self.layout, self._pending.catalog)
                self._catalog = self._pending.catalog
                self._pending.catalog = None
            model = self._pending.model
            if model is not None:
                outcome.model_lists, outcome.fold_in_lists = self._publish_model(
                    client, recent, model, self._pending.staged
                )
                self.published = model
                self._pending.model = None
                self._pending.staged = None
                self._pending.users.clear()
            outcome.version = self.published.version if self.published else None
            if self._pending.users and self.published is not None:
                outcome.fold_in_lists = self._publish_fold_in(client, recent, self.published)
                self._pending.users.clear()
        finally:
            client.close()

    def _requeue_if_lost(self, client: redis.Redis) -> None:
        """Publish the current version again if Redis came back without it.

        A Redis restarted without persistence (the default here) has lost every list;
        serving would answer "no model" until the next retrain without this.
        """
        if self.published is None or self._pending.model is not None:
            return
        if client.exists(self.layout.current):
            return
        _log.warning(
            "Redis holds no published version (restarted without persistence?); "
            "publishing version %d again in full",
            self.published.version,
        )
        self._pending.model = self.published
        self._pending.staged = None
        self._pending.users.clear()
        if self._pending.catalog is None:
            self._pending.catalog = self._catalog

    def _publish_model(
        self, client: redis.Redis, recent: RecentRatings, model: ModelVersion,
        staged: int | None,
    ) -> tuple[int, int]:  # fmt: skip
        """Write ``model`` (in full, or what its staged lists miss), then switch to it.

        (Model lists, fold-in lists) written.
        """
        folded = 0
        if staged is not None and client.exists(self.layout.lists(model.version)):
            written = staged
            if self._pending.users:
                folded = self._fold_in(client, recent, model)
        else:
            if staged is not None:
                _log.warning("version %d's staged lists are gone from Redis; publishing it "
                             "in full", model.version)  # fmt: skip
            mark_building(client, self.layout, model.version)
            written = self._model_lists(model, None, self.short_term)
        item_keys = (self.layout.similar(model.version), self.layout.factors(model.version))
        if client.exists(*item_keys) < len(item_keys):  # not both staged by the build
            self._write_items(client, model)
        popular = encode_list(model.popular, time.time(), "popular", model.popular_stars())
        write_version(client, self.layout, model.version, [], popular, self._meta(model))
        if switch_current(client, self.layout, model.version):
            delete_expired_versions(client, self.layout, self.stream.version_grace_s)
            delete_abandoned_versions(client, self.layout, model.version)
        return written, folded

    def _model_lists(
        self, model: ModelVersion, through_batch: int | None, short_term: ShortTerm | None,
        partitions: int | None = None,
    ) -> int:  # fmt: skip
        """Score and write ``model``'s list of everyone stored through ``through_batch``.

        On the executors, in ``partitions`` tasks (None: one per core).
        """
        target = ListTarget(self.settings, model.version, "model")
        partitions = partitions or self.spark.sparkContext.defaultParallelism
        with self.reading():
            return publish_ratings(self.ratings(through_batch),
                                   model.fold_in(self.model_settings), self.model_settings.top_k,
                                   target, partitions, model.stars, short_term,
                                   self.model_settings.explain_k)  # fmt: skip

    def _write_items(self, client: redis.Redis, model: ModelVersion) -> None:
        """Write ``model``'s item keys: each movie's nearest movies, and the factor table."""
        began = time.perf_counter()
        written = write_similar(client, self.layout, model.version, model.items,
                                self.model_settings.similar_k)  # fmt: skip
        size = write_factors(client, self.layout, model.version, model.items)
        _log.info("version %d: the nearest movies of %d movies and %.1f MB of factors written "
                  "in %.1f s", model.version, written, size / 2**20,
                  time.perf_counter() - began)  # fmt: skip

    def _publish_fold_in(
        self, client: redis.Redis, recent: RecentRatings, model: ModelVersion
    ) -> int:
        written = self._fold_in(client, recent, model)
        client.set(self.layout.meta(model.version), self._meta(model).to_json())
        return written

    def _fold_in(self, client: redis.Redis, recent: RecentRatings, model: ModelVersion) -> int:
        """Write the pending users' fold-in lists into ``model``'s version; how many."""
        users = sorted(self._pending.users)
        lists = lists_for(recent.of_users(users), model.fold_in(self.model_settings),
                          self.model_settings.top_k, model.stars, self.short_term,
                          self.model_settings.explain_k)  # fmt: skip
        encoded = encoded_lists(lists, time.time(), "fold-in")
        written = write_lists(client, self.layout, model.version, encoded)
        self._folded_in = (model.version, self._pending.last_batch)
        return written

    def _meta(self, model: ModelVersion) -> ModelMeta:
        """``model``'s metadata as published: with the newest batch folded into its lists."""
        version, batch = self._folded_in
        if version != model.version:
            return model.meta
        return model.meta.model_copy(update={"last_folded_in_batch": batch})
