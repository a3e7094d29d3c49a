"""``python -m serving`` against real Redis: tables, JSON, exit codes and messages."""

from __future__ import annotations

import json

import pytest
import redis
from typer.testing import CliRunner

from serving.cli import app
from serving.layout import RedisLayout
from serving.settings import RedisSettings
from tests.serving_data import publish, record_batches

pytestmark = pytest.mark.integration


@pytest.fixture
def runner(redis_settings: RedisSettings, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("RECSTREAM_REDIS_URL", redis_settings.url)
    monkeypatch.setenv("RECSTREAM_REDIS_KEY_PREFIX", redis_settings.key_prefix)
    return CliRunner()


@pytest.fixture
def published(redis_client: redis.Redis, redis_settings: RedisSettings) -> None:
    publish(redis_client, RedisLayout(redis_settings.key_prefix))


@pytest.mark.usefixtures("published")
def test_recs_prints_a_table_and_json(runner: CliRunner) -> None:
    table = runner.invoke(app, ["recs", "1", "-n", "3"])
    assert table.exit_code == 0, table.output
    assert "Toy Story (1995)" in table.output
    assert "(not in the catalog)" in table.output
    assert "source model" in table.output
    starred = runner.invoke(app, ["recs", "2"])
    assert starred.exit_code == 0, starred.output
    assert "4.3" in starred.output  # the predicted stars column
    as_json = runner.invoke(app, ["recs", "1", "-n", "2", "--json", "--genre", "Crime"])
    body = json.loads(as_json.output)
    assert [m["movie_id"] for m in body["movies"]] == [11, 13]
    assert body["genre"] == "Crime"
    assert "because you rated" not in table.output


@pytest.mark.usefixtures("published")
def test_recs_explain_adds_the_movie_behind_each(runner: CliRunner) -> None:
    table = runner.invoke(app, ["recs", "1", "-n", "3", "--explain"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "because you rated" in table.output
    assert "Fargo (1996)" in table.output  # behind movie 10
    assert "movie 30 (not in the catalog)" in table.output  # behind movie 14


@pytest.mark.usefixtures("published")
def test_similar_prints_a_table_and_json(runner: CliRunner) -> None:
    table = runner.invoke(app, ["similar", "10", "-n", "3"])
    assert table.exit_code == 0, table.output
    assert "movies like 10 (Toy Story (1995))" in table.output
    assert "Clueless (1995)" in table.output
    assert "0.995" in table.output
    body = json.loads(runner.invoke(app, ["similar", "10", "-n", "2", "--json"]).output)
    assert [m["movie_id"] for m in body["movies"]] == [14, 12]
    unknown = runner.invoke(app, ["similar", "999"])
    assert unknown.exit_code == 1
    assert "movie 999 has no similar movies in model version 3" in unknown.output


def test_pipeline_prints_the_newest_batches(
    runner: CliRunner, redis_client: redis.Redis, redis_settings: RedisSettings
) -> None:
    empty = runner.invoke(app, ["pipeline"])
    assert (empty.exit_code, empty.output.strip()) == (
        0, "no micro-batch reported yet: is the streaming job running?",
    )  # fmt: skip
    record_batches(redis_client, RedisLayout(redis_settings.key_prefix))
    table = runner.invoke(app, ["pipeline", "-b", "2"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "2 batches over 1 s: 290 ratings/s stored, live hit@10 0.0644" in table.output
    assert "switched to v4" in table.output
    body = json.loads(runner.invoke(app, ["pipeline", "--json"]).output)
    assert [b["batch_id"] for b in body["batches"]] == [9, 8, 7]


@pytest.mark.usefixtures("published")
def test_model_and_health(runner: CliRunner) -> None:
    model = runner.invoke(app, ["model"])
    assert model.exit_code == 0, model.output
    assert "model v3" in model.output
    assert "rmse: 0.9300" in model.output
    assert "popular: ndcg 0.0700, precision 0.0500" in model.output
    assert json.loads(runner.invoke(app, ["model", "--json"]).output)["ratings"] == 1234
    health = runner.invoke(app, ["health"])
    assert (health.exit_code, health.output.strip()) == (0, "ok: model v3")


def test_without_a_model_the_cli_says_so(runner: CliRunner) -> None:
    recs = runner.invoke(app, ["recs", "1"])
    assert recs.exit_code == 1
    assert "no model has been published yet" in recs.output
    assert runner.invoke(app, ["health"]).exit_code == 1


@pytest.mark.parametrize(
    "args",
    [["recs", "0"], ["recs", "abc"], ["recs", "1", "-n", "101"], ["similar", "0"],
     ["similar", "5", "-n", "0"]],
)  # fmt: skip
def test_bad_input_exits_2(runner: CliRunner, args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "Invalid value" in result.output


def test_redis_down_is_a_clear_error(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, free_port: int
) -> None:
    monkeypatch.setenv("RECSTREAM_REDIS_URL", f"redis://127.0.0.1:{free_port}/0")
    result = runner.invoke(app, ["recs", "1"])
    assert result.exit_code == 1
    assert f"Redis at redis://127.0.0.1:{free_port}/0 did not answer" in result.output
