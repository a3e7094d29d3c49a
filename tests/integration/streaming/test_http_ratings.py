"""Ratings posted over HTTP go through the real job: stored once, and the user's list moves."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from pyspark.sql import SparkSession

from recstream_infra.processes import wait_until
from serving.api import create_app
from serving.settings import ApiSettings, RedisSettings
from streaming.ingest.validation import DUPLICATE_REASON
from streaming.job import StreamingJob, stop_between_batches
from streaming.settings import StreamSettings
from tests.conftest import Services, model_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "tok-4f1c9a77-http-ratings"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STAMP = 880_000_000


def _first_ratings() -> list[dict[str, int]]:
    """40 users × 30 movies, two in three rated: enough for a first model."""
    return [
        {"user_id": user, "movie_id": movie, "rating": 1 + (user + movie) % 5,
         "timestamp": STAMP + user * 100 + movie}
        for user in range(1, 41)
        for movie in range(1, 31)
        if (user * 7 + movie) % 3
    ]  # fmt: skip


def test_a_rating_posted_over_http_is_stored_once_and_moves_the_users_list(
    spark: SparkSession,
    services: Services,
    kafka_topic: str,
    redis_settings: RedisSettings,
    tmp_path: Path,
) -> None:
    kafka = services.kafka.model_copy(update={"topic": kafka_topic})
    stream = StreamSettings(state_dir=tmp_path / "job", trigger_interval_s=0.5)
    model = model_settings(min_ratings=200, max_iter=3, rank=4, retrain_every_ratings=1_000_000)
    api = ApiSettings(ingest_token=SecretStr(TOKEN), ingest_source="ml-100k")
    job = StreamingJob(spark, kafka, redis_settings, stream, model)
    query = job.start()
    try:
        with TestClient(create_app(redis_settings, api, kafka)) as http:
            first = _first_ratings()
            for begin in range(0, len(first), 100):
                sent = http.post("/ratings", json=first[begin : begin + 100], headers=AUTH)
                assert sent.status_code == 202, sent.text

            def listed(user: int) -> list[int]:
                answer = http.get(f"/users/{user}/recommendations", params={"n": 10})
                if answer.status_code != 200 or answer.json()["source"] == "popular":
                    return []
                return [movie["movie_id"] for movie in answer.json()["movies"]]

            assert wait_until(lambda: bool(listed(3)), 120, interval_s=0.2), "no list for user 3"
            top = listed(3)[0]
            rating = {"user_id": 3, "movie_id": top, "rating": 5, "timestamp": STAMP + 99_999}
            began = time.monotonic()
            answer = http.post("/ratings", json=rating, headers=AUTH)
            assert answer.status_code == 202
            gone = wait_until(lambda: top not in listed(3), 60, interval_s=0.1)
            seconds = time.monotonic() - began
            assert gone, f"movie {top} still in user 3's list a minute after it was rated"
            print(f"HTTP rating to a changed list: {seconds:.2f} s")

            again = http.post("/ratings", json=rating, headers=AUTH)  # a client's resend
            assert again.json()["event_ids"] == answer.json()["event_ids"]
            total = len(first) + 2
            assert wait_until(
                lambda: sum(r.valid + r.invalid for r in job.reports) >= total, 60, interval_s=0.2
            ), "the job did not read the resend"
    finally:
        stop_between_batches(query)
        job.close()

    rows = job.store.stored_rows()
    assert rows.count() == len(first) + 1  # the resend is not stored twice
    assert rows.where(f"user_id = 3 AND movie_id = {top}").count() == 1
    assert sum(r.invalid for r in job.reports) == 1
    assert any(c.invalid_reasons == {DUPLICATE_REASON: 1} for c in job.store.commits())
