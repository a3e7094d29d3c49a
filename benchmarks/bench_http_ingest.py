"""POST /ratings throughput: ratings accepted over HTTP beside the producer's raw loop.

The API runs under uvicorn on loopback (``python -m serving api``, one worker, an ingest
token); a load generator in this process keeps ``--clients`` keep-alive connections
busy, each posting bodies of ``--batch`` ratings until ``--events`` were accepted (202).
Beside it, in the same run against the same broker, the raw loop: the same events,
serialised beforehand, sent with the replay's producer settings and flushed. Both go
to fresh topics; the topic's end offsets are read back to check that every accepted
rating arrived.

    .venv/bin/python benchmarks/bench_http_ingest.py [--events 100000] [--batch 100]
        [--clients 4] [--workers 1]

Needs the local services (started here if they are not running). Target (issue 20):
at least 2,000 ratings/s accepted in batches of 100 on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import time
import uuid

import httpx
from harness import PARTITIONS, local_services, wait_for
from kafka import KafkaConsumer, TopicPartition

from producer.broker import client_options, create_topic, delete_topic
from producer.events import RatingEvent
from producer.replay import open_producer
from producer.settings import KafkaSettings, ProducerSettings
from recstream_infra.local_service import free_tcp_port


def _ratings(events: int) -> list[RatingEvent]:
    """``events`` distinct ratings (users 1.., movies cycling), all in the past."""
    stamp = int(time.time()) - 10 * 86_400
    return [
        RatingEvent("ml-1m", 1 + n // 50, 1 + n % 50, float(1 + n % 5), stamp + n)
        for n in range(events)
    ]


def _bodies(ratings: list[RatingEvent], batch: int) -> list[list[dict[str, float]]]:
    """The ratings as ``POST /ratings`` bodies of ``batch`` each."""
    posted = [
        {"user_id": e.user_id, "movie_id": e.movie_id, "rating": e.rating, "timestamp": e.timestamp}
        for e in ratings
    ]
    return [posted[first : first + batch] for first in range(0, len(posted), batch)]


def _end_total(kafka: KafkaSettings, topic: str) -> int:
    consumer = KafkaConsumer(**client_options(kafka))
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


async def _post_all(
    base: str, token: str, bodies: list[list[dict[str, float]]], clients: int
) -> int:
    queue: asyncio.Queue[list[dict[str, float]]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    accepted = 0
    headers = {"Authorization": f"Bearer {token}"}

    async def client() -> None:
        nonlocal accepted
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
            while not queue.empty():
                body = queue.get_nowait()
                answer = await http.post("/ratings", json=body)
                if answer.status_code != 202:
                    msg = f"POST /ratings answered {answer.status_code}: {answer.text[:200]}"
                    raise RuntimeError(msg)
                accepted += answer.json()["accepted"]

    await asyncio.gather(*(client() for _ in range(clients)))
    return accepted


def http_path(
    kafka: KafkaSettings, ratings: list[RatingEvent], args: argparse.Namespace
) -> tuple[float, int]:
    """(seconds, ratings in the topic) for posting every body through the API."""
    topic = f"bench-http-{uuid.uuid4().hex[:10]}"
    create_topic(kafka, topic, partitions=PARTITIONS)
    port = free_tcp_port()
    token = secrets.token_hex(16)
    env = {**os.environ, "RECSTREAM_KAFKA_TOPIC": topic, "RECSTREAM_API_INGEST_TOKEN": token,
           "RECSTREAM_API_INGEST_SOURCE": "ml-1m"}  # fmt: skip
    server = subprocess.Popen(  # noqa: S603 - our own module
        [sys.executable, "-m", "serving", "api", "--port", str(port),
         "--workers", str(args.workers)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:

        def answers() -> bool:
            try:
                return httpx.get(f"{base}/openapi.json", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for("the API", answers, 60)
        bodies = _bodies(ratings, args.batch)
        asyncio.run(_post_all(base, token, bodies[:20], args.clients))  # warm-up
        warm = _end_total(kafka, topic)
        began = time.perf_counter()
        accepted = asyncio.run(_post_all(base, token, bodies, args.clients))
        elapsed = time.perf_counter() - began
        arrived = _end_total(kafka, topic) - warm
        if arrived != accepted:
            msg = f"{accepted:,} accepted but {arrived:,} in the topic"
            raise RuntimeError(msg)
        return elapsed, arrived
    finally:
        server.terminate()
        server.wait(timeout=30)
        delete_topic(kafka, topic)


def raw_loop(kafka: KafkaSettings, ratings: list[RatingEvent]) -> float:
    """Seconds to send the same ratings, serialised beforehand, with a bare loop."""
    messages = [(event.key, event.to_json()) for event in ratings]
    topic = f"bench-raw-{uuid.uuid4().hex[:10]}"
    create_topic(kafka, topic, partitions=PARTITIONS)
    producer = open_producer(kafka, ProducerSettings())
    try:
        began = time.perf_counter()
        for key, value in messages:
            producer.send(topic, key=key, value=value)
        producer.flush()
        return time.perf_counter() - began
    finally:
        producer.close()
        delete_topic(kafka, topic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100, help="ratings per POST body")
    parser.add_argument("--clients", type=int, default=4, help="concurrent connections")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    args = parser.parse_args()
    kafka = KafkaSettings()
    ratings = _ratings(args.events)
    with local_services():
        raw = raw_loop(kafka, ratings)
        seconds, arrived = http_path(kafka, ratings, args)
    print(
        f"{args.events:,} ratings | raw producer loop {args.events / raw:,.0f}/s | "
        f"POST /ratings ({args.batch} a body, {args.clients} clients, {args.workers} worker) "
        f"{arrived / seconds:,.0f}/s, all {arrived:,} in the topic | "
        f"ratio {(args.events / raw) / (arrived / seconds):.1f}"
    )


if __name__ == "__main__":
    main()
