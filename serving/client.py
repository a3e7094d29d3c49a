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

import hashlib
from collections.abc import Awaitable, Sequence
from typing import Any, cast

import redis
import redis.asyncio

from recstream_base.ids import MAX_ID
from serving.anonymous import VisitorLists, check_visitor
from serving.answers import (
    MAX_N,
    Health,
    ModelInfo,
    PipelineView,
    Recommendations,
    SimilarMovies,
    VisitorRecommendations,
    assemble,
    assemble_similar,
    check_whole,
    health_of,
    model_info,
    pipeline_view,
    visitor_answer,
)
from serving.connection import open_async_redis, open_redis, tls_failure
from serving.errors import RedisUnavailableError
from serving.layout import (
    PIPELINE_KEPT,
    RedisLayout,
    lua_key_functions,
)
from serving.settings import RedisSettings

__all__ = ["AsyncRecommendationClient", "RecommendationClient"]

_WHOLE_LIST = 10_000  # a genre filter reads the catalog entries of the whole stored list

# Every script starts here: ARGV[1] is the tagged prefix (``RedisLayout.tag``), KEYS[1]
# the current-version key, which routes the call to the slot all the keys share; without
# a model they return {}. Key names come from the layout (``lua_key_functions``), never
# spelled out in a script.
_CURRENT = (
    lua_key_functions()
    + """
local prefix = ARGV[1]
local version = redis.call('GET', current_key(prefix))
if not version then return {} end
local meta = redis.call('GET', meta_key(prefix, version))
"""
)

# A stored list cut to its first ``limit`` movies, and those movies' catalog entries;
# with ``explain``, also the entries of the rated movies its ``because`` array names
# for them (in order, nulls skipped). A list the script cannot parse is returned as
# stored, for the client to report.
_HEAD = """
local function head(list, limit, explain)
  local entries = {}
  local reasons = {}
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
    local behind = {}
    local named = {}
    if type(doc.because) == 'table' then
      for i, movie in ipairs(doc.because) do
        if i > limit then break end
        behind[i] = movie
        if explain and type(movie) == 'number' then
          named[#named + 1] = string.format('%d', movie)
        end
      end
    end
    if #named > 0 then reasons = redis.call('HMGET', catalog_key(prefix), unpack(named)) end
    if #doc.items > limit then
      -- only the head travels back; an empty table would encode as {} rather than []
      doc.items = first
      if type(doc.because) == 'table' then doc.because = behind end
      list = cjson.encode(doc)
    end
  end
  return list, entries, reasons
end
"""

# ARGV: tagged prefix, user id, how many movies to read from the top of the list, 1 to read
# the catalog entries of the movies behind them too. Returns {version, meta, list (cut
# to that many movies), personal (1/0), {catalog entries of those movies}, {catalog
# entries of the movies behind them (with ARGV[4] = 1)}}.
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
local reasons = {}
if list then list, entries, reasons = head(list, tonumber(ARGV[3]), ARGV[4] == '1') end
return {version, meta or false, list or false, personal, entries, reasons}
"""
)

# ARGV: tagged prefix, movie id, how many neighbours. Returns {version, meta, its neighbours
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

# ARGV: tagged prefix, the version whose factor table the client holds (-1: none). Returns
# {version, meta, factor table (false when the client holds this version's, or when the
# version has none), popular list}.
_VISITOR = (
    _CURRENT
    + """
local factors = false
if version ~= ARGV[2] then factors = redis.call('GET', factors_key(prefix, version)) end
local popular = redis.call('GET', popular_key(prefix, version))
return {version, meta or false, factors or false, popular or false}
"""
)

# ARGV: tagged prefix. Returns {version, meta, published_at}.
_MODEL = (
    _CURRENT
    + """
local published = redis.call('ZSCORE', versions_key(prefix), version)
return {version, meta or false, published or false}
"""
)


class _ReadScript:
    """A serving script run read-only (``EVALSHA_RO``, Redis 7), loaded on first NOSCRIPT.

    Read-only, the declared key needs only read permission: the serving ACL user, whose
    keys are ``%R~{prefix}:*``, may run it, and Redis refuses any write inside it.
    """

    def __init__(self, client: redis.Redis, source: str) -> None:
        self.client, self.source = client, source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def __call__(self, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        try:
            return self.client.evalsha_ro(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            self.client.script_load(self.source)  # on every master of a cluster
            return self.client.evalsha_ro(self.sha, len(keys), *keys, *args)


class _AsyncReadScript:
    """``_ReadScript`` over ``redis.asyncio``."""

    def __init__(self, client: redis.asyncio.Redis, source: str) -> None:
        self.client, self.source = client, source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        try:
            return await self.client.evalsha_ro(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            await self.client.script_load(self.source)
            return await self.client.evalsha_ro(self.sha, len(keys), *keys, *args)


def _lookup_args(
    layout: RedisLayout, user_id: int, n: int, genre: str | None, explain: bool
) -> list[str | int]:
    """The lookup script's arguments, once the request is checked (ValueError names what)."""
    check_whole("user_id", user_id, MAX_ID)
    check_whole("n", n, MAX_N)
    if genre is not None and not 1 <= len(genre) <= 64:
        msg = f"genre must be 1-64 characters, got {len(genre)}"
        raise ValueError(msg)
    limit = _WHOLE_LIST if genre else n
    return [layout.tag, user_id, limit, 1 if explain else 0]


def _unavailable(
    settings: RedisSettings, exc: redis.RedisError, *, diagnose: bool = False
) -> RedisUnavailableError:
    """The error to raise for ``exc``, saying what to check.

    With ``diagnose`` (the synchronous client: the CLI, scripts) a connection that
    failed is probed once more for a TLS mismatch, whose message names the setting; the
    API does not wait for that probe on every request of an outage.
    """
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
        tls = tls_failure(settings) if diagnose else None
        if tls is not None:
            return RedisUnavailableError(tls)
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
        # Every script names the current-version key: Redis Cluster sends it to the
        # node of that key's slot, which holds all the others (one hash tag).
        self._keys = [self.layout.current]
        self._lookup = _ReadScript(self._redis, _LOOKUP)
        self._similar = _ReadScript(self._redis, _SIMILAR)
        self._model = _ReadScript(self._redis, _MODEL)
        self._visitor = _ReadScript(self._redis, _VISITOR)
        self._visitors = VisitorLists(self.layout)

    def recommendations(
        self, user_id: int, n: int = 10, *, genre: str | None = None, explain: bool = False
    ) -> Recommendations:
        """The user's top ``n`` (of ``genre`` when given); unknown users get the popular list.

        With ``explain``, each movie of the explained head of a personal list carries the
        user's rated movie that raised its score the most (``RecommendedMovie.because``).

        Raises:
            ValueError: ``user_id``, ``n`` or ``genre`` out of range (the message says which).
            NoModelError, RedisUnavailableError, LayoutDecodeError: see the module docstring.
        """
        args = _lookup_args(self.layout, user_id, n, genre, explain)
        try:
            reply = self._lookup(keys=self._keys, args=args)
        except redis.RedisError as exc:
            raise _unavailable(self.settings, exc, diagnose=True) from exc
        return assemble(self.layout, user_id, n, genre, cast(list[Any], reply), explain=explain)

    def similar(self, movie_id: int, n: int = 10) -> SimilarMovies:
        """The movie's ``n`` nearest movies under the current model, nearest first.

        Raises:
            ValueError: ``movie_id`` or ``n`` out of range (the message says which).
            UnknownMovieError: the current model has not learned the movie.
            NoModelError, RedisUnavailableError, LayoutDecodeError: see the module docstring.
        """
        check_whole("movie_id", movie_id, MAX_ID)
        check_whole("n", n, MAX_N)
        try:
            reply = self._similar(keys=self._keys, args=[self.layout.tag, movie_id, n])
        except redis.RedisError as exc:
            raise _unavailable(self.settings, exc, diagnose=True) from exc
        return assemble_similar(self.layout, movie_id, n, cast(list[Any], reply))

    def for_visitor(
        self, movies: Sequence[tuple[int, float | None]], n: int = 10
    ) -> VisitorRecommendations:
        """A list for a visitor who gives (movie id, stars or None) pairs instead of an id.

        Folded in against the current version's item factors (``serving.anonymous``); a
        visitor none of whose movies the model knows gets the popular list. Two round
        trips (three when the version changed since the last call).

        Raises:
            ValueError: no movies, too many, one twice, an id or rating out of range.
            NoModelError, RedisUnavailableError, LayoutDecodeError: see the module docstring.
        """
        ids, stars = check_visitor(movies, n)
        try:
            reply = self._visitor(keys=self._keys, args=[self.layout.tag, self._visitors.held])
            version, trained_at, listed, source, unknown = self._visitors.listed(
                cast(list[Any], reply), ids, stars, n
            )
            keys = [str(movie) for movie, _ in listed]
            entries = (
                cast(list[bytes | None], self._redis.hmget(self.layout.catalog, keys))
                if keys
                else []
            )
        except redis.RedisError as exc:
            raise _unavailable(self.settings, exc, diagnose=True) from exc
        return visitor_answer(self.layout, version, trained_at, listed, source, unknown, entries)

    def pipeline(self, batches: int = 60) -> PipelineView:
        """The job's newest ``batches`` micro-batches, newest first, and their totals.

        Raises:
            ValueError: ``batches`` outside 1..``PIPELINE_KEPT``.
            RedisUnavailableError, LayoutDecodeError: see the module docstring.
        """
        check_whole("batches", batches, PIPELINE_KEPT)
        try:
            raw = cast(list[bytes], self._redis.lrange(self.layout.pipeline, 0, batches - 1))
        except redis.RedisError as exc:
            raise _unavailable(self.settings, exc, diagnose=True) from exc
        return pipeline_view(self.layout, raw)

    def model_info(self) -> ModelInfo:
        """The current model's metadata (NoModelError when there is none)."""
        try:
            reply = self._model(keys=self._keys, args=[self.layout.tag])
        except redis.RedisError as exc:
            raise _unavailable(self.settings, exc, diagnose=True) from exc
        return model_info(self.layout, cast(list[Any], reply))

    def health(self) -> Health:
        """Redis reachable and a model published; never raises for Redis."""
        try:
            version = cast(bytes | None, self._redis.get(self.layout.current))
        except redis.RedisError as exc:
            return Health(ok=False, redis=False, model_version=None,
                          reason=str(_unavailable(self.settings, exc, diagnose=True)))  # fmt: skip
        return health_of(version)

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
        # Every script names the current-version key: Redis Cluster sends it to the
        # node of that key's slot, which holds all the others (one hash tag).
        self._keys = [self.layout.current]
        self._lookup = _AsyncReadScript(self._redis, _LOOKUP)
        self._similar = _AsyncReadScript(self._redis, _SIMILAR)
        self._model = _AsyncReadScript(self._redis, _MODEL)
        self._visitor = _AsyncReadScript(self._redis, _VISITOR)
        self._visitors = VisitorLists(self.layout)

    async def recommendations(
        self, user_id: int, n: int = 10, *, genre: str | None = None, explain: bool = False
    ) -> Recommendations:
        """See ``RecommendationClient.recommendations``."""
        args = _lookup_args(self.layout, user_id, n, genre, explain)
        try:
            reply = await self._lookup(keys=self._keys, args=args)
        except redis.RedisError as exc:
            raise _unavailable(self.settings, exc) from exc
        return assemble(self.layout, user_id, n, genre, cast(list[Any], reply), explain=explain)

    async def similar(self, movie_id: int, n: int = 10) -> SimilarMovies:
        """See ``RecommendationClient.similar``."""
        check_whole("movie_id", movie_id, MAX_ID)
        check_whole("n", n, MAX_N)
        try:
            reply = await self._similar(keys=self._keys, args=[self.layout.tag, movie_id, n])
        except redis.RedisError as exc:
            raise _unavailable(self.settings, exc) from exc
        return assemble_similar(self.layout, movie_id, n, cast(list[Any], reply))

    async def for_visitor(
        self, movies: Sequence[tuple[int, float | None]], n: int = 10
    ) -> VisitorRecommendations:
        """See ``RecommendationClient.for_visitor``."""
        ids, stars = check_visitor(movies, n)
        try:
            reply = await self._visitor(
                keys=self._keys, args=[self.layout.tag, self._visitors.held]
            )
            version, trained_at, listed, source, unknown = self._visitors.listed(
                cast(list[Any], reply), ids, stars, n
            )
            keys = [str(movie) for movie, _ in listed]
            catalog = self._redis.hmget(self.layout.catalog, keys) if keys else None
            entries = [] if catalog is None else await cast(Awaitable[list[Any]], catalog)
        except redis.RedisError as exc:
            raise _unavailable(self.settings, exc) from exc
        return visitor_answer(self.layout, version, trained_at, listed, source, unknown, entries)

    async def pipeline(self, batches: int = 60) -> PipelineView:
        """See ``RecommendationClient.pipeline``."""
        check_whole("batches", batches, PIPELINE_KEPT)
        try:
            key = self.layout.pipeline
            raw = await cast(Awaitable[list[bytes]], self._redis.lrange(key, 0, batches - 1))
        except redis.RedisError as exc:
            raise _unavailable(self.settings, exc) from exc
        return pipeline_view(self.layout, raw)

    async def model_info(self) -> ModelInfo:
        """See ``RecommendationClient.model_info``."""
        try:
            reply = await self._model(keys=self._keys, args=[self.layout.tag])
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
        return health_of(version)

    async def close(self) -> None:
        """Release the connection pool."""
        await self._redis.aclose()
