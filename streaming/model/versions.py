"""A model version: ALS fitted on the store, evaluated, saved, and loaded again after a restart.

Version numbers come from micro-batch ids (version = id of the batch that trained it + 1),
so they only grow, and a batch replayed after a crash finds the model its first attempt
saved instead of training another one under the same number.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from pyspark.ml.recommendation import ALS
from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F

from serving.layout import ModelMeta, decode_meta
from streaming.ingest.history import UserRatings
from streaming.model.blend import ShortTerm
from streaming.model.holdout import evaluate
from streaming.model.lists import FoldIn, lists_for
from streaming.model.summary import summarise
from streaming.model.topn import ItemIndex
from streaming.rating.fitter import held_out_stars, rating_model, stars_in_spark
from streaming.rating.fm import RatingModel
from streaming.rating.spark_stars import fit_spark_stars
from streaming.settings import ModelSettings
from streaming.timing import timed

__all__ = [
    "ModelFolder",
    "ModelVersion",
    "fit_als",
    "load_latest_model",
    "load_model",
    "popularity_prior",
    "save_model",
    "stars_version",
    "train_model",
    "training_split",
]

_STARS = "stars_"  # prefix of the rating model's arrays in a saved version


@dataclass(frozen=True)
class ModelVersion:
    """What the job keeps of a fitted model.

    Item factors, popular list, metadata, and the rating model behind the predicted stars
    (None when ``rating_samples`` is 0).
    """

    version: int
    items: ItemIndex
    popular: list[tuple[int, float]]
    meta: ModelMeta
    stars: RatingModel | None = None

    def fold_in(self, settings: ModelSettings) -> FoldIn:
        """The ALS user step of this model."""
        return FoldIn(self.items, settings.reg_param, settings.implicit_prefs, settings.alpha)

    def popular_stars(self) -> list[float] | None:
        """Stars of the popular list for someone with no ratings yet (the prior user)."""
        if self.stars is None:
            return None
        nobody = UserRatings(
            np.zeros(1, dtype=np.int64), np.zeros(2, dtype=np.int64),
            np.zeros(0, dtype=np.int64), np.zeros(0),
        )  # fmt: skip
        movies = np.array([movie for movie, _ in self.popular], dtype=np.int64)
        predicted: list[float] = self.stars.predict(nobody, np.zeros(len(movies)), movies).tolist()
        return predicted

    def served_lists(
        self,
        users: UserRatings,
        settings: ModelSettings,
        k: int,
        short_term: ShortTerm | None = None,
    ) -> list[list[int]]:
        """What serving shows each user of ``users`` under this model, best first.

        Their personal top ``k`` folded in from the given ratings (blended with the
        short-term transitions when given), or the model's popular list when the
        model has nothing personal on them.
        """
        lists = lists_for(users, self.fold_in(settings), k, short_term=short_term)
        popular = [movie for movie, _ in self.popular[:k]]
        return [
            lists.movies[p].tolist() if lists.personal[p] else popular
            for p in range(len(users.users))
        ]


def train_model(
    ratings: DataFrame,
    settings: ModelSettings,
    *,
    version: int,
    batch_id: int,
    reason: str,
    fit_stars: bool = True,
    blocks: int | None = None,
) -> ModelVersion:
    """Fit ALS on the stored ratings minus the most recent held-out share, and evaluate it.

    What the build needs besides the fit (the cutoff, the popular list, the counts, the
    evaluation's sample of held-out users) is read by Spark (``summarise``): the driver
    holds per-movie counts and the ratings of at most ``evaluation_users`` users.

    With ``fit_stars`` (and ``rating_samples`` above 0) the rating model is fitted here
    too (by Spark past ``rating_spark_above`` ratings: ``streaming.rating.spark_stars``;
    below, the factorization machine reads the training ratings into the driver);
    without, the version comes without stars, for the caller to fit them elsewhere
    (``streaming.rating.fitter``) on ``training_split``'s ratings.

    Args:
        ratings: the store's ratings (user_id, movie_id, rating, timestamp; latest per
            user and movie), the fit's input.
        settings: hyperparameters, holdout share, relevance threshold, list length.
        version: the number the model will be published under.
        batch_id: the micro-batch that triggered the retrain.
        reason: why it was due (from the retrain policy).
        fit_stars: fit the rating model here too (see above).
        blocks: ALS blocks and input partitions (``fit_als``); None = Spark's defaults.
    """
    timings: dict[str, float] = {}
    with timed(timings, "summary"):
        summary = summarise(
            ratings, holdout_fraction=settings.holdout_fraction,
            half_life_days=settings.popularity_half_life_days,
            evaluation_users=settings.evaluation_users, seed=settings.seed,
        )  # fmt: skip
    cutoff = summary.cutoff
    with timed(timings, "fit"):
        training = ratings if cutoff is None else ratings.where(F.col("timestamp") < cutoff)
        item_rows, user_rows = fit_als(
            training.select("user_id", "movie_id", "rating"), settings, blocks,
            users=summary.evaluated_users,
        )  # fmt: skip
    with timed(timings, "rating_model"):
        stars = None
        if fit_stars and settings.rating_samples and stars_in_spark(settings, summary.ratings):
            stars = fit_spark_stars(training, settings, blocks)
        elif fit_stars and settings.rating_samples:
            columns = training.select("user_id", "movie_id", "rating", "timestamp")
            fitted_on = pd.DataFrame(columns.toPandas()).sort_values(
                ["user_id", "movie_id"], ignore_index=True
            )  # in one order whatever Spark's partitions were: the sampler is seeded
            stars = rating_model(fitted_on, settings)
    counts = summary.popular
    movie_ids = np.array([r["id"] for r in item_rows], dtype=np.int64)
    items = ItemIndex(
        movie_ids,
        np.array([r["features"] for r in item_rows]),
        popularity_prior(counts, movie_ids, settings.popularity_weight),
    )

    evaluation = None
    with timed(timings, "evaluate"):
        if cutoff is not None:
            users = (
                np.array([r["id"] for r in user_rows], dtype=np.int64),
                np.array([r["features"] for r in user_rows]).reshape(len(user_rows), settings.rank),
            )
            train, held_out = summary.train, summary.held_out_sample
            evaluation = evaluate(
                train,
                held_out,
                users,
                items,
                settings.relevant_rating,
                predicts_ratings=not settings.implicit_prefs,
                stars=None if stars is None else held_out_stars(stars, train, held_out),
                popular=summary.train_popular,
                held_out_total=summary.held_out,
            ).as_dict()

    head = counts.head(settings.top_k)
    popular = list(zip(head.index.tolist(), head.to_numpy(dtype=float).tolist(), strict=True))
    meta = ModelMeta(
        version=version,
        trained_at=time.time(),
        batch_id=batch_id,
        reason=reason,
        ratings=summary.ratings,
        users=summary.users,
        movies=summary.movies,
        model_movies=len(items),
        holdout_from_timestamp=None if cutoff is None else int(cutoff),
        hyperparameters=settings.model_dump(
            include={
                "rank",
                "max_iter",
                "reg_param",
                "implicit_prefs",
                "alpha",
                "nonnegative",
                "seed",
                "popularity_half_life_days",
                "popularity_weight",
                "rating_samples",
                "rating_rank",
                "rating_sweeps",
                "rating_burn_in",
            }
        ),
        evaluation=evaluation,
        stars_from_version=None if stars is None else version,
        timings_s={name: round(seconds, 3) for name, seconds in timings.items()},
    )
    return ModelVersion(version, items, popular, meta, stars)


def fit_als(
    training: DataFrame, settings: ModelSettings, blocks: int | None = None,
    users: npt.ArrayLike | None = None,
) -> tuple[list[Row], list[Row]]:  # fmt: skip
    """ALS fitted on (user_id, movie_id, rating): its item and user factor rows.

    With ``blocks``, the ratings are split into that many partitions and ALS into that
    many user and item blocks, so that the fit runs at most that many tasks at once.
    With ``users``, only those users' factor rows come back (the rest stay in Spark).
    """
    if blocks is not None:
        training = training.repartition(blocks)
    training = training.cache()
    als = ALS(
        rank=settings.rank,
        maxIter=settings.max_iter,
        regParam=settings.reg_param,
        implicitPrefs=settings.implicit_prefs,
        alpha=settings.alpha,
        nonnegative=settings.nonnegative,
        seed=settings.seed,
        userCol="user_id",
        itemCol="movie_id",
        ratingCol="rating",
        checkpointInterval=5,
    )
    if blocks is not None:
        als = als.setNumUserBlocks(blocks).setNumItemBlocks(blocks)
    try:
        fitted = als.fit(training)
        item_rows = fitted.itemFactors.collect()
        user_factors = fitted.userFactors
        if users is not None:
            wanted = training.sparkSession.createDataFrame(
                pd.DataFrame({"id": np.asarray(users, dtype=np.int64)}), "id long"
            )
            user_factors = user_factors.join(F.broadcast(wanted), "id")
        user_rows = user_factors.collect()
        fitted.itemFactors.unpersist()
        fitted.userFactors.unpersist()
    finally:
        training.unpersist()
    return item_rows, user_rows


def training_split(
    everything: pd.DataFrame, cutoff: int | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fitted on, held out): the ratings before the holdout cutoff and those from it on."""
    if cutoff is None:
        return everything, everything.iloc[:0]
    before = everything["timestamp"] < cutoff
    return everything[before], everything[~before]


def stars_version(model: ModelVersion) -> int | None:
    """The version whose training ratings fitted ``model``'s stars; None without stars.

    A version published before its own rating model was ready carries an earlier
    version's; models saved before this was recorded carry their own.
    """
    if model.stars is None:
        return None
    return model.meta.stars_from_version or model.version


def popularity_prior(
    counts: pd.Series, movie_ids: npt.NDArray[np.int64], weight: float
) -> npt.NDArray[np.float64]:
    """``weight`` × standardised ``log(1 + popularity)`` of each movie (zeros at weight 0).

    Standardised over the given movies, so the weight reads in units of the model's
    scores whatever the size of the store; a movie without ratings counts 0.
    """
    if weight == 0 or len(movie_ids) == 0:
        return np.zeros(len(movie_ids))
    raw = np.log1p(counts.reindex(movie_ids).fillna(0.0).to_numpy(dtype=np.float64))
    spread = raw.std()
    return weight * (raw - raw.mean()) / spread if spread > 0 else np.zeros(len(movie_ids))


def save_model(folder: Path, model: ModelVersion) -> Path:
    """Write a model as ``v{version}.npz`` (atomically: temporary file, then rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"v{model.version}.npz"
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=".model-", suffix=".npz")
    with os.fdopen(descriptor, "wb") as handle:
        np.savez(
            handle,
            movie_ids=model.items.movie_ids,
            factors=model.items.factors,
            prior=model.items.prior,
            popular=np.array(model.popular, dtype=np.float64).reshape(-1, 2),
            meta=np.array(model.meta.to_json().decode()),
            **_rating_arrays(model.stars),
        )
    os.replace(temporary, target)
    return target


def load_model(path: Path) -> ModelVersion:
    """Read a model written by ``save_model``."""
    with np.load(path, allow_pickle=False) as saved:
        meta = decode_meta(str(saved["meta"]), key=f"the metadata of {path}", place="")
        popular = [(int(movie), float(score)) for movie, score in saved["popular"].tolist()]
        prior = saved["prior"] if "prior" in saved.files else None  # before the prior
        items = ItemIndex(saved["movie_ids"], saved["factors"], prior)
        stars = None
        if _STARS + "movie_bias" in saved.files:  # saved with a rating model (models of
            # the earlier sampler carry none: their stars come back with the next fit)
            stars = RatingModel.from_arrays(
                {name[len(_STARS) :]: saved[name] for name in saved.files
                 if name.startswith(_STARS)}
            )  # fmt: skip
    return ModelVersion(meta.version, items, popular, meta, stars)


def _rating_arrays(stars: RatingModel | None) -> dict[str, Any]:
    if stars is None:
        return {}
    return {_STARS + name: array for name, array in stars.arrays().items()}


def load_latest_model(folder: Path, *, at_most: int | None = None) -> ModelVersion | None:
    """The highest saved version (not above ``at_most``), if any."""
    versions = sorted(
        int(path.stem[1:])
        for path in folder.glob("v*.npz")
        if path.stem[1:].isdigit() and (at_most is None or int(path.stem[1:]) <= at_most)
    )
    return load_model(folder / f"v{versions[-1]}.npz") if versions else None


class ModelFolder:
    """The pipeline's ``Models`` on Spark: versions saved in ``folder``, and new fits.

    A new version is fitted on ``ratings(batch_id)``, the store's ratings (latest per user
    and movie) through the batch that started the retrain, in ``blocks`` ALS blocks
    (None: Spark's defaults).
    """

    def __init__(
        self, folder: Path, ratings: Callable[[int], DataFrame], settings: ModelSettings,
        blocks: int | None = None,
    ) -> None:  # fmt: skip
        self.folder = folder
        self.ratings = ratings
        self.settings = settings
        self.blocks = blocks

    def latest(self) -> ModelVersion | None:
        """The highest saved version, if any."""
        return load_latest_model(self.folder)

    def saved(self, version: int) -> ModelVersion | None:
        """The version saved under ``version``, if any."""
        path = self.folder / f"v{version}.npz"
        return load_model(path) if path.is_file() else None

    def train(self, *, version: int, batch_id: int, reason: str, fit_stars: bool) -> ModelVersion:
        """Fit and evaluate a new version (``train_model``) on the store's ratings.

        The ratings are cached in Spark for as long as the build reads them.
        """
        ratings = self.ratings(batch_id).select("user_id", "movie_id", "rating", "timestamp")
        ratings = ratings.cache()
        try:
            return train_model(ratings, self.settings, version=version, batch_id=batch_id,
                               reason=reason, fit_stars=fit_stars, blocks=self.blocks)  # fmt: skip
        finally:
            ratings.unpersist()

    def save(self, model: ModelVersion) -> None:
        """Save ``model`` (``save_model``)."""
        save_model(self.folder, model)
