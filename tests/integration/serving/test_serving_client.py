"""The serving client against real Redis, on data written by the streaming side's code."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
import redis

from serving.anonymous import ItemTable, anonymous_list
from serving.client import RecommendationClient
from serving.errors import NoModelError, RedisUnavailableError, UnknownMovieError
from serving.layout import LayoutDecodeError, encode_list
from serving.settings import RedisSettings
from streaming.publish.writes import switch_current, write_lists, write_version
from tests.serving_data import ITEMS, META, publish, record_batches

pytestmark = pytest.mark.integration


@pytest.fixture
def client(redis_settings: RedisSettings) -> Iterator[RecommendationClient]:
    with RecommendationClient(redis_settings) as lookups:
        yield lookups


def test_a_users_list_comes_back_ranked_with_titles(
    client: RecommendationClient, redis_client: redis.Redis
) -> None:
    publish(redis_client, client.layout)
    found = client.recommendations(1, n=3)
    assert [m.movie_id for m in found.movies] == [10, 11, 14]
    assert [m.title for m in found.movies] == ["Toy Story (1995)", "Heat (1995)", None]
    assert found.movies[0].genres == ["Animation", "Comedy"]
    assert found.movies[2].genres == []  # missing catalog entry: still listed, no title
    assert found.movies[0].score == 4.9
    assert (found.source, found.model_version) == ("model", 3)
    assert (found.trained_at, found.updated_at) == (1_700_000_000.5, 1_700_000_100.0)


def test_fold_in_lists_say_so(client: RecommendationClient, redis_client: redis.Redis) -> None:
    publish(redis_client, client.layout)
    found = client.recommendations(2)
    assert found.source == "fold-in"
    assert [m.movie_id for m in found.movies] == [13, 12]  # n larger than the list
    assert [m.predicted_rating for m in found.movies] == [4.26, None]  # None: no stars for it
    assert client.recommendations(1).movies[0].predicted_rating is None  # a list without stars


def test_unknown_users_get_the_popular_list(
    client: RecommendationClient, redis_client: redis.Redis
) -> None:
    publish(redis_client, client.layout)
    found = client.recommendations(999, n=2)
    assert found.source == "popular"
    assert [m.title for m in found.movies] == ["Fargo (1996)", "Toy Story (1995)"]


def test_genre_filter_looks_down_the_whole_list(
    client: RecommendationClient, redis_client: redis.Redis
) -> None:
    publish(redis_client, client.layout)
    found = client.recommendations(1, n=2, genre="comedy")  # case does not matter
    assert [m.movie_id for m in found.movies] == [10, 12]
    assert found.genre == "comedy"
    assert client.recommendations(1, n=5, genre="Western").movies == []


def test_explain_names_the_rated_movie_behind_each_explained_movie(
    client: RecommendationClient, redis_client: redis.Redis
) -> None:
    publish(redis_client, client.layout)
    found = client.recommendations(1, n=5, explain=True)
    behind = [None if m.because is None else m.because.model_dump() for m in found.movies]
    assert behind == [
        {"movie_id": 20, "title": "Fargo (1996)"},
        None,  # no rated movie raised it
        {"movie_id": 30, "title": None},  # not in the catalog: named without a title
        None,  # past the explained head of the list
        None,
    ]
    assert all(m.because is None for m in client.recommendations(1, n=5).movies)  # not asked
    assert [m.because is not None for m in client.recommendations(1, n=1, explain=True)
            .movies] == [True]  # fmt: skip
    comedies = client.recommendations(1, n=2, genre="comedy", explain=True)
    assert [(m.movie_id, m.because and m.because.movie_id) for m in comedies.movies] == [
        (10, 20), (12, None)
    ]  # fmt: skip
    popular = client.recommendations(999, n=3, explain=True)
    assert popular.source == "popular" and all(m.because is None for m in popular.movies)


def test_one_round_trip_per_lookup(
    client: RecommendationClient, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(redis_client, client.layout)
    client.recommendations(1)  # loads the scripts once
    client.similar(10)
    sent: list[object] = []
    connection = client._redis
    execute: Callable[..., object] = connection.execute_command

    def counting(*args: object, **options: object) -> object:
        sent.append(args[0])
        return execute(*args, **options)

    monkeypatch.setattr(connection, "execute_command", counting)
    client.recommendations(1, n=5)
    client.recommendations(1, n=5, explain=True)  # the titles behind them too
    client.recommendations(999, n=5, genre="Crime")
    client.similar(12, n=3)
    assert sent == ["EVALSHA_RO"] * 4  # read-only scripts


def test_similar_movies_nearest_first_with_titles(
    client: RecommendationClient, redis_client: redis.Redis
) -> None:
    publish(redis_client, client.layout)
    found = client.similar(10, n=4)
    assert (found.movie_id, found.title, found.model_version) == (10, "Toy Story (1995)", 3)
    assert [m.movie_id for m in found.movies] == [14, 12, 20, 11]
    assert [m.similarity for m in found.movies] == [0.995, 0.7071, 0.6, 0.0]
    assert [m.title for m in found.movies] == [None, "Clueless (1995)", "Fargo (1996)",
                                               "Heat (1995)"]  # fmt: skip
    assert len(client.similar(10, n=100).movies) == 5  # as many as were published
    assert client.similar(14).title is None  # not in the catalog, but the model knows it
    for unknown in (30, 999):  # no factors; never rated
        with pytest.raises(UnknownMovieError, match=f"movie {unknown} has no similar movies"):
            client.similar(unknown)
    with pytest.raises(ValueError, match="movie_id must be an integer"):
        client.similar(0)


def test_the_pipeline_newest_first_with_totals(
    client: RecommendationClient, redis_client: redis.Redis
) -> None:
    assert client.pipeline().batches == []  # the job has not reported yet
    written = record_batches(redis_client, client.layout)
    view = client.pipeline()
    assert view.batches == written[::-1]
    assert (view.window_s, view.ratings_per_s) == (2.0, 300.0)  # 310 + 290 over 2 s
    assert (view.hit_rate_at_10, view.popular_hit_rate_at_10) == (
        0.0598,
        0.0345,
    )  # 52 and 30 of 870
    assert [b.batch_id for b in client.pipeline(2).batches] == [9, 8]
    with pytest.raises(ValueError, match=r"batches must be an integer in 1\.\.600"):
        client.pipeline(0)


def test_a_visitor_gets_the_fold_in_of_the_movies_they_give(
    client: RecommendationClient, redis_client: redis.Redis
) -> None:
    publish(redis_client, client.layout)
    found = client.for_visitor([(10, 5.0), (12, None), (999, 3.0)], n=3)
    table = ItemTable(3, ITEMS.movie_ids, ITEMS.factors, ITEMS.prior, 0.1, True, 1.0)
    expected, _ = anonymous_list(table, np.array([10, 12, 999]), np.array([5.0, 4.0, 3.0]), 3)
    assert [(m.movie_id, m.score) for m in found.movies] == [
        (movie, round(score, 4)) for movie, score in expected
    ]
    assert (found.source, found.model_version, found.unknown_movies) == ("anonymous", 3, [999])
    assert {m.movie_id for m in found.movies}.isdisjoint({10, 12})
    popular = client.for_visitor([(999, 5.0)])  # a movie the model has not learned
    assert (popular.source, [m.movie_id for m in popular.movies]) == ("popular", [20, 10, 11])
    for bad, message in (([], "give 1..200 movies"), ([(10, 1.0), (10, 2.0)], "given twice"),
                         ([(10, 7.0)], "must be 0.5..5 stars")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            client.for_visitor(bad)


def test_model_info(client: RecommendationClient, redis_client: redis.Redis) -> None:
    publish(redis_client, client.layout)
    info = client.model_info()
    assert info.version == 3
    assert info.published_at == 1_700_000_050.0
    assert (info.ratings, info.users, info.movies) == (1234, 56, 78)
    assert info.evaluation == {"rmse": 0.93, "popular": {"precision": 0.05, "ndcg": 0.07}}
    assert info.hyperparameters == {
        "rank": 10, "reg_param": 0.1, "implicit_prefs": True, "alpha": 1.0,
    }  # fmt: skip
    assert info.age_s > 0
    assert client.health().ok


def test_the_newest_version_is_read(
    client: RecommendationClient, redis_client: redis.Redis
) -> None:
    publish(redis_client, client.layout, version=3)
    layout = client.layout
    newer = META.model_copy(update={"version": 4})
    write_version(redis_client, layout, 4, [(1, encode_list([(20, 5.0)], 2e9, "model"))],
                  encode_list([], 2e9, "popular"), newer)  # fmt: skip
    assert client.recommendations(1).model_version == 3  # written, not yet current
    switch_current(redis_client, layout, 4)
    found = client.recommendations(1)
    assert (found.model_version, [m.movie_id for m in found.movies]) == (4, [20])
    write_lists(redis_client, layout, 4, [(1, encode_list([(13, 5.0)], 2e9, "fold-in"))])
    assert client.recommendations(1).source == "fold-in"


def test_no_model_yet(client: RecommendationClient) -> None:
    with pytest.raises(NoModelError, match="no model has been published yet"):
        client.recommendations(1)
    with pytest.raises(NoModelError):
        client.model_info()
    health = client.health()
    assert (health.ok, health.redis) == (False, True)
    assert "no model" in health.reason


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("lists", b"{not json", r"v3:lists\[1\] in Redis is not a recommendation list"),
        ("meta", b"[1, 2]", r"v3:meta in Redis is not a JSON object"),
        ("catalog", b"\xff\xfe", r"catalog\[10\] in Redis is not a catalog entry"),
    ],
)
def test_garbage_values_are_clear_errors(
    client: RecommendationClient, redis_client: redis.Redis, key: str, value: bytes, message: str
) -> None:
    publish(redis_client, client.layout)
    layout = client.layout
    if key == "lists":
        redis_client.hset(layout.lists(3), "1", value)
    elif key == "meta":
        redis_client.set(layout.meta(3), value)
    else:
        redis_client.hset(layout.catalog, "10", value)
    with pytest.raises(LayoutDecodeError, match=message):
        client.recommendations(1)


def test_missing_popular_list_is_a_clear_error(
    client: RecommendationClient, redis_client: redis.Redis
) -> None:
    publish(redis_client, client.layout)
    redis_client.delete(client.layout.popular(3))
    with pytest.raises(LayoutDecodeError, match=r"v3:popular is missing"):
        client.recommendations(999)


def test_redis_down(free_port: int) -> None:
    settings = RedisSettings(url=f"redis://127.0.0.1:{free_port}/0", socket_timeout_s=0.5)
    with RecommendationClient(settings) as client:
        with pytest.raises(RedisUnavailableError, match=f"127.0.0.1:{free_port}.*did not answer"):
            client.recommendations(1)
        with pytest.raises(RedisUnavailableError):
            client.model_info()
        health = client.health()
    assert (health.ok, health.redis) == (False, False)


@pytest.mark.parametrize(
    ("user_id", "n", "genre", "message"),
    [
        (0, 10, None, "user_id must be an integer in 1..2147483647"),
        (2**31, 10, None, "user_id must be an integer in 1..2147483647"),
        (1, 0, None, r"n must be an integer in 1..100"),
        (1, 101, None, r"n must be an integer in 1..100"),
        (1, 10, "", "genre must be 1-64 characters"),
    ],
)
def test_bad_requests_name_what_is_allowed(
    client: RecommendationClient, user_id: int, n: int, genre: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        client.recommendations(user_id, n, genre=genre)


def test_meta_written_by_the_job_is_readable(
    client: RecommendationClient, redis_client: redis.Redis
) -> None:
    publish(redis_client, client.layout)
    redis_client.set(client.layout.meta(3), META.model_copy(update={"evaluation": None}).to_json())
    assert client.model_info().evaluation is None
