"""The rating model fitted beside the stream, so that a retrain does not wait for the stars.

The rating model (``streaming.rating.fm``) costs more than the ALS fit on ML-1M-sized data on
2 cores (29 s against 18 s). Fitted inside the retrain, it would hold up the
micro-batch, and every user's fold-in with it, for that long. Here a thread of the
driver has it fitted in a spawned process instead (``myfm`` holds the GIL while it
samples, so a thread alone would stall the micro-batches), and the retrain publishes
its lists at once.

Any fitted rating model serves any version's lists, because a user's stars are solved
from their ratings at publication. So a new version carries the newest rating model
already fitted. Once the fit on its own training ratings lands, the job adopts it: it
saves the version again and republishes it in full, with those stars and their held-out
RMSE. A movie the carried model does not know has no stars until then.

Past ``rating_spark_above`` ratings the sampler's time and the ratings it loads would
grow with the store, so the stars come from Spark's explicit ALS instead, fitted and
scored on the executors from this same thread (``streaming.rating.spark_stars``).

One fit runs at a time. A retrain during a fit queues its inputs, replacing anything
queued before, so the newest data wins. ``close`` ends a running fit's process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from streaming.ingest.history import RatingHistory
from streaming.rating.fm import FitCancelledError, RatingModel, fit_in_process, fit_rating_model
from streaming.rating.spark_stars import fit_spark_stars, held_out_rmse
from streaming.session import RETRAIN_POOL
from streaming.settings import ModelSettings

__all__ = [
    "STARS_JOB_GROUP",
    "FittedStars",
    "RatingsLoader",
    "StarsFitter",
    "StarsInput",
    "held_out_stars",
    "rating_model",
    "split_at",
    "stars_in_spark",
    "stars_rmse",
]

STARS_JOB_GROUP = "recstream-stars"

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FittedStars:
    """A finished fit.

    The rating model for ``version``'s training ratings, scored on its held-out ratings;
    ``model`` is None (and ``error`` says why) when the fit failed.
    """

    version: int
    model: RatingModel | None
    rmse: float | None
    rmse_pairs: int
    seconds: float
    error: str | None = None


# (training, held out) ratings, loaded by the fitting thread when it starts.
RatingsLoader = Callable[[], tuple[pd.DataFrame, pd.DataFrame]]


@dataclass(frozen=True)
class StarsInput:
    """What a version's stars are fitted on.

    The store's ratings through batch ``through`` (``ratings`` of them): those before
    ``cutoff`` are fitted on, the rest held out to score the fit. ``local`` loads both as
    frames in this process, for the factorization machine.
    """

    through: int | None
    cutoff: int | None
    ratings: int
    local: RatingsLoader


@dataclass(frozen=True)
class _Request:
    version: int
    data: StarsInput


def stars_in_spark(settings: ModelSettings, ratings: int) -> bool:
    """Whether stars fitted on ``ratings`` ratings come from Spark (``rating_spark_above``)."""
    return ratings > settings.rating_spark_above


def split_at(ratings: DataFrame, cutoff: int | None) -> tuple[DataFrame, DataFrame]:
    """(before, from) ``cutoff``: the store's ratings fitted on and held out."""
    if cutoff is None:
        return ratings, ratings.limit(0)
    return ratings.where(F.col("timestamp") < cutoff), ratings.where(F.col("timestamp") >= cutoff)


class StarsFitter:
    """Fits rating models in one background thread, newest request first.

    With ``distributed`` (the store's ratings through a batch, as a Spark DataFrame), a
    version of more than ``rating_spark_above`` ratings has its stars fitted and scored
    by Spark (``streaming.rating.spark_stars``) in ``blocks`` partitions, from this
    thread, in the retrain's scheduler pool; the rest are sampled in a spawned process.
    A fit runs inside ``reading`` (the store's, ``RatingStore.reading``), so a compaction
    meanwhile deletes none of the files it reads.
    """

    def __init__(
        self,
        settings: ModelSettings,
        distributed: Callable[[int | None], DataFrame] | None = None,
        blocks: int | None = None,
        *,
        reading: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> None:
        self._settings = settings
        self._distributed = distributed
        self._reading = reading
        self._blocks = blocks
        self._spark_context: Any = None  # set while Spark fits, to cancel its jobs
        self._changed = threading.Condition()
        self._queued: _Request | None = None
        self._fitting: int | None = None  # the version being fitted
        self._done: FittedStars | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def request(self, version: int, ratings: StarsInput) -> None:
        """Fit the rating model for ``version`` on ``ratings``, scored on its held-out part.

        The loading, too, happens on the fitting thread, and the ratings are let go after.
        """
        with self._changed:
            if self._stop.is_set():
                return
            self._queued = _Request(version, ratings)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="recstream-rating-model", daemon=True
                )
                self._thread.start()
            self._changed.notify_all()

    def take(self) -> FittedStars | None:
        """The newest finished fit not taken yet, if any (never waits)."""
        with self._changed:
            done, self._done = self._done, None
            return done

    @property
    def busy(self) -> bool:
        """True while a fit runs or waits to run."""
        with self._changed:
            return self._busy()

    def _busy(self) -> bool:
        return self._queued is not None or self._fitting is not None

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until no fit runs or waits; True unless ``timeout_s`` passed first."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._busy(), timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Cancel what is queued and stop a running fit at its next sweep."""
        with self._changed:
            self._stop.set()
            self._queued = None
            self._changed.notify_all()
            context = self._spark_context
        if context is not None:
            context.cancelJobGroup(STARS_JOB_GROUP)
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _work(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._queued is not None or self._stop.is_set())
                if self._stop.is_set():
                    return
                request, self._queued = self._queued, None
                assert request is not None  # noqa: S101 - the wait above ensures it
                self._fitting = request.version
            with self._reading():  # the store's files stay while the fit reads them
                finished = self._fit(request)
            with self._changed:
                self._fitting = None
                if finished is not None:
                    self._done = finished  # a newer fit replaces one nobody took
                self._changed.notify_all()

    def _fit(self, request: _Request) -> FittedStars | None:
        began = time.perf_counter()
        data = request.data
        try:
            if self._distributed is not None and stars_in_spark(self._settings, data.ratings):
                model, rmse, pairs = self._fit_in_spark(data)
            else:
                model, rmse, pairs = self._sample(data)
        except FitCancelledError:
            return None
        except Exception as exc:  # reported to the job, never lost in the thread
            _log.exception("the rating model for version %d failed", request.version)
            return FittedStars(request.version, None, None, 0, time.perf_counter() - began,
                               f"{type(exc).__name__}: {exc}")  # fmt: skip
        return FittedStars(request.version, model, rmse, pairs, time.perf_counter() - began)

    def _sample(self, data: StarsInput) -> tuple[RatingModel | None, float | None, int]:
        """The factorization machine on ratings loaded here, fitted in a spawned process."""
        training, held_out = data.local()
        model = rating_model(training, self._settings, self._stop.is_set, separate_process=True)
        if model is None or not len(held_out):
            return model, None, 0
        predicted = held_out_stars(model, training, held_out)
        return (model, *stars_rmse(predicted, held_out["rating"].to_numpy()))

    def _fit_in_spark(self, data: StarsInput) -> tuple[RatingModel | None, float | None, int]:
        """Spark's explicit ALS on the store's ratings, fitted and scored on the executors."""
        assert self._distributed is not None  # noqa: S101 - the caller checked
        ratings = self._distributed(data.through)
        context = ratings.sparkSession.sparkContext
        context.setLocalProperty("spark.scheduler.pool", RETRAIN_POOL)
        context.setJobGroup(STARS_JOB_GROUP, "the stars of a version", interruptOnCancel=True)
        with self._changed:
            if self._stop.is_set():
                msg = "the stars' fit was cancelled before it began"
                raise FitCancelledError(msg)
            self._spark_context = context
        try:
            if self._settings.rating_samples == 0:
                return None, None, 0
            training, held_out = split_at(ratings, data.cutoff)
            model = fit_spark_stars(training, self._settings, self._blocks)
            partitions = self._blocks or context.defaultParallelism
            rmse, pairs = held_out_rmse(model, training, held_out, partitions)
        except Exception:
            if self._stop.is_set():  # its jobs were cancelled by ``close``
                msg = "the stars' fit was cancelled"
                raise FitCancelledError(msg) from None
            raise
        finally:
            with self._changed:
                self._spark_context = None
        return model, rmse, pairs


def rating_model(
    ratings: pd.DataFrame,
    settings: ModelSettings,
    should_stop: Callable[[], bool] | None = None,
    *,
    separate_process: bool = False,
) -> RatingModel | None:
    """The configured rating model fitted on ``ratings``; None when it is switched off.

    ``should_stop`` can end the fit early (``FitCancelledError``), asked once per sweep,
    or every 0.2 s with ``separate_process`` (the fit runs in a spawned process, told to
    stop after its current sweep, so this process's GIL stays free for the stream).
    """
    if settings.rating_samples == 0 or ratings.empty:
        return None
    columns = (
        ratings["user_id"].to_numpy(dtype=np.int64),
        ratings["movie_id"].to_numpy(dtype=np.int64),
        ratings["rating"].to_numpy(dtype=np.float64),
    )
    options: dict[str, Any] = {
        "rank": settings.rating_rank,
        "sweeps": settings.rating_sweeps,
        "burn_in": settings.rating_burn_in,
        "samples": settings.rating_samples,
        "seed": settings.seed,
    }
    if separate_process:
        return fit_in_process(*columns, should_stop=should_stop or (lambda: False), **options)
    return fit_rating_model(*columns, should_stop=should_stop, **options)


def held_out_stars(
    stars: RatingModel, train: pd.DataFrame, held_out: pd.DataFrame
) -> npt.NDArray[np.float64]:
    """Predicted stars of the held-out pairs, each user folded in from their ``train`` ratings."""
    history = RatingHistory.from_frame(train)
    pair_users = held_out["user_id"].to_numpy(dtype=np.int64)
    users, positions = np.unique(pair_users, return_inverse=True)
    return stars.predict(history.of_users(users), positions, held_out["movie_id"].to_numpy())


def stars_rmse(
    stars: npt.NDArray[np.float64], actual: npt.NDArray[np.float64]
) -> tuple[float | None, int]:
    """(RMSE, pairs) of predicted stars against the actual ratings.

    Only pairs with a prediction count (``stars`` is ``nan`` where the rating model has
    none); (None, 0) when there are none.
    """
    predicted = ~np.isnan(stars)
    if not predicted.any():
        return None, 0
    return float(np.sqrt(np.mean((stars - actual)[predicted] ** 2))), int(predicted.sum())
