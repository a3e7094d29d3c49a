"""Looking up recommendations in Redis: one round trip per lookup, typed results.

A lookup runs one Lua script on the server: it resolves ``p:current``, reads the
user's list in that version (or the version's popular list when the user has none),
the version's metadata, and the catalog entries of the listed movies; so a lookup
never mixes versions and costs one round trip. A movie's nearest movies are read the
same way from the version's ``similar`` hash. The script reads keys it derives from
the prefix, which a single Redis server (or a replica) allows; Redis Cluster would need
the keys under one hash tag.

``RecommendationClient`` is the synchronous client (library and CLI);
``AsyncRecommendationClient`` is the same over ``redis.asyncio`` (the HTTP API). Both
turn Redis failures into ``RedisUnavailableError``, a missing model into
``NoModelError`` and undecodable values into ``LayoutDecodeError``, never a crash.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Sequence
from functools import lru_cache
from typing import Any, Literal, cast

import redis
from pydantic import BaseModel, Field

from recstream_base.ids import MAX_ID
from serving.connection import open_async_redis, open_redis
from serving.errors import NoModelError, RedisUnavailableError, UnknownMovieError
from serving.layout import (
    CatalogEntry,
    LayoutDecodeError,
    RedisLayout,
    decode_list,
    decode_meta,
    decode_movie,
    lua_key_functions,
)
from serving.settings import RedisSettings

__all__ = [
    "MAX_N",
    "AsyncRecommendationClient",
    "Health",
    "ModelInfo",
    "RecommendationClient",
    "Recommendations",
    "RecommendedMovie",
    "SimilarMovie",
    "SimilarMovies",
]

MAX_N = 100
"""The most movies one lookup returns (the stored lists are at most K long)."""
_WHOLE_LIST = 10_000  # a genre filter reads the catalog entries of the whole stored list

# Both scripts start here: ARGV[1] is the prefix; without a model they return {}. Key
# names come from the layout (``lua_key_functions``), never spelled out in a script.
_CURRENT = (
    lua_key_functions()
    + """
local prefix = ARGV[1]
local version = redis.call('GET', current_key(prefix))
if not version then return {} end
local meta = redis.call('GET', meta_key(prefix, version))
"""
)

# A stored list cut to its first ``limit`` movies, and those movies' catalog entries. A
# list the script cannot parse is returned as stored, for the client to report.
_HEAD = """
local function head(list, limit)
  local entries = {}
  local ok, doc = pcall(cjson.decode, list)
  if ok and type(doc) == 'table' and type(doc.items) == 'table' then
    local ids = {}
    local first = {}
    for i, pair in ipairs(doc.items) do
      if i > limit then break end
      first[i] = pair
      if type(pair) == 'table' and type(pair[1]) == 'number' then
        ids[#ids + 1] = string.format('%d', pair[1])
      end
    end
    if #ids > 0 then entries = redis.call('HMGET', catalog_key(prefix), unpack(ids)) end
    if #doc.items > limit then
      -- only the head travels back; an empty table would encode as {} rather than []
      doc.items = first
      list = cjson.encode(doc)
    end
  end
  return list, entries
end
"""

# ARGV: prefix, user id, how many movies to read from the top of the list.
# Returns {version, meta, list (cut to that many movies), personal (1/0), {catalog
# entries of those movies}}.
_LOOKUP = (
    _CURRENT
    + _HEAD
    + """
local list = redis.call('HGET', lists_key(prefix, version), ARGV[2])
local personal = 1
if not list then
  list = redis.call('GET', popular_key(prefix, version))
  personal = 0
end
local entries = {}
if list then list, entries = head(list, tonumber(ARGV[3])) end
return {version, meta or false, list or false, personal, entries}
"""
)

# ARGV: prefix, movie id, how many neighbours. Returns {version, meta, its neighbours
# (cut to that many; false when the version has none for it), {their catalog entries},
# the movie's own catalog entry}.
_SIMILAR = (
    _CURRENT
    + _HEAD
    + """
local list = redis.call('HGET', similar_key(prefix, version), ARGV[2])
local entries = {}
if list then list, entries = head(list, tonumber(ARGV[3])) end
local own = redis.call('HGET', catalog_key(prefix), ARGV[2])
return {version, meta or false, list or false, entries, own or false}
"""
)

# ARGV: prefix. Returns {version, meta, published_at}.
_MODEL = (
    _CURRENT
    + """
local published = redis.call('ZSCORE', versions_key(prefix), version)
return {version, meta or false, published or false}
"""
)

_NO_MODEL = "no model has been published yet: start the streaming job (python -m streaming run)"


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


class Recommendations(BaseModel):
    """A user's recommendations and where they came from."""

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

    movie_id: int
    title: str | None
    genres: list[str]
    model_version: int
    trained_at: float = Field(description="When the model was trained (epoch seconds).")
    movies: list[SimilarMovie]


class ModelInfo(BaseModel):
    """The current model version and its metadata."""

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


class Health(BaseModel):
    """Whether serving can answer: Redis reachable and a model published."""

    ok: bool
    redis: bool
    model_version: int | None
    reason: str


def _check_id(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        msg = f"{name} must be an integer in 1..{MAX_ID}, got {value!r}"
        raise ValueError(msg)


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        msg = f"n must be an integer in 1..{MAX_N}, got {n!r}"
        raise ValueError(msg)


def _check_request(user_id: int, n: int, genre: str | None) -> None:
    _check_id("user_id", user_id)
    _check_n(n)
    if genre is not None and not 1 <= len(genre) <= 64:
        msg = f"genre must be 1-64 characters, got {len(genre)}"
        raise ValueError(msg)


# Catalog entries and metadata repeat across lookups: decode each distinct value once.
@lru_cache(maxsize=65_536)
def _decoded_movie(raw: bytes) -> CatalogEntry:
    return decode_movie(raw)


@lru_cache(maxsize=16)
def _decoded_trained_at(raw: bytes) -> float:
    return decode_meta(raw).trained_at


def _movie(raw: bytes, key: str) -> CatalogEntry:
    try:
        return _decoded_movie(raw)
    except LayoutDecodeError:
        return decode_movie(raw, key=key)  # raises again, naming the key


def _trained_at(raw: bytes, key: str) -> float:
    try:
        return _decoded_trained_at(raw)
    except LayoutDecodeError:
        return decode_meta(raw, key=key).trained_at  # raises, naming the key


def assemble(
    layout: RedisLayout, user_id: int, n: int, genre: str | None, reply: Sequence[Any]
) -> Recommendations:
    """Turn the lookup script's reply into ``Recommendations``.

    Raises:
        NoModelError: no model version is current.
        LayoutDecodeError: a value read does not follow the layout.
    """
    if not reply:
        raise NoModelError(_NO_MODEL)
    raw_version, raw_meta, raw_list, personal, entries = reply
    version = int(raw_version)
    if raw_meta is None:
        msg = f"{layout.meta(version)} is missing although version {version} is current"
        raise LayoutDecodeError(msg)
    trained_at = _trained_at(raw_meta, layout.meta(version))
    if raw_list is None:
        msg = f"{layout.popular(version)} is missing although version {version} is current"
        raise LayoutDecodeError(msg)
    where = f"{layout.lists(version)}[{user_id}]" if personal else layout.popular(version)
    listed = decode_list(raw_list, key=where)
    wanted = genre.casefold() if genre else None
    movies: list[RecommendedMovie] = []
    stars = listed.stars or (None,) * len(listed.items)
    for (movie, score), star, entry in zip(listed.items, stars, entries, strict=False):
        title: str | None = None
        genres: tuple[str, ...] = ()
        if entry is not None:
            known = _movie(entry, f"{layout.catalog}[{movie}]")
            title, genres = known.title, known.genres
        if wanted is not None and wanted not in (g.casefold() for g in genres):
            continue
        movies.append(RecommendedMovie(movie_id=movie, title=title, genres=list(genres),
                                       score=score, predicted_rating=star))  # fmt: skip
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


def assemble_similar(
    layout: RedisLayout, movie_id: int, n: int, reply: Sequence[Any]
) -> SimilarMovies:
    """Turn the similar-movies script's reply into ``SimilarMovies``.

    Raises:
        NoModelError: no model version is current.
        UnknownMovieError: the current version has no neighbours for the movie.
        LayoutDecodeError: a value read does not follow the layout.
    """
    if not reply:
        raise NoModelError(_NO_MODEL)
    raw_version, raw_meta, raw_list, entries, own = reply
    version = int(raw_version)
    if raw_meta is None:
        msg = f"{layout.meta(version)} is missing although version {version} is current"
        raise LayoutDecodeError(msg)
    trained_at = _trained_at(raw_meta, layout.meta(version))
    if raw_list is None:
        msg = (
            f"movie {movie_id} has no similar movies in model version {version}: the model "
            "has not learned it (no ratings of it yet, or too few)"
        )
        raise UnknownMovieError(msg)
    listed = decode_list(raw_list, key=f"{layout.similar(version)}[{movie_id}]")
    movies = []
    for (movie, cosine), entry in zip(listed.items[:n], entries, strict=False):
        known = None if entry is None else _movie(entry, f"{layout.catalog}[{movie}]")
        movies.append(SimilarMovie(movie_id=movie, title=known.title if known else None,
                                   genres=list(known.genres) if known else [],
                                   similarity=cosine))  # fmt: skip
    itself = None if own is None else _movie(own, f"{layout.catalog}[{movie_id}]")
    return SimilarMovies(
        movie_id=movie_id,
        title=itself.title if itself else None,
        genres=list(itself.genres) if itself else [],
        model_version=version,
        trained_at=trained_at,
        movies=movies,
    )


def model_info(layout: RedisLayout, reply: Sequence[Any], now: float | None = None) -> ModelInfo:
    """Turn the model script's reply into ``ModelInfo`` (NoModelError without a model)."""
    if not reply:
        raise NoModelError(_NO_MODEL)
    raw_version, raw_meta, published = reply
    version = int(raw_version)
    if raw_meta is None:
        msg = f"{layout.meta(version)} is missing although version {version} is current"
        raise LayoutDecodeError(msg)
    meta = decode_meta(raw_meta, key=layout.meta(version))
    moment = time.time() if now is None else now
    shown = meta.model_dump(include=set(ModelInfo.model_fields) - {"version"})
    return ModelInfo(
        version=version,
        published_at=None if published is None else float(published),
        age_s=max(0.0, moment - meta.trained_at),
        **shown,
    )


def _unavailable(settings: RedisSettings, exc: redis.RedisError) -> RedisUnavailableError:
    hint = ""
    if isinstance(exc, redis.AuthenticationError):
        what = "refused the credentials"
        hint = "; check RECSTREAM_REDIS_USERNAME and RECSTREAM_REDIS_PASSWORD"
    elif isinstance(exc, redis.exceptions.NoPermissionError):
        what = "refused the request (NOPERM)"
        hint = (
            "; the Redis user may not read these keys: check RECSTREAM_REDIS_USERNAME and "
            "RECSTREAM_REDIS_KEY_PREFIX"
        )
    elif isinstance(exc, redis.ResponseError):
        what = f"refused the request ({str(exc).split(' ', 1)[0]})"
    else:
        what = "did not answer"
    msg = f"Redis at {settings.url} {what} ({type(exc).__name__}){hint}"
    return RedisUnavailableError(msg)


class RecommendationClient:
    """Synchronous lookups; one pooled connection set per client."""

    def __init__(
        self, settings: RedisSettings | None = None, *, client: redis.Redis | None = None
    ) -> None:
        self.settings = settings or RedisSettings()
        self.layout = RedisLayout(self.settings.key_prefix)
        self._redis = client or open_redis(self.settings)
        self._lookup = self._redis.register_script(_LOOKUP)
        self._similar = self._redis.register_script(_SIMILAR)
        self._model = self._redis.register_script(_MODEL)

    def recommendations(
        self, user_id: int, n: int = 10, *, genre: str | None = None
    ) -> Recommendations:
        """The user's top ``n`` (of ``genre`` when given); unknown users get the popular list.

        Raises:
            ValueError: ``user_id``, ``n`` or ``genre`` out of range (the message says which).
            NoModelError, RedisUnavailableError, LayoutDecodeError: see the module docstring.
        """
        _check_request(user_id, n, genre)
        limit = _WHOLE_LIST if genre else n
        try:
            reply = self._lookup(args=[self.layout.prefix, user_id, limit])
        except redis.RedisError as exc:
            raise _unavailable(self.settings, exc) from exc
        return assemble(self.layout, user_id, n, genre, cast(list[Any], reply))

    def similar(self, movie_id: int, n: int = 10) -> SimilarMovies:
        """The movie's ``n`` nearest movies under the current model, nearest first.

        Raises:
            ValueError: ``movie_id`` or ``n`` out of range (the message says which).
            UnknownMovieError: the current model has not learned the movie.
            NoModelError, RedisUnavailableError, LayoutDecodeError: see the module docstring.
        """
        _check_id("movie_id", movie_id)
        _check_n(n)
        try:
            reply = self._similar(args=[self.layout.prefix, movie_id, n])
        except redis.RedisError as exc:
            raise _unavailable(self.settings, exc) from exc
        return assemble_similar(self.layout, movie_id, n, cast(list[Any], reply))

    def model_info(self) -> ModelInfo:
        """The current model's metadata (NoModelError when there is none)."""
        try:
            reply = self._model(args=[self.layout.prefix])
        except redis.RedisError as exc:
            raise _unavailable(self.settings, exc) from exc
        return model_info(self.layout, cast(list[Any], reply))

    def health(self) -> Health:
        """Redis reachable and a model published; never raises for Redis."""
        try:
            version = cast(bytes | None, self._redis.get(self.layout.current))
        except redis.RedisError as exc:
            return Health(ok=False, redis=False, model_version=None,
                          reason=str(_unavailable(self.settings, exc)))  # fmt: skip
        return _health(version)

    def close(self) -> None:
        """Release the connection pool."""
        self._redis.close()

    def __enter__(self) -> RecommendationClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncRecommendationClient:
    """The same lookups over ``redis.asyncio`` (used by the HTTP API)."""

    def __init__(self, settings: RedisSettings | None = None) -> None:
        self.settings = settings or RedisSettings()
        self.layout = RedisLayout(self.settings.key_prefix)
        self._redis = open_async_redis(self.settings)
        self._lookup = self._redis.register_script(_LOOKUP)
        self._similar = self._redis.register_script(_SIMILAR)
        self._model = self._redis.register_script(_MODEL)

    async def recommendations(
        self, user_id: int, n: int = 10, *, genre: str | None = None
    ) -> Recommendations:
        """See ``RecommendationClient.recommendations``."""
        _check_request(user_id, n, genre)
        limit = _WHOLE_LIST if genre else n
        try:
            reply = await self._lookup(args=[self.layout.prefix, user_id, limit])
        except redis.RedisError as exc:
            raise _unavailable(self.settings, exc) from exc
        return assemble(self.layout, user_id, n, genre, cast(list[Any], reply))

    async def similar(self, movie_id: int, n: int = 10) -> SimilarMovies:
        """See ``RecommendationClient.similar``."""
        _check_id("movie_id", movie_id)
        _check_n(n)
        try:
            reply = await self._similar(args=[self.layout.prefix, movie_id, n])
        except redis.RedisError as exc:
            raise _unavailable(self.settings, exc) from exc
        return assemble_similar(self.layout, movie_id, n, cast(list[Any], reply))

    async def model_info(self) -> ModelInfo:
        """See ``RecommendationClient.model_info``."""
        try:
            reply = await self._model(args=[self.layout.prefix])
        except redis.RedisError as exc:
            raise _unavailable(self.settings, exc) from exc
        return model_info(self.layout, cast(list[Any], reply))

    async def health(self) -> Health:
        """See ``RecommendationClient.health``."""
        try:
            version = await cast(Awaitable[bytes | None], self._redis.get(self.layout.current))
        except redis.RedisError as exc:
            return Health(ok=False, redis=False, model_version=None,
                          reason=str(_unavailable(self.settings, exc)))  # fmt: skip
        return _health(version)

    async def close(self) -> None:
        """Release the connection pool."""
        await self._redis.aclose()


def _health(version: bytes | None) -> Health:
    if version is None:
        return Health(ok=False, redis=True, model_version=None, reason=_NO_MODEL)
    return Health(ok=True, redis=True, model_version=int(version), reason="ok")
