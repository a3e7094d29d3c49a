"""Publishing to real Redis: full versions, a forward-only switch, grace-period cleanup."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from serving.connection import open_redis
from serving.layout import (
    KEY_TEMPLATES,
    CatalogEntry,
    ModelMeta,
    RedisLayout,
    decode_list,
    decode_meta,
    decode_movie,
    encode_list,
    lua_key_functions,
)
from serving.settings import RedisSettings
from streaming.publish.writes import (
    current_version,
    delete_abandoned_versions,
    delete_expired_versions,
    mark_building,
    publish_catalog,
    switch_current,
    write_lists,
    write_version,
)

pytestmark = pytest.mark.integration


def _value(raw: bytes | str | None) -> bytes | str:
    assert raw is not None, "the key is missing"
    return raw


@pytest.fixture
def client(redis_settings: RedisSettings) -> Iterator[redis.Redis]:
    connection = open_redis(redis_settings)
    yield connection
    connection.close()


def _lists(users: range, source: str = "model") -> list[tuple[int, bytes]]:
    return [(u, encode_list([(u * 10, 4.5), (u * 10 + 1, 4.0)], 1.0, source)) for u in users]  # type: ignore[arg-type]


def test_version_is_written_in_full_then_switched(
    client: redis.Redis, redis_settings: RedisSettings
) -> None:
    layout = RedisLayout(redis_settings.key_prefix)
    popular = encode_list([(1, 9.0)], 1.0, "popular")
    meta = ModelMeta(version=1, trained_at=1.0, evaluation={"rmse": 0.9})
    written = write_version(client, layout, 1, _lists(range(1, 2501)), popular, meta)
    assert written == 2500
    assert current_version(client, layout) is None  # written, not yet current
    assert switch_current(client, layout, 1, now=100.0) is True
    assert current_version(client, layout) == 1
    assert client.hlen(layout.lists(1)) == 2500
    assert decode_list(_value(client.hget(layout.lists(1), "7"))).items == ((70, 4.5), (71, 4.0))
    assert decode_meta(_value(client.get(layout.meta(1)))) == meta
    assert decode_list(_value(client.get(layout.popular(1)))).source == "popular"


def test_switch_only_moves_forward(client: redis.Redis, redis_settings: RedisSettings) -> None:
    layout = RedisLayout(redis_settings.key_prefix)
    assert switch_current(client, layout, 5, now=10.0) is True
    assert switch_current(client, layout, 4, now=11.0) is False  # a replayed, older batch
    assert switch_current(client, layout, 5, now=12.0) is False
    assert current_version(client, layout) == 5
    assert switch_current(client, layout, 6, now=13.0) is True


def test_fold_in_writes_into_the_current_version(
    client: redis.Redis, redis_settings: RedisSettings
) -> None:
    layout = RedisLayout(redis_settings.key_prefix)
    write_version(client, layout, 2, _lists(range(1, 4)), encode_list([], 1.0, "popular"),
                  ModelMeta(version=2, trained_at=1.0))  # fmt: skip
    switch_current(client, layout, 2)
    write_lists(client, layout, 2, _lists(range(3, 5), source="fold-in"))
    assert decode_list(_value(client.hget(layout.lists(2), "1"))).source == "model"
    assert decode_list(_value(client.hget(layout.lists(2), "3"))).source == "fold-in"
    assert client.hlen(layout.lists(2)) == 4


def test_old_versions_go_after_the_grace_period(
    client: redis.Redis, redis_settings: RedisSettings
) -> None:
    layout = RedisLayout(redis_settings.key_prefix)
    for version, at in ((1, 100.0), (2, 200.0), (3, 300.0)):
        write_version(client, layout, version, _lists(range(1, 3)), b"[]",
                      ModelMeta(version=version, trained_at=at))  # fmt: skip
        switch_current(client, layout, version, now=at)
    # Version 1 was superseded at 200, version 2 at 300; the grace period is 60 s.
    assert delete_expired_versions(client, layout, grace_s=60, now=250.0) == []  # 50 s < 60 s
    assert delete_expired_versions(client, layout, grace_s=60, now=270.0) == [1]
    assert client.exists(*layout.version_keys(1)) == 0
    assert client.exists(layout.lists(2)) == 1
    assert delete_expired_versions(client, layout, grace_s=60, now=400.0) == [2]
    assert client.exists(layout.lists(3), layout.meta(3)) == 2  # the current one stays
    assert client.zrange(layout.versions, 0, -1) == [b"3"]


def test_a_version_written_but_never_switched_in_goes_at_the_next_switch(
    client: redis.Redis, redis_settings: RedisSettings
) -> None:
    layout = RedisLayout(redis_settings.key_prefix)

    def build(version: int) -> None:  # as a build writes ahead of its switch
        mark_building(client, layout, version)
        write_version(client, layout, version, _lists(range(1, 3)), b"[]",
                      ModelMeta(version=version, trained_at=1.0))  # fmt: skip

    build(4)
    switch_current(client, layout, 4)
    build(6)  # its job died before the switch: nothing will ever switch to it
    client.hset(layout.similar_staging(6), "1", b"[]")  # and its similar hash half-filled
    build(9)
    assert switch_current(client, layout, 9)
    build(12)  # a build in flight, above the current version
    assert delete_abandoned_versions(client, layout, 9) == [6]
    assert client.exists(*layout.version_keys(6), layout.similar_staging(6)) == 0
    assert client.exists(layout.lists(4), layout.lists(9), layout.lists(12)) == 3
    assert client.smembers(layout.building) == {b"12"}  # 4 and 9 were switched in
    assert delete_abandoned_versions(client, layout, 9) == []


def test_catalog_entries(client: redis.Redis, redis_settings: RedisSettings) -> None:
    layout = RedisLayout(redis_settings.key_prefix)
    assert publish_catalog(client, layout, [(1, "Toy Story (1995)", ["Animation"]),
                                            (2, "Café (1999)", [])]) == 2  # fmt: skip
    assert decode_movie(_value(client.hget(layout.catalog, "2"))) == CatalogEntry("Café (1999)")


def test_the_scripts_key_functions_name_the_layouts_keys(client: redis.Redis) -> None:
    layout = RedisLayout("tenant-{a}:x")  # a hash tag and a colon: passed through as text
    names = list(KEY_TEMPLATES)  # every key of the layout, in the order they are defined
    calls = ", ".join(f"{name}_key(ARGV[1], ARGV[2])" for name in names)
    script = lua_key_functions() + f"return {{{calls}}}"
    keys = [bytes(key).decode() for key in client.eval(script, 0, layout.tag, 12)]
    assert names == ["current", "versions", "catalog", "lists", "meta", "popular", "similar",
                     "pipeline", "factors", "building"]  # fmt: skip
    assert keys == [layout.current, layout.versions, layout.catalog, layout.lists(12),
                    layout.meta(12), layout.popular(12), layout.similar(12), layout.pipeline,
                    layout.factors(12), layout.building]  # fmt: skip
    assert set(layout.version_keys(12)) < set(keys)
