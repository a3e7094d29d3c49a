"""Serving: requests/s and latency of the recommendations endpoint, beside raw Redis GETs.

Redis gets an ML-1M-sized publication written by the streaming side's code (6,040 user
lists of K = 100, the popular list, a 3,706-movie catalog). ``python -m serving api``
runs under uvicorn on loopback; a load generator in this process (asyncio, keep-alive
HTTP/1.1 over raw sockets, so that it costs little CPU) asks for
``/users/{id}/recommendations?n=10`` with a realistic id mix: 90 % known users drawn
with a popularity skew, 5 % unknown users (popular fallback), 5 % with a genre filter.

Measured side by side in one run:
1. latency p50/p99 at a fixed 1,000 requests/s (open loop: requests leave on schedule,
   whether or not earlier ones came back, so queueing shows in the figures); then of
   ``/movies/{id}/similar?n=10`` at 500 requests/s (the version's nearest movies,
   written by the job's own code from rank-20 factors of the 3,706 movies), of
   ``/users/{id}/recommendations?n=10&explain=true`` at 500 requests/s (every list
   carries its first 10 movies' explanations, as the job publishes them; beside the
   same requests without ``explain``), and of
   ``POST /recommendations`` for visitors giving 50 rated movies, at 100 requests/s
   (folded in against the version's factor table on the request path);
2. peak requests/s with ``--connections`` concurrent keep-alive clients (closed loop);
3. raw Redis GET throughput: ``redis-benchmark`` (C, 50 clients, pipelining off) and a
   Python asyncio loop with the same number of connections as step 2.

    .venv/bin/python benchmarks/bench_serving.py [--workers 1,2] [--connections 32]
        [--seconds 10]

Everything shares the machine's two cores: the load generator takes one of them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import redis.asyncio
from harness import drop_prefix, local_services, percentile, wait_for

from recstream_infra.local_service import free_tcp_port
from serving.connection import open_redis
from serving.layout import ModelMeta, RedisLayout, encode_list
from serving.settings import RedisSettings
from streaming.model.topn import ItemIndex
from streaming.publish.writes import (
    publish_catalog,
    switch_current,
    write_factors,
    write_similar,
    write_version,
)

USERS, MOVIES, K = 6040, 3706, 100
EXPLAINED = 10  # listed movies explained per list (RECSTREAM_MODEL_EXPLAIN_K)
GENRES = ["Action", "Comedy", "Drama", "Thriller", "Romance", "Sci-Fi", "Children's", "Crime"]


def publish(settings: RedisSettings) -> None:
    """An ML-1M-sized version: K-long lists for every user, popular list, catalog."""
    client = open_redis(settings)
    layout = RedisLayout(settings.key_prefix)
    rng = random.Random(1)  # noqa: S311 - synthetic data
    now = time.time()

    def ranked() -> bytes:
        movies = rng.sample(range(1, MOVIES + 1), K + EXPLAINED)
        items = [(movie, 5.0 - i / K) for i, movie in enumerate(movies[:K])]
        # as the job explains them: the first EXPLAINED, by movies off the list (rated)
        return encode_list(items, now, "model", because=movies[K:])

    lists = ((user, ranked()) for user in range(1, USERS + 1))
    popular = encode_list([(m, float(K - m)) for m in range(1, K + 1)], now, "popular")
    fold_in = {"rank": 20, "reg_param": 0.1, "implicit_prefs": True, "alpha": 1.0}
    meta = ModelMeta(version=1, trained_at=now, hyperparameters=fold_in)
    write_version(client, layout, 1, lists, popular, meta)
    publish_catalog(
        client, layout,
        [(m, f"Movie {m} (1999)", rng.sample(GENRES, 2)) for m in range(1, MOVIES + 1)],
    )  # fmt: skip
    factors = [[rng.gauss(0.0, 1.0) for _ in range(20)] for _ in range(MOVIES)]
    items = ItemIndex(range(1, MOVIES + 1), factors)
    write_similar(client, layout, 1, items, k=20)
    write_factors(client, layout, 1, items)
    switch_current(client, layout, 1)
    client.close()


def paths(count: int) -> list[bytes]:
    """Request lines of the id mix, drawn once so both runs ask the same things."""
    rng = random.Random(2)  # noqa: S311 - synthetic traffic
    weights = [1 / (rank**0.8) for rank in range(1, USERS + 1)]
    known = rng.choices(range(1, USERS + 1), weights=weights, k=count)
    lines = []
    for user in known:
        roll = rng.random()
        if roll < 0.05:
            path = f"/users/{USERS + rng.randint(1, 10**6)}/recommendations?n=10"
        elif roll < 0.10:
            path = f"/users/{user}/recommendations?n=10&genre={rng.choice(GENRES)}"
        else:
            path = f"/users/{user}/recommendations?n=10"
        lines.append(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    return lines


def explain_paths(count: int, explain: bool = True) -> list[bytes]:
    """Request lines of ``/users/{id}/recommendations?n=10&explain=true`` (known users;
    with ``explain`` false, the same requests without it)."""
    rng = random.Random(5)  # noqa: S311 - synthetic traffic
    weights = [1 / (rank**0.8) for rank in range(1, USERS + 1)]
    users = rng.choices(range(1, USERS + 1), weights=weights, k=count)
    asked = "&explain=true" if explain else ""
    return [
        f"GET /users/{user}/recommendations?n=10{asked} HTTP/1.1\r\nHost: bench\r\n\r\n"
        .encode()
        for user in users
    ]  # fmt: skip


def similar_paths(count: int) -> list[bytes]:
    """Request lines of ``/movies/{id}/similar``, movies drawn with a popularity skew."""
    rng = random.Random(3)  # noqa: S311 - synthetic traffic
    weights = [1 / (rank**0.8) for rank in range(1, MOVIES + 1)]
    movies = rng.choices(range(1, MOVIES + 1), weights=weights, k=count)
    return [
        f"GET /movies/{movie}/similar?n=10 HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
        for movie in movies
    ]


def visitor_requests(count: int, rated: int = 50) -> list[bytes]:
    """``POST /recommendations`` requests, each with ``rated`` movies and their stars."""
    rng = random.Random(4)  # noqa: S311 - synthetic traffic
    lines = []
    for _ in range(count):
        movies = rng.sample(range(1, MOVIES + 1), rated)
        body = json.dumps({"movies": [{"movie_id": m, "rating": rng.randint(1, 5)}
                                      for m in movies], "n": 10}).encode()  # fmt: skip
        head = (f"POST /recommendations HTTP/1.1\r\nHost: bench\r\nContent-Type: "
                f"application/json\r\nContent-Length: {len(body)}\r\n\r\n")  # fmt: skip
        lines.append(head.encode() + body)
    return lines


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def closed_loop(
    port: int, lines: list[bytes], connections: int, seconds: float
) -> tuple[float, dict[int, int]]:
    """Each connection sends its next request when the last answer arrived: (req/s, statuses)."""
    statuses: dict[int, int] = {}
    stop = time.perf_counter() + seconds
    done = 0

    async def worker(offset: int) -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        index = offset
        while time.perf_counter() < stop:
            status = await _exchange(reader, writer, lines[index % len(lines)])
            statuses[status] = statuses.get(status, 0) + 1
            done += 1
            index += connections
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(connections)))
    return done / (time.perf_counter() - began), statuses


async def open_loop(
    port: int, lines: list[bytes], rate: float, seconds: float, connections: int
) -> tuple[list[float], dict[int, int], float]:
    """Requests leave on a fixed schedule over a pool of connections; latency of each
    from its scheduled time (so waiting for a free connection counts): (ms, statuses, lateness)."""
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    total = int(rate * seconds)
    began = time.perf_counter()

    async def one(index: int, due: float) -> None:
        reader, writer = await pool.get()
        status = await _exchange(reader, writer, lines[index % len(lines)])
        latencies.append((time.perf_counter() - due) * 1000)
        statuses[status] = statuses.get(status, 0) + 1
        pool.put_nowait((reader, writer))

    tasks = []
    for index in range(total):
        due = began + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, due)))
    await asyncio.gather(*tasks)
    achieved = total / (time.perf_counter() - began)
    while not pool.empty():
        pool.get_nowait()[1].close()
    return latencies, statuses, achieved


async def redis_loop(settings: RedisSettings, connections: int, seconds: float) -> float:
    """GETs of one user-list-sized value from ``connections`` asyncio clients: GETs/s."""
    client = redis.asyncio.Redis.from_url(settings.url, max_connections=connections)
    key = f"{RedisLayout(settings.key_prefix).tag}:bench-get"
    await client.set(key, b"x" * 2000)
    stop = time.perf_counter() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await client.get(key)
            done += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    rate = done / (time.perf_counter() - began)
    await client.aclose()
    return rate


def redis_benchmark(settings: RedisSettings, requests: int = 200_000) -> float | None:
    """``redis-benchmark -t get`` (50 clients, 2 kB values): GETs/s, or None if absent."""
    tool = shutil.which("redis-benchmark")
    if tool is None:
        return None
    done = subprocess.run(  # noqa: S603 - a fixed local tool
        [tool, "-h", settings.host, "-p", str(settings.port), "-t", "get", "-n", str(requests),
         "-c", "50", "-d", "2000", "-q", "--csv"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    last = [line for line in done.stdout.splitlines() if line.startswith('"GET"')][-1]
    return float(last.split(",")[1].strip('"'))


@contextmanager
def quiet_collector() -> Iterator[None]:
    """This process's garbage collector held off: its full passes over the request lines
    and the finished tasks took 60-130 ms, and a load generator that stops for that long
    adds it to the latency of every request that was due meanwhile."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def measure(settings: RedisSettings, workers: int, args: argparse.Namespace) -> float:
    """Latency at 1,000 req/s, then peak req/s, against ``workers`` uvicorn workers."""
    port = free_tcp_port()
    env = {**os.environ, "RECSTREAM_REDIS_URL": settings.url,
           "RECSTREAM_REDIS_KEY_PREFIX": settings.key_prefix}  # fmt: skip
    server = subprocess.Popen(  # noqa: S603 - our own module
        [sys.executable, "-m", "serving", "api", "--port", str(port), "--workers", str(workers)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for("the API", up, 60)
        lines = paths(200_000)
        asyncio.run(closed_loop(port, lines, args.connections, 2))  # warm-up
        at_rate = [
            (lines, 1000, ""),
            (similar_paths(50_000), 500, "similar movies "),
            (explain_paths(50_000, explain=False), 500, "the same lists, not explained "),
            (explain_paths(50_000), 500, "explained lists (explain=true) "),
            (visitor_requests(2_000), 100, "visitors' lists (50 rated movies) "),
        ]
        for requests, rate, what in at_rate:
            with quiet_collector():
                latencies, statuses, achieved = asyncio.run(
                    open_loop(port, requests, rate, args.seconds, args.connections)
                )
            print(
                f"{workers} worker(s): {what}at {rate:,} req/s for {args.seconds:.0f} s "
                f"(reached {achieved:,.0f}/s): p50 {percentile(latencies, 0.5):.2f} ms, "
                f"p99 {percentile(latencies, 0.99):.2f} ms, max {max(latencies):.1f} ms; "
                f"statuses {statuses}"
            )
        peak, statuses = asyncio.run(closed_loop(port, lines, args.connections, args.seconds))
        print(f"{workers} worker(s): peak {peak:,.0f} req/s with {args.connections} "
              f"connections; statuses {statuses}")  # fmt: skip
        return peak
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="uvicorn worker counts to try")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    with local_services():
        settings = RedisSettings(key_prefix=f"bench-serving-{uuid.uuid4().hex[:6]}")
        try:
            publish(settings)
            peaks = {int(w): measure(settings, int(w), args) for w in args.workers.split(",")}
            python_get = asyncio.run(redis_loop(settings, args.connections, args.seconds))
            c_get = redis_benchmark(settings)
        finally:
            drop_prefix(settings)
    print(f"raw Redis GET (2 kB values), Python asyncio loop, {args.connections} connections: "
          f"{python_get:,.0f}/s")  # fmt: skip
    if c_get is not None:
        print(f"raw Redis GET (2 kB values), redis-benchmark, 50 clients: {c_get:,.0f}/s")
    for workers, peak in peaks.items():
        against = f"{peak / python_get:.0%} of the Python loop"
        if c_get is not None:
            against += f", {peak / c_get:.1%} of redis-benchmark"
        print(f"API peak with {workers} worker(s) = {against}")


if __name__ == "__main__":
    main()
