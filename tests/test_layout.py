"""The Redis layout contract, pinned: exact keys and exact value bytes."""

from __future__ import annotations

import pytest

from serving.layout import (
    LayoutDecodeError,
    RedisLayout,
    UserList,
    decode_list,
    decode_meta,
    decode_movie,
    encode_list,
    encode_movie,
)


def test_keys_are_pinned() -> None:
    layout = RedisLayout("recstream")
    assert layout.current == "recstream:current"
    assert layout.versions == "recstream:versions"
    assert layout.catalog == "recstream:catalog"
    assert layout.lists(7) == "recstream:v7:lists"
    assert layout.meta(7) == "recstream:v7:meta"
    assert layout.popular(7) == "recstream:v7:popular"
    assert layout.version_keys(7) == [
        "recstream:v7:lists",
        "recstream:v7:meta",
        "recstream:v7:popular",
    ]


def test_list_value_is_pinned() -> None:
    value = encode_list(
        [(50, 4.912345678), (181, 4.5)], updated_at=1700000000.12345, source="fold-in"
    )
    assert (
        value == b'{"items":[[50,4.9123],[181,4.5]],"updated_at":1700000000.123,"source":"fold-in"}'
    )
    assert decode_list(value) == UserList(((50, 4.9123), (181, 4.5)), 1700000000.123, "fold-in")


def test_stars_ride_as_a_third_value_and_lists_without_them_still_decode() -> None:
    value = encode_list([(50, 0.9), (181, 0.5)], 1.0, "model", stars=[4.4567, float("nan")])
    assert value == b'{"items":[[50,0.9,4.46],[181,0.5,null]],"updated_at":1.0,"source":"model"}'
    decoded = decode_list(value)
    assert (decoded.items, decoded.stars) == (((50, 0.9), (181, 0.5)), (4.46, None))
    assert decode_list(encode_list([(50, 0.9)], 1.0, "model")).stars == ()
    with pytest.raises(LayoutDecodeError, match="not a recommendation list"):
        decode_list(b'{"items": [[1, 2.0, 3.0, 4.0]], "updated_at": 1, "source": "model"}')


def test_movie_value_is_pinned() -> None:
    value = encode_movie("Amélie (2001)", ["Comedy", "Romance"])
    assert value == '{"title": "Amélie (2001)", "genres": ["Comedy", "Romance"]}'.encode()
    assert decode_movie(value) == ("Amélie (2001)", ("Comedy", "Romance"))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not a recommendation list"),
        (b'{"items": 5, "updated_at": 1, "source": "model"}', "not a recommendation list"),
        (b'{"items": [[1, 2.0]], "updated_at": 1}', "not a recommendation list"),
        (
            b'{"items": [["x", 2.0]], "updated_at": 1, "source": "model"}',
            "not a recommendation list",
        ),
        (b'{"items": [], "updated_at": 1, "source": "oracle"}', "unknown source 'oracle'"),
    ],
)
def test_garbage_lists_raise_a_clear_error(raw: bytes, reason: str) -> None:
    with pytest.raises(LayoutDecodeError, match=f"recstream:v1:lists\\[42\\] in Redis .*{reason}"):
        decode_list(raw, key="recstream:v1:lists[42]")


@pytest.mark.parametrize("raw", [b"[]", b'{"title": 5, "genres": []}', b'{"title": "x"}', b"\xff"])
def test_garbage_movies_raise_a_clear_error(raw: bytes) -> None:
    with pytest.raises(LayoutDecodeError, match="catalog"):
        decode_movie(raw)


def test_meta_needs_a_version_and_a_training_time() -> None:
    meta = decode_meta(b'{"version": 4, "trained_at": 1700000000.5, "ratings": 10}')
    assert meta == {"version": 4, "trained_at": 1700000000.5, "ratings": 10}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{", "is not JSON"),
        (b"[]", "is not a JSON object"),
        (b'{"trained_at": 1}', "has no integer version"),
        (b'{"version": true, "trained_at": 1}', "has no integer version"),
        (b'{"version": 1, "trained_at": "yesterday"}', "has no numeric trained_at"),
    ],
)
def test_garbage_meta_raises_a_clear_error(raw: bytes, reason: str) -> None:
    with pytest.raises(LayoutDecodeError, match=f"recstream:v1:meta in Redis {reason}"):
        decode_meta(raw, key="recstream:v1:meta")
