"""Writing models and lists to Redis in the layout ``serving.layout`` defines.

A new version is written in full (lists, popular list, metadata), then made current by
one compare-and-set: a Lua script that moves ``p:current`` only forward, so a batch
replayed after a crash can never put an older model over a newer one. Writes are
pipelined in chunks. Old versions are deleted once a grace period has passed, so a
reader that resolved the pointer just before a switch still finds its lists.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any, cast

import numpy as np
import redis

from serving.layout import (
    CatalogEntry,
    ListSource,
    ModelMeta,
    RedisLayout,
    encode_factors,
    encode_lists,
)
from streaming.model.lists import UserLists
from streaming.model.similar import similar_movies
from streaming.model.topn import ItemIndex

__all__ = [
    "current_version",
    "delete_abandoned_versions",
    "delete_expired_versions",
    "delete_prefix",
    "encoded_lists",
    "publish_catalog",
    "switch_current",
    "write_factors",
    "write_lists",
    "write_similar",
    "write_version",
]

_CHUNK = 1_000

# KEYS[1] = {p}:current, KEYS[2] = {p}:versions; ARGV[1] = version, ARGV[2] = publish time.
# Moves the pointer only forward; returns 1 when it moved, 0 when a newer one is current.
_SWITCH = """
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
local wanted = tonumber(ARGV[1])
if wanted <= current then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""


def delete_prefix(client: redis.Redis, layout: RedisLayout) -> int:
    """Delete every key of the layout's prefix (on Redis Cluster, on every master); how many."""
    deleted = 0
    for key in client.scan_iter(match=layout.pattern, count=1_000):
        deleted += int(client.unlink(key))
    return deleted


def current_version(client: redis.Redis, layout: RedisLayout) -> int | None:
    """The version ``p:current`` points at, if any."""
    value = client.get(layout.current)
    return int(value) if value is not None else None


def encoded_lists(
    lists: UserLists, updated_at: float, source: ListSource
) -> list[tuple[int, bytes]]:
    """(user, stored list) of each user of ``lists`` with a personal list, encoded at once."""
    rows = np.flatnonzero(lists.personal)
    values = encode_lists(lists.movies[rows], lists.scores[rows], updated_at, source,
                          None if lists.stars is None else lists.stars[rows],
                          None if lists.because is None else lists.because[rows])  # fmt: skip
    return list(zip(lists.users[rows].tolist(), values, strict=True))


def write_lists(
    client: redis.Redis, layout: RedisLayout, version: int, lists: Iterable[tuple[int, bytes]]
) -> int:
    """HSET encoded user lists into a version's hash, pipelined in chunks; how many."""
    return _hset_chunked(client, layout.lists(version), lists)


def write_similar(
    client: redis.Redis, layout: RedisLayout, version: int, items: ItemIndex, k: int
) -> int:
    """Write each movie's ``k`` nearest movies as a version's ``similar`` hash; how many.

    Movies without a neighbour (their factors are zero) get no entry. The hash is
    filled under a staging name and renamed at the end, so the version's key exists
    only once it is whole (a switch that finds it does not write it again).
    """
    stamp = time.time()

    def encoded() -> Iterable[tuple[int, bytes]]:
        for movies, neighbours, cosines in similar_movies(items, k):
            known = neighbours[:, 0] >= 0
            values = encode_lists(neighbours[known], cosines[known], stamp, "model")
            yield from zip(movies[known].tolist(), values, strict=True)

    final = layout.similar(version)
    staging = layout.similar_staging(version)
    client.delete(staging)
    written = _hset_chunked(client, staging, encoded())
    if written:
        client.rename(staging, final)
    return written


def write_factors(client: redis.Redis, layout: RedisLayout, version: int, items: ItemIndex) -> int:
    """SET a version's item factors and prior (``encode_factors``); how many bytes."""
    table = encode_factors(items.movie_ids, items.factors, items.prior)
    client.set(layout.factors(version), table)
    return len(table)


def _hset_chunked(client: redis.Redis, key: str, entries: Iterable[tuple[int, bytes]]) -> int:
    """HSET (field, value) pairs into ``key``, pipelined in chunks; how many."""
    written = 0
    chunk: dict[Any, Any] = {}  # redis-py's hset wants exactly its own key union
    with client.pipeline(transaction=False) as pipe:
        for field, value in entries:
            chunk[str(field)] = value
            if len(chunk) >= _CHUNK:
                pipe.hset(key, mapping=chunk)
                written += len(chunk)
                chunk.clear()
        if chunk:
            pipe.hset(key, mapping=chunk)
            written += len(chunk)
        pipe.execute()
    return written


def write_version(
    client: redis.Redis,
    layout: RedisLayout,
    version: int,
    lists: Iterable[tuple[int, bytes]],
    popular: bytes,
    meta: ModelMeta,
) -> int:
    """Write every key of a version (not yet current); how many user lists."""
    written = write_lists(client, layout, version, lists)
    with client.pipeline(transaction=False) as pipe:
        pipe.set(layout.popular(version), popular)
        pipe.set(layout.meta(version), meta.to_json())
        pipe.execute()
    return written


def switch_current(
    client: redis.Redis, layout: RedisLayout, version: int, now: float | None = None
) -> bool:
    """Make ``version`` current unless the current one is newer; True if it switched."""
    published_at = time.time() if now is None else now
    moved = client.eval(_SWITCH, 2, layout.current, layout.versions, version, published_at)
    return bool(moved)


def delete_expired_versions(
    client: redis.Redis, layout: RedisLayout, grace_s: float, now: float | None = None
) -> list[int]:
    """Delete versions older than the current one that were superseded over ``grace_s`` ago.

    A version is superseded when the next one was published, so its age is measured from
    the publish time of its successor.
    """
    current = current_version(client, layout)
    if current is None:
        return []
    moment = time.time() if now is None else now
    entries = cast(
        list[tuple[bytes, float]], client.zrange(layout.versions, 0, -1, withscores=True)
    )
    published = [(int(member), float(score)) for member, score in entries]
    published.sort()
    expired = [
        version
        for (version, _), (_, successor_at) in pairwise(published)
        if version < current and moment - successor_at > grace_s
    ]
    for version in expired:
        _delete_version(client, layout, version)
        client.zrem(layout.versions, version)
    return expired


def mark_building(client: redis.Redis, layout: RedisLayout, version: int) -> None:
    """Note that ``version``'s keys are being written ahead of its switch.

    Should it never be switched in (its build, or the job, died on the way), the switch
    of a later version deletes what it wrote (``delete_abandoned_versions``).
    """
    client.sadd(layout.building, version)


def delete_abandoned_versions(client: redis.Redis, layout: RedisLayout, current: int) -> list[int]:
    """Delete the keys of versions below ``current`` written but never published; which.

    Called after the switch to ``current``: a lower version can no longer be switched
    in (the pointer only moves forward), so its keys would stay in Redis forever. Its
    members of ``layout.building`` at or below ``current`` are done with and dropped;
    higher ones (a build in flight) are left alone.
    """
    members = sorted(int(member) for member in client.smembers(layout.building))
    done = [version for version in members if version <= current]
    abandoned = [
        version for version in done
        if version < current and client.zscore(layout.versions, version) is None
    ]  # fmt: skip
    for version in abandoned:
        _delete_version(client, layout, version)
    if done:
        client.srem(layout.building, *done)
    return abandoned


def _delete_version(client: redis.Redis, layout: RedisLayout, version: int) -> None:
    """Unlink every key of ``version``, a ``similar`` hash left half-filled included."""
    client.unlink(*layout.version_keys(version), layout.similar_staging(version))


def publish_catalog(
    client: redis.Redis, layout: RedisLayout, movies: Iterable[tuple[int, str, Sequence[str]]]
) -> int:
    """HSET catalog entries (movie id -> title and genres), pipelined; how many."""
    count = 0
    with client.pipeline(transaction=False) as pipe:
        for movie_id, title, genres in movies:
            pipe.hset(layout.catalog, str(movie_id), CatalogEntry(title, tuple(genres)).to_json())
            count += 1
        pipe.execute()
    return count
