"""The Redis layout contract, pinned: exact keys and exact value bytes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.layout import (
    KEY_TEMPLATES,
    CatalogEntry,
    LayoutDecodeError,
    ModelMeta,
    RedisLayout,
    UserList,
    decode_list,
    decode_meta,
    decode_movie,
    encode_list,
    encode_lists,
    lua_key,
    lua_key_functions,
)


def test_keys_are_pinned() -> None:
    layout = RedisLayout("recstream")
    assert layout.current == "{recstream}:current"
    assert layout.versions == "{recstream}:versions"
    assert layout.catalog == "{recstream}:catalog"
    assert layout.lists(7) == "{recstream}:v7:lists"
    assert layout.meta(7) == "{recstream}:v7:meta"
    assert layout.popular(7) == "{recstream}:v7:popular"
    assert layout.similar(7) == "{recstream}:v7:similar"
    assert layout.factors(7) == "{recstream}:v7:factors"
    assert layout.pipeline == "{recstream}:pipeline"
    assert layout.version_keys(7) == [
        "{recstream}:v7:lists",
        "{recstream}:v7:meta",
        "{recstream}:v7:popular",
        "{recstream}:v7:similar",
        "{recstream}:v7:factors",
    ]


def test_the_scripts_build_keys_from_the_same_templates() -> None:
    assert lua_key("current") == "prefix .. ':current'"
    assert lua_key("lists") == "prefix .. ':v' .. version .. ':lists'"
    functions = lua_key_functions().splitlines()
    assert len(functions) == len(KEY_TEMPLATES)
    assert functions[4] == (
        "local function meta_key(prefix, version) return prefix .. ':v' .. version .. ':meta' end"
    )


def test_meta_value_is_pinned() -> None:
    meta = ModelMeta(
        version=7, trained_at=1700000000.25, batch_id=6, reason="first model", ratings=100,
        users=10, movies=20, model_movies=19, holdout_from_timestamp=889000000,
        hyperparameters={"rank": 8}, evaluation={"hit_rate": 0.25}, stars_from_version=7,
        timings_s={"fit": 1.5}, last_folded_in_batch=9,
    )  # fmt: skip
    assert meta.to_json() == (
        b'{"version":7,"trained_at":1700000000.25,"batch_id":6,"reason":"first model",'
        b'"ratings":100,"users":10,"movies":20,"model_movies":19,'
        b'"holdout_from_timestamp":889000000,"hyperparameters":{"rank":8},'
        b'"evaluation":{"hit_rate":0.25},"stars_from_version":7,"timings_s":{"fit":1.5},'
        b'"last_folded_in_batch":9}'
    )
    assert decode_meta(meta.to_json()) == meta
    # A newer writer's extra keys are ignored; an older writer's missing ones default.
    assert decode_meta(b'{"version":7,"trained_at":1,"shards":4}') == ModelMeta(
        version=7, trained_at=1.0
    )


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


def test_a_block_of_lists_encodes_each_row_as_one_list_does_without_its_padding() -> None:
    movies = np.array([[50, 181, -1], [7, -1, -1], [-1, -1, -1]])
    scores = np.array([[0.912345, 0.5, -np.inf], [2.0, -np.inf, -np.inf], [-np.inf] * 3])
    stars = np.array([[4.4567, np.nan, np.nan], [3.0, np.nan, np.nan], [np.nan] * 3])
    block = encode_lists(movies, scores, 1.0, "model", stars)
    assert block == [
        encode_list([(50, 0.912345), (181, 0.5)], 1.0, "model", [4.4567, float("nan")]),
        encode_list([(7, 2.0)], 1.0, "model", [3.0]),
        encode_list([], 1.0, "model", []),
    ]
    pinned = b'{"items":[[50,0.9123,4.46],[181,0.5,null]],"updated_at":1.0,"source":"model"}'
    assert block[0] == pinned
    assert encode_lists(movies[:1], scores[:1], 1.0, "fold-in")[0] == encode_list(
        [(50, 0.912345), (181, 0.5)], 1.0, "fold-in"
    )


def test_the_movies_behind_a_list_align_with_its_first_items() -> None:
    movies = np.array([[50, 181, 7], [9, -1, -1]])
    scores = np.array([[0.9, 0.5, 0.1], [2.0, -np.inf, -np.inf]])
    because = np.array([[172, -1], [1, 2]])  # explained: the first two of each list
    block = encode_lists(movies, scores, 1.0, "model", because=because)
    assert block[0] == (b'{"items":[[50,0.9],[181,0.5],[7,0.1]],"updated_at":1.0,'
                        b'"source":"model","because":[172,null]}')  # fmt: skip
    assert decode_list(block[0]).because == (172, None)
    assert decode_list(block[1]).because == (1,)  # the padding's slot is left out
    assert block[1] == encode_list([(9, 2.0)], 1.0, "model", because=[1, 2])
    assert decode_list(encode_list([(9, 2.0)], 1.0, "model")).because == ()  # not explained
    with pytest.raises(LayoutDecodeError, match="not a recommendation list"):
        decode_list(b'{"items":[[1,2.0]],"updated_at":1,"source":"model","because":["x"]}')


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2**40), st.floats(-1e6, 1e6), st.floats(1, 5) | st.just(None)),
        max_size=12,
    ),
    st.floats(0, 4e9),
)
def test_the_stored_bytes_are_what_json_dumps_writes(
    items: list[tuple[int, float, float | None]], updated_at: float
) -> None:
    # The lists are encoded with orjson for speed; the contract's bytes are the stdlib's.
    movies = np.array([[movie for movie, _, _ in items]], dtype=np.int64).reshape(1, -1)
    scores = np.array([[score for _, score, _ in items]]).reshape(1, -1)
    stars = np.array([[np.nan if s is None else s for _, _, s in items]]).reshape(1, -1)
    rounded = np.round(scores, 4)[0].tolist()  # the encoder's rounding: the bytes are checked
    starred = np.round(stars, 2)[0].tolist()
    document = {
        "items": [
            [movie, rounded[i], None if star is None else starred[i]]
            for i, (movie, _, star) in enumerate(items)
        ],
        "updated_at": round(updated_at, 3),
        "source": "model",
    }
    expected = json.dumps(document, separators=(",", ":")).encode()
    assert encode_lists(movies, scores, updated_at, "model", stars) == [expected]


def test_movie_value_is_pinned() -> None:
    value = CatalogEntry("Amélie (2001)", ("Comedy", "Romance")).to_json()
    assert value == '{"title": "Amélie (2001)", "genres": ["Comedy", "Romance"]}'.encode()
    assert decode_movie(value) == CatalogEntry("Amélie (2001)", ("Comedy", "Romance"))


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
    with pytest.raises(
        LayoutDecodeError, match=rf"\{{recstream\}}:v1:lists\[42\] in Redis .*{reason}"
    ):
        decode_list(raw, key="{recstream}:v1:lists[42]")


@pytest.mark.parametrize("raw", [b"[]", b'{"title": 5, "genres": []}', b'{"title": "x"}', b"\xff"])
def test_garbage_movies_raise_a_clear_error(raw: bytes) -> None:
    with pytest.raises(LayoutDecodeError, match="catalog"):
        decode_movie(raw)


def test_meta_needs_a_version_and_a_training_time() -> None:
    meta = decode_meta(b'{"version": 4, "trained_at": 1700000000.5, "ratings": 10}')
    assert (meta.version, meta.trained_at, meta.ratings) == (4, 1700000000.5, 10)
    assert meta.evaluation is None and meta.hyperparameters == {}  # the rest defaults


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{", "is not JSON"),
        (b"[]", "is not a JSON object"),
        (b'{"trained_at": 1}', "has no integer version"),
        (b'{"version": true, "trained_at": 1}', "has no integer version"),
        (b'{"version": 1, "trained_at": "yesterday"}', "has no numeric trained_at"),
        (b'{"version": 1, "trained_at": 1, "ratings": "many"}', "has a bad ratings"),
    ],
)
def test_garbage_meta_raises_a_clear_error(raw: bytes, reason: str) -> None:
    with pytest.raises(LayoutDecodeError, match=rf"\{{recstream\}}:v1:meta in Redis {reason}"):
        decode_meta(raw, key="{recstream}:v1:meta")
