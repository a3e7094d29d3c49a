"""The HTTP API against real Redis: answers, every error path, a fuzz, a running uvicorn."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.api import create_app
from serving.layout import RedisLayout
from serving.settings import RedisSettings
from tests.conftest import subprocess_env
from tests.serving_data import publish, record_batches

pytestmark = pytest.mark.integration

RECS = "/users/{}/recommendations"


@pytest.fixture
def http(redis_settings: RedisSettings) -> Iterator[TestClient]:
    with TestClient(create_app(redis_settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def published(redis_client: redis.Redis, redis_settings: RedisSettings) -> RedisLayout:
    layout = RedisLayout(redis_settings.key_prefix)
    publish(redis_client, layout)
    return layout


@pytest.mark.usefixtures("published")
def test_recommendations(http: TestClient) -> None:
    answer = http.get(RECS.format(1), params={"n": 2})
    assert answer.status_code == 200
    body = answer.json()
    assert body["source"] == "model"
    assert body["model_version"] == 3
    assert body["movies"] == [
        {"movie_id": 10, "title": "Toy Story (1995)", "genres": ["Animation", "Comedy"],
         "score": 4.9, "predicted_rating": None},
        {"movie_id": 11, "title": "Heat (1995)", "genres": ["Action", "Crime"], "score": 4.5,
         "predicted_rating": None},
    ]  # fmt: skip
    crime = http.get(RECS.format(1), params={"n": 10, "genre": "Crime"}).json()
    assert [m["movie_id"] for m in crime["movies"]] == [11, 13]


@pytest.mark.usefixtures("published")
def test_explain_adds_because_you_rated(http: TestClient) -> None:
    body = http.get(RECS.format(1), params={"n": 3, "explain": "true"}).json()
    assert [m["because"] for m in body["movies"]] == [
        {"movie_id": 20, "title": "Fargo (1996)"}, None, {"movie_id": 30, "title": None}
    ]  # fmt: skip
    plain = http.get(RECS.format(1), params={"n": 3}).json()
    assert all("because" not in m for m in plain["movies"])  # only when asked


@pytest.mark.usefixtures("published")
def test_unknown_user_gets_the_popular_list(http: TestClient) -> None:
    body = http.get(RECS.format(123456)).json()
    assert body["source"] == "popular"
    assert [m["movie_id"] for m in body["movies"]] == [20, 10, 11]


@pytest.mark.usefixtures("published")
def test_similar_movies(http: TestClient) -> None:
    body = http.get("/movies/10/similar", params={"n": 2}).json()
    assert body["movie_id"] == 10
    assert body["title"] == "Toy Story (1995)"
    assert body["model_version"] == 3
    assert body["movies"] == [
        {"movie_id": 14, "title": None, "genres": [], "similarity": 0.995},
        {"movie_id": 12, "title": "Clueless (1995)", "genres": ["Comedy", "Romance"],
         "similarity": 0.7071},
    ]  # fmt: skip
    unknown = http.get("/movies/999/similar")
    assert unknown.status_code == 404
    assert unknown.json() == {
        "detail": "movie 999 has no similar movies in model version 3: the model has not "
        "learned it (no ratings of it yet, or too few)"
    }


@pytest.mark.usefixtures("published")
def test_a_visitor_gets_a_list_from_the_movies_they_give(http: TestClient) -> None:
    body = {"movies": [{"movie_id": 10, "rating": 5}, {"movie_id": 999}], "n": 3}
    found = http.post("/recommendations", json=body).json()
    assert (found["source"], found["model_version"], found["unknown_movies"]) == (
        "anonymous", 3, [999],
    )  # fmt: skip
    assert len(found["movies"]) == 3 and 10 not in [m["movie_id"] for m in found["movies"]]
    assert found["movies"][0]["title"] in {"Clueless (1995)", None, "Fargo (1996)"}
    nobody = http.post("/recommendations", json={"movies": [{"movie_id": 999}]}).json()
    assert nobody["source"] == "popular"
    assert [m["movie_id"] for m in nobody["movies"]] == [20, 10, 11]
    twice = http.post("/recommendations", json={"movies": [{"movie_id": 10}, {"movie_id": 10}]})
    assert (twice.status_code, twice.json()) == (422, {"detail": "movie 10 is given twice"})
    refused: list[dict[str, object]] = [
        {"movies": []}, {"movies": [{"movie_id": 0}]},
        {"movies": [{"movie_id": 5, "rating": 9}]}, {"movies": [{"id": 5}]},
    ]  # fmt: skip
    for bad in refused:
        assert http.post("/recommendations", json=bad).status_code == 422, bad


def test_the_console_is_served_from_the_api_itself(http: TestClient) -> None:
    home = http.get("/", follow_redirects=False)
    assert (home.status_code, home.headers["location"]) == (307, "/console")
    page = http.get("/console")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for needed in ('id="user"', 'id="list"', 'id="batches"', '"/ratings"', "/pipeline?batches="):
        assert needed in page.text, needed
    assert "http://" not in page.text and "https://" not in page.text  # nothing from outside


def test_pipeline(http: TestClient, redis_client: redis.Redis, published: RedisLayout) -> None:
    record_batches(redis_client, published)
    body = http.get("/pipeline", params={"batches": 2}).json()
    assert [b["batch_id"] for b in body["batches"]] == [9, 8]
    assert body["batches"][0]["switched_to"] == 4
    assert (body["ratings_per_s"], body["hit_rate_at_10"]) == (290.0, 0.0644)  # 38 of 590


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("/pipeline", {"batches": 601}, "batches must be an integer in 1..600"),
        ("/movies/0/similar", {}, "movie_id must be an integer in 1..2147483647"),
        ("/movies/10/similar", {"n": 101}, "n must be an integer in 1..100"),
        (RECS.format("abc"), {}, "user_id must be an integer in 1..2147483647"),
        (RECS.format(-5), {}, "user_id must be an integer in 1..2147483647"),
        (RECS.format(0), {}, "user_id must be an integer in 1..2147483647"),
        (RECS.format(2**31), {}, "user_id must be an integer in 1..2147483647"),
        (RECS.format(1), {"n": 0}, "n must be an integer in 1..100"),
        (RECS.format(1), {"n": 101}, "n must be an integer in 1..100"),
        (RECS.format(1), {"n": "ten"}, "n must be an integer in 1..100"),
        (RECS.format(1), {"genre": "x" * 65}, "genre must be 1-64 characters, e.g. Comedy"),
        (RECS.format(1), {"explain": "perhaps"}, "explain must be true or false"),
    ],
)
@pytest.mark.usefixtures("published")
def test_bad_input_is_422_saying_what_is_allowed(
    http: TestClient, path: str, params: dict[str, object], message: str
) -> None:
    answer = http.get(path, params=params)
    assert answer.status_code == 422
    assert answer.json() == {"detail": message}


def test_no_model_is_503_with_retry_after(http: TestClient) -> None:
    for path in (RECS.format(1), "/movies/1/similar", "/model", "/healthz"):
        answer = http.get(path)
        assert answer.status_code == 503, path
        assert answer.headers["Retry-After"] == "5"
        assert "no model has been published yet" in answer.text


def test_redis_down_is_503_never_500(free_port: int) -> None:
    settings = RedisSettings(url=f"redis://127.0.0.1:{free_port}/0", socket_timeout_s=0.5)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        for path in (RECS.format(1), "/model", "/healthz"):
            answer = client.get(path)
            assert answer.status_code == 503, path
            assert answer.headers["Retry-After"] == "5"
            assert "Traceback" not in answer.text
        detail = client.get(RECS.format(1)).json()["detail"]
        assert detail == "the recommendation store (Redis) is unavailable; retry later"
        assert str(free_port) not in client.get("/healthz").text  # no address in answers
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert 'recstream_redis_errors_total{kind="unavailable"}' in metrics.text
        assert "recstream_model_version -1.0" in metrics.text


def test_garbage_in_redis_is_502_and_the_log_names_the_key(
    http: TestClient,
    redis_client: redis.Redis,
    published: RedisLayout,
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis_client.hset(published.lists(3), "1", b"\x00garbage")
    answer = http.get(RECS.format(1))
    assert answer.status_code == 502
    assert answer.json() == {"detail": "the stored recommendations for this request are unreadable"}
    assert f"{published.lists(3)}[1] in Redis is not a recommendation list" in caplog.text


@pytest.mark.usefixtures("published")
def test_model_health_and_metrics(http: TestClient) -> None:
    model = http.get("/model").json()
    assert (model["version"], model["ratings"]) == (3, 1234)
    assert model["evaluation"]["rmse"] == 0.93
    health = http.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"ok": True, "redis": True, "model_version": 3, "reason": "ok"}
    http.get(RECS.format(1))
    http.get(RECS.format(0))
    text = http.get("/metrics").text
    route = 'route="/users/{user_id}/recommendations"'
    assert f'recstream_http_requests_total{{{route},status="200"}} 1.0' in text
    assert f'recstream_http_requests_total{{{route},status="422"}} 1.0' in text
    assert f"recstream_http_request_seconds_count{{{route}}} 2.0" in text
    assert "recstream_model_version 3.0" in text
    assert "recstream_model_age_seconds" in text


@pytest.mark.usefixtures("published")
def test_reads_are_read_only_and_documented(http: TestClient) -> None:
    assert http.post(RECS.format(1)).status_code == 405
    assert http.delete("/model").status_code == 405
    assert http.post("/ratings", json={}).status_code == 403  # writing is off by default
    spec = http.get("/openapi.json").json()
    assert set(spec["paths"]) == {
        RECS.format("{user_id}"), "/movies/{movie_id}/similar", "/model", "/pipeline",
        "/healthz", "/metrics", "/ratings", "/recommendations",
    }  # fmt: skip
    for path, operations in spec["paths"].items():  # every answer documented with an example
        for method, operation in operations.items():
            success = next(v for k, v in operation["responses"].items() if k.startswith("2"))
            (content,) = success["content"].values()
            schema = content.get("schema", {})
            named = spec["components"]["schemas"].get(schema.get("$ref", "").split("/")[-1], {})
            assert "example" in content or "examples" in named, (method, path)
    for page in ("/docs", "/redoc"):  # their scripts come from the API itself, not a CDN
        html = http.get(page).text
        assert "cdn.jsdelivr.net" not in html
        assert "fastapi.tiangolo.com" not in html
        assets = re.findall(r"(?:src|href)=['\"](/[^'\"]+)['\"]", html)
        assert assets, page
        for asset in assets:
            assert http.get(asset).status_code == 200, asset
    assert "/static-offline-docs/swagger-ui-bundle.js" in http.get("/docs").text


_SEGMENT = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40).map(str),
    st.text(max_size=30),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    user=_SEGMENT,
    n=st.one_of(st.none(), _SEGMENT),
    genre=st.one_of(st.none(), st.text(max_size=80)),
)
@pytest.mark.usefixtures("published")
def test_fuzzed_requests_never_answer_500(
    http: TestClient, user: str, n: str | None, genre: str | None
) -> None:
    params = {name: value for name, value in (("n", n), ("genre", genre)) if value is not None}
    answer = http.get(f"/users/{quote(user, safe='')}/recommendations", params=params)
    assert answer.status_code in {200, 404, 422}, (answer.status_code, answer.text)
    if answer.status_code == 200:
        assert len(answer.json()["movies"]) <= 100


@pytest.mark.slow
def test_a_running_uvicorn_serves_it(
    published: RedisLayout, redis_settings: RedisSettings, free_port: int
) -> None:
    env = subprocess_env()
    env["RECSTREAM_REDIS_URL"] = redis_settings.url
    env["RECSTREAM_REDIS_KEY_PREFIX"] = published.prefix
    server = subprocess.Popen(
        [sys.executable, "-m", "serving", "api", "--port", str(free_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{free_port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                assert time.monotonic() < deadline, "uvicorn did not answer within 30 s"
                time.sleep(0.2)
        assert health.status_code == 200
        answer = httpx.get(f"{base}{RECS.format(2)}", timeout=5)
        assert answer.json()["source"] == "fold-in"
        assert answer.json()["movies"][0]["predicted_rating"] == 4.26
    finally:
        server.terminate()
        server.wait(10)
