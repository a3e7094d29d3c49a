"""What a lookup answers: the typed results, built from the lookup scripts' replies.

``serving.client`` runs the scripts; the functions here turn a reply into a result or
the error it stands for (``NoModelError``, ``UnknownMovieError``, ``LayoutDecodeError``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serving.errors import NoModelError, UnknownMovieError
from serving.layout import (
    BatchStats,
    CatalogEntry,
    LayoutDecodeError,
    RedisLayout,
    decode_list,
    decode_meta,
    decode_movie,
)

__all__ = [
    "MAX_N",
    "NO_MODEL_MESSAGE",
    "BecauseMovie",
    "Health",
    "ModelInfo",
    "PipelineView",
    "Recommendations",
    "RecommendedMovie",
    "SimilarMovie",
    "SimilarMovies",
    "VisitorRecommendations",
    "assemble",
    "assemble_similar",
    "check_whole",
    "current",
    "described",
    "health_of",
    "model_info",
    "pipeline_view",
    "visitor_answer",
]

MAX_N = 100
"""The most movies one lookup returns (the stored lists are at most K long)."""

NO_MODEL_MESSAGE = (
    "no model has been published yet: start the streaming job (python -m streaming run)"
)


class BecauseMovie(BaseModel):
    """The user's rated movie behind a recommendation: "because you rated …"."""

    movie_id: int
    title: str | None = Field(description="None when the catalog has no entry for it.")


class RecommendedMovie(BaseModel):
    """One movie of a list, best first."""

    movie_id: int
    title: str | None = Field(description="None when the catalog has no entry for it.")
    genres: list[str]
    score: float
    predicted_rating: float | None = Field(
        None,
        description=(
            "The stars (1-5) the user is predicted to give the movie, from the rating "
            "model; None when the job runs without one or it does not know the movie."
        ),
    )
    because: BecauseMovie | None = Field(
        None,
        description=(
            "Asked with explain=true: the user's rated movie whose part of this movie's "
            "score (ALS and short-term together) is the largest. None when not asked, on "
            "a popular list, past the explained head of the list (the first "
            "RECSTREAM_MODEL_EXPLAIN_K movies), or when no rated movie raised the score."
        ),
    )


class Recommendations(BaseModel):
    """A user's recommendations and where they came from."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "user_id": 196, "source": "fold-in", "genre": None, "model_version": 12,
        "trained_at": 1764979200.0, "updated_at": 1764979231.5,
        "movies": [{"movie_id": 50, "title": "Star Wars (1977)",
                    "genres": ["Action", "Adventure", "Romance", "Sci-Fi", "War"],
                    "score": 1.2143, "predicted_rating": 4.37,
                    "because": {"movie_id": 181, "title": "Return of the Jedi (1983)"}}],
    }]})  # fmt: skip

    user_id: int
    source: Literal["model", "fold-in", "popular"] = Field(
        description=(
            "model: computed when the model was published; fold-in: refreshed after the "
            "user's latest ratings; popular: the user has no personal list (unknown user)."
        )
    )
    genre: str | None
    model_version: int
    trained_at: float = Field(description="When the model was trained (epoch seconds).")
    updated_at: float = Field(description="When this list was last written (epoch seconds).")
    movies: list[RecommendedMovie]


class SimilarMovie(BaseModel):
    """One of a movie's nearest movies, nearest first."""

    movie_id: int
    title: str | None = Field(description="None when the catalog has no entry for it.")
    genres: list[str]
    similarity: float = Field(description="Cosine of the two movies' factors, -1..1.")


class SimilarMovies(BaseModel):
    """A movie's nearest movies under the current model version."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "movie_id": 50, "title": "Star Wars (1977)", "genres": ["Action", "Sci-Fi"],
        "model_version": 12, "trained_at": 1764979200.0,
        "movies": [{"movie_id": 181, "title": "Return of the Jedi (1983)",
                    "genres": ["Action", "Sci-Fi"], "similarity": 0.9312}],
    }]})  # fmt: skip

    movie_id: int
    title: str | None
    genres: list[str]
    model_version: int
    trained_at: float = Field(description="When the model was trained (epoch seconds).")
    movies: list[SimilarMovie]


class VisitorRecommendations(BaseModel):
    """A list for a visitor without a user id, folded in from the movies they gave."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "source": "anonymous", "model_version": 12, "trained_at": 1764979200.0,
        "unknown_movies": [],
        "movies": [{"movie_id": 181, "title": "Return of the Jedi (1983)",
                    "genres": ["Action", "Sci-Fi"], "score": 0.8812, "predicted_rating": None}],
    }]})  # fmt: skip

    source: Literal["anonymous", "popular"] = Field(
        description="anonymous: folded in from the given movies; popular: none of them is "
        "known to the model, so the version's popular list."
    )
    model_version: int
    trained_at: float = Field(description="When the model was trained (epoch seconds).")
    unknown_movies: list[int] = Field(description="Given movies the model has not learned.")
    movies: list[RecommendedMovie]


class ModelInfo(BaseModel):
    """The current model version and its metadata."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "version": 12, "trained_at": 1764979200.0, "published_at": 1764979215.2,
        "age_s": 42.0, "ratings": 100000, "users": 943, "movies": 1682,
        "hyperparameters": {"rank": 20, "reg_param": 0.1, "implicit_prefs": True},
        "evaluation": {"model": {"precision": 0.076}, "popular": {"precision": 0.061}},
        "last_folded_in_batch": 410, "stars_from_version": 12,
    }]})  # fmt: skip

    version: int
    trained_at: float
    published_at: float | None
    age_s: float = Field(description="Seconds since the model was trained.")
    ratings: int | None = None
    users: int | None = None
    movies: int | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    evaluation: dict[str, Any] | None = None
    last_folded_in_batch: int | None = None
    stars_from_version: int | None = Field(
        None,
        description=(
            "The version whose training ratings fitted the predicted stars in the lists: "
            "this version once its own rating model is ready, an earlier one before."
        ),
    )


class PipelineView(BaseModel):
    """The job's newest micro-batches and what they add up to (for the console and ops)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "batches": [{"batch_id": 411, "committed_at": 1764979240.1, "valid": 402,
                     "invalid": 0, "seconds": 0.82, "lag": 0, "model_version": 12,
                     "building": False, "retrain": None, "switched_to": None,
                     "fold_in_lists": 310, "checked": 380, "hits_at_10": 21,
                     "popular_hits_at_10": 9, "freshness_p50_s": 1.3}],
        "window_s": 59.2, "ratings_per_s": 398.4, "hit_rate_at_10": 0.0581,
        "popular_hit_rate_at_10": 0.0312,
    }]})  # fmt: skip

    batches: list[BatchStats] = Field(description="Newest first.")
    window_s: float = Field(description="Seconds from the oldest to the newest commit shown.")
    ratings_per_s: float | None = Field(
        None, description="Ratings stored per second over the window (None: one batch)."
    )
    hit_rate_at_10: float | None = Field(
        None, description="Of the window's ratings checked, the share in the user's top 10."
    )
    popular_hit_rate_at_10: float | None = Field(
        None, description="The same for the popular list: the baseline."
    )


class Health(BaseModel):
    """Whether serving can answer: Redis reachable and a model published."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"ok": True, "redis": True, "model_version": 12, "reason": "ok"},
    ]})  # fmt: skip

    ok: bool
    redis: bool
    model_version: int | None
    reason: str


# Catalog entries and metadata repeat across lookups: decode each distinct value once.
@lru_cache(maxsize=65_536)
def _decoded_movie(raw: bytes) -> CatalogEntry:
    return decode_movie(raw)


@lru_cache(maxsize=16)
def _decoded_trained_at(raw: bytes) -> float:
    return decode_meta(raw).trained_at


def _movie(raw: bytes, layout: RedisLayout, movie: int) -> CatalogEntry:
    try:
        return _decoded_movie(raw)
    except LayoutDecodeError:  # raises again, naming the key (named only now: it is rare)
        return decode_movie(raw, key=f"{layout.catalog}[{movie}]")


def _trained_at(raw: bytes, key: str) -> float:
    try:
        return _decoded_trained_at(raw)
    except LayoutDecodeError:
        return decode_meta(raw, key=key).trained_at  # raises, naming the key


def described(layout: RedisLayout, movie: int, entry: bytes | None) -> tuple[str | None, list[str]]:
    """(title, genres) of ``movie`` from its catalog entry; (None, []) without one."""
    if entry is None:
        return None, []
    known = _movie(entry, layout, movie)
    return known.title, list(known.genres)


def current(layout: RedisLayout, reply: Sequence[Any]) -> tuple[int, bytes, float]:
    """(version, metadata, trained_at) of a script's reply, which starts with those two.

    Raises:
        NoModelError: the reply is empty: no model version is current.
        LayoutDecodeError: the current version has no readable metadata.
    """
    if not reply:
        raise NoModelError(NO_MODEL_MESSAGE)
    version, raw_meta = int(reply[0]), reply[1]
    if raw_meta is None:
        msg = f"{layout.meta(version)} is missing although version {version} is current"
        raise LayoutDecodeError(msg)
    return version, raw_meta, _trained_at(raw_meta, layout.meta(version))


def assemble(
    layout: RedisLayout,
    user_id: int,
    n: int,
    genre: str | None,
    reply: Sequence[Any],
    *,
    explain: bool = False,
) -> Recommendations:
    """Turn the lookup script's reply into ``Recommendations`` (``because`` with ``explain``).

    Raises:
        NoModelError: no model version is current.
        LayoutDecodeError: a value read does not follow the layout.
    """
    version, _, trained_at = current(layout, reply)
    _, _, raw_list, personal, entries, reasons = reply
    if raw_list is None:
        msg = f"{layout.popular(version)} is missing although version {version} is current"
        raise LayoutDecodeError(msg)
    where = f"{layout.lists(version)}[{user_id}]" if personal else layout.popular(version)
    listed = decode_list(raw_list, key=where)
    behind = _reasons(layout, listed.because, reasons) if explain and personal else {}
    wanted = genre.casefold() if genre else None
    movies: list[RecommendedMovie] = []
    stars = listed.stars or (None,) * len(listed.items)
    for place, ((movie, score), star, entry) in enumerate(
        zip(listed.items, stars, entries, strict=False)
    ):
        title, genres = described(layout, movie, entry)
        if wanted is not None and wanted not in (g.casefold() for g in genres):
            continue
        movies.append(RecommendedMovie(movie_id=movie, title=title, genres=genres,
                                       score=score, predicted_rating=star,
                                       because=behind.get(place)))  # fmt: skip
        if len(movies) == n:
            break
    return Recommendations(
        user_id=user_id,
        source=listed.source if personal else "popular",
        genre=genre,
        model_version=version,
        trained_at=trained_at,
        updated_at=listed.updated_at,
        movies=movies,
    )


def _reasons(
    layout: RedisLayout, because: Sequence[int | None], entries: Sequence[bytes | None]
) -> dict[int, BecauseMovie]:
    """Each explained place of a list and its movie, titled from ``entries`` (one per named)."""
    named = [(place, movie) for place, movie in enumerate(because) if movie is not None]
    found = {}
    for (place, movie), entry in zip(named, entries, strict=False):
        title, _ = described(layout, movie, entry)
        found[place] = BecauseMovie(movie_id=movie, title=title)
    return found


def assemble_similar(
    layout: RedisLayout, movie_id: int, n: int, reply: Sequence[Any]
) -> SimilarMovies:
    """Turn the similar-movies script's reply into ``SimilarMovies``.

    Raises:
        NoModelError: no model version is current.
        UnknownMovieError: the current version has no neighbours for the movie.
        LayoutDecodeError: a value read does not follow the layout.
    """
    version, _, trained_at = current(layout, reply)
    _, _, raw_list, entries, own = reply
    if raw_list is None:
        msg = (
            f"movie {movie_id} has no similar movies in model version {version}: the model "
            "has not learned it (no ratings of it yet, or too few)"
        )
        raise UnknownMovieError(msg)
    listed = decode_list(raw_list, key=f"{layout.similar(version)}[{movie_id}]")
    movies = []
    for (movie, cosine), entry in zip(listed.items[:n], entries, strict=False):
        title, genres = described(layout, movie, entry)
        movies.append(SimilarMovie(movie_id=movie, title=title, genres=genres,
                                   similarity=cosine))  # fmt: skip
    title, genres = described(layout, movie_id, own)
    return SimilarMovies(
        movie_id=movie_id,
        title=title,
        genres=genres,
        model_version=version,
        trained_at=trained_at,
        movies=movies,
    )


def pipeline_view(layout: RedisLayout, raw: Sequence[bytes]) -> PipelineView:
    """The view of ``p:pipeline``'s newest entries (``raw``, newest first).

    Raises:
        LayoutDecodeError: an entry is not ``BatchStats`` JSON.
    """
    batches = []
    for position, entry in enumerate(raw):
        try:
            batches.append(BatchStats.model_validate_json(entry))
        except ValueError as exc:
            msg = f"{layout.pipeline}[{position}] in Redis is not a batch's figures"
            raise LayoutDecodeError(msg) from exc
    if not batches:
        return PipelineView(batches=[], window_s=0.0)
    window = batches[0].committed_at - batches[-1].committed_at
    stored = sum(batch.valid for batch in batches[:-1])  # the oldest batch opens the window
    checked = sum(batch.checked for batch in batches)
    return PipelineView(
        batches=batches,
        window_s=round(window, 3),
        ratings_per_s=round(stored / window, 1) if window > 0 else None,
        hit_rate_at_10=round(sum(b.hits_at_10 for b in batches) / checked, 4) if checked else None,
        popular_hit_rate_at_10=(
            round(sum(b.popular_hits_at_10 for b in batches) / checked, 4) if checked else None
        ),
    )


def check_whole(name: str, value: int, most: int) -> None:
    """Raise ValueError unless ``value`` is an integer in 1..``most`` (``name`` says which)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        msg = f"{name} must be an integer in 1..{most}, got {value!r}"
        raise ValueError(msg)


def visitor_answer(
    layout: RedisLayout,
    version: int,
    trained_at: float,
    listed: Sequence[tuple[int, float]],
    source: Literal["anonymous", "popular"],
    unknown: Sequence[int],
    entries: Sequence[bytes | None],
) -> VisitorRecommendations:
    """A visitor's list with the catalog entries of its movies (``entries``, aligned)."""
    movies = []
    for (movie, score), entry in zip(listed, entries, strict=True):
        title, genres = described(layout, movie, entry)
        movies.append(RecommendedMovie(movie_id=movie, title=title, genres=genres,
                                       score=round(score, 4)))  # fmt: skip
    return VisitorRecommendations(source=source, model_version=version, trained_at=trained_at,
                                  unknown_movies=list(unknown), movies=movies)  # fmt: skip


def model_info(layout: RedisLayout, reply: Sequence[Any], now: float | None = None) -> ModelInfo:
    """Turn the model script's reply into ``ModelInfo`` (NoModelError without a model)."""
    version, raw_meta, _ = current(layout, reply)
    published = reply[2]
    meta = decode_meta(raw_meta, key=layout.meta(version))
    moment = time.time() if now is None else now
    shown = meta.model_dump(include=set(ModelInfo.model_fields) - {"version"})
    return ModelInfo(
        version=version,
        published_at=None if published is None else float(published),
        age_s=max(0.0, moment - meta.trained_at),
        **shown,
    )


def health_of(version: bytes | None) -> Health:
    """Health from what ``p:current`` holds (Redis answered)."""
    if version is None:
        return Health(ok=False, redis=True, model_version=None, reason=NO_MODEL_MESSAGE)
    return Health(ok=True, redis=True, model_version=int(version), reason="ok")
