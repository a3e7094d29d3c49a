"""``make demo`` (``python -m recstream_infra.demo``): the whole system on this machine, watched.

It loads the dataset first (so a missing dataset fails before anything starts), starts
whatever local service is not running yet, then three processes with their logs under
the demo's state folder: the streaming job (``python -m streaming run``), the HTTP API
(``python -m serving api``) and the producer (``python -m producer replay --rate``).
Every few seconds it prints what the system is doing, from the same places an operator
would look: the topic's end offsets (events replayed), the job's commit records (lag,
live hit rate, freshness), Redis through the API (model version, evaluation, the top 5
of a few sample users). At the end, on Ctrl-C or on a SIGTERM, it stops what it
started, in order, and writes an HTML report with plots from the commit records.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import suppress
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from producer.dataset import Dataset
from producer.errors import ProducerError
from producer.settings import KafkaSettings, ProducerSettings
from recstream_base.cli import command_app, stop_on_sigterm
from recstream_base.net import port_open
from recstream_infra.demo_report import DemoRun, Sample, Tick, write_report
from recstream_infra.local_service import ServiceStartError, free_tcp_port
from recstream_infra.services import LocalServices
from serving.connection import open_redis
from serving.layout import RedisLayout
from serving.settings import RedisSettings
from streaming.ingest.store import BatchCommit, read_commits
from streaming.publish.writes import delete_prefix

__all__ = ["app"]

app = command_app("Run recstream end to end on this machine and watch it work.")

SAMPLE_USERS = 3
_TOP = 5
_STARS_WAIT_S = 600.0  # how long the end of the demo waits for the last rating model


@app.command()
def run(
    dataset: Annotated[
        str,
        typer.Option(
            help="auto (MovieLens-1M through tensorflow-datasets, else the synthetic feed), "
            "tfds, tfds:<name>, a GroupLens folder or zip, or synthetic"
        ),
    ] = "auto",
    seconds: Annotated[
        float, typer.Option(min=0, help="Stop replaying after this long (0 = replay it all)")
    ] = 300.0,
    rate: Annotated[float, typer.Option(min=1, help="Ratings replayed per second")] = 400.0,
    interval: Annotated[float, typer.Option(min=1, help="Seconds between status prints")] = 5.0,
    api_port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the HTTP API")] = 8000,
    state: Annotated[Path, typer.Option(help="Demo state and logs")] = Path(".state/demo"),
    report: Annotated[Path, typer.Option(help="Where the HTML report goes")] = Path("demo-report"),
) -> None:
    """Replay a dataset through Kafka, the streaming job and Redis, print, report, stop."""
    stop_on_sigterm()  # a `kill` stops what it started too, as Ctrl-C does
    dataset, data = _load(dataset)
    ratings = data.ratings.in_replay_order()
    limit = len(ratings) if seconds == 0 else min(len(ratings), int(rate * seconds))
    samples = _pick_samples(ratings.user_ids[:limit])
    titles = {movie.movie_id: movie.title for movie in data.movies}
    print(f"demo: {data.label}: replaying {limit:,} of {len(ratings):,} ratings at {rate:g}/s "
          f"(about {limit / rate / 60:.1f} min); sample users "
          f"{', '.join(str(s.user_id) for s in samples)}")  # fmt: skip
    demo = _prepare(state, api_port)
    demo.dataset = data.label
    services = LocalServices()
    started: list[str] = []
    processes: dict[str, subprocess.Popen[bytes]] = {}
    ticks: list[Tick] = []
    began = demo.started_at = time.time()
    try:
        for service in services.services:
            outcome = service.start()
            print(f"demo: {service.name} {outcome} at {service.address}")
            if outcome == "started":  # not one already running, nor an external one
                started.append(service.name)
        _clear_prefix(demo.prefix)
        processes["job"] = _spawn(demo, "job", [sys.executable, "-m", "streaming", "run"])
        processes["api"] = _spawn(demo, "api", [sys.executable, "-m", "serving", "api",
                                                "--port", str(demo.api_port)])  # fmt: skip
        processes["producer"] = _spawn(demo, "producer", [
            sys.executable, "-m", "producer", "replay", "--source", dataset,
            "--topic", demo.topic, "--rate", f"{rate:g}", "--limit", str(limit), "--no-progress",
        ])  # fmt: skip
        print(f"demo: streaming job, API and producer started; logs in {demo.state / 'logs'}; "
              "Ctrl-C stops everything\n"
              f"demo: open the live console at http://127.0.0.1:{demo.api_port}/console"
              f"#token={demo.env['RECSTREAM_API_INGEST_TOKEN']} (the token lets it rate; "
              "API docs at /docs)")  # fmt: skip
        _watch(demo, processes, samples, titles, ticks, began, limit, interval)
    except KeyboardInterrupt:
        print("\ndemo: interrupted; stopping what it started")
    except (ServiceStartError, ProducerError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        raise typer.Exit(1) from exc
    finally:
        _stop(processes)
        for name in started:
            stopped = {s.name: s for s in services.services}[name].stop()
            print(f"demo: {name} {'stopped' if stopped else 'was not running'}")
        target = write_report(report, demo, ticks, samples)
        print(f"demo: report written to {target}")


def _load(spec: str) -> tuple[str, Dataset]:
    """The source the producer will replay (``auto`` resolved) and its dataset."""
    from producer.sources import AUTO, load_source

    fell_back: list[str] = []
    try:
        data = load_source(spec, ProducerSettings(), fell_back=fell_back.append)
    except ProducerError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        if spec.startswith("tfds"):
            print("demo: without internet, run it on local files instead:\n"
                  "  make demo DATASET=<path to a GroupLens folder, e.g. ../shared/data/ml-100k>\n"
                  "  make demo DATASET=synthetic", file=sys.stderr)  # fmt: skip
        raise typer.Exit(2) from exc
    for note in fell_back:
        print(f"demo: {note}")
    if spec == AUTO:
        spec = "synthetic" if fell_back else "tfds"
    return spec, data


def _pick_samples(users: np.ndarray) -> list[Sample]:
    """Users who keep rating through the replay: most ratings in its second half."""
    if not len(users):
        return []
    later = users[len(users) // 2 :]
    ids, counts = np.unique(later, return_counts=True)
    chosen = ids[np.lexsort((ids, -counts))][:SAMPLE_USERS]
    return [Sample(int(u), np.flatnonzero(users == u)) for u in chosen.tolist()]


def _prepare(state: Path, api_port: int) -> DemoRun:
    """A clean state folder, a fresh topic, and the environment every process gets."""
    if state.exists():
        shutil.rmtree(state)
    (state / "logs").mkdir(parents=True)
    port = free_tcp_port() if port_open("127.0.0.1", api_port) else api_port
    if port != api_port:
        print(f"demo: port {api_port} is taken; the API listens on {port}")
    demo = DemoRun(state.resolve(), f"recstream-demo-{int(time.time())}", "recstream-demo", port)
    demo.env = {
        **os.environ,
        "RECSTREAM_KAFKA_TOPIC": demo.topic,
        "RECSTREAM_REDIS_KEY_PREFIX": demo.prefix,
        "RECSTREAM_STREAM_STATE_DIR": str(demo.state / "streaming"),
        "RECSTREAM_SPARK_MASTER": os.environ.get("RECSTREAM_SPARK_MASTER", "local[2]"),
        "RECSTREAM_SPARK_SHUFFLE_PARTITIONS": "2",
        "RECSTREAM_SPARK_CHECKPOINT_DIR": str(demo.state / "spark-checkpoints"),
        "RECSTREAM_SPARK_UI_ENABLED": "false",
        "RECSTREAM_SPARK_CONSOLE_PROGRESS": "false",
        # A model within seconds, then a retrain every 30 s, so versions visibly move.
        "RECSTREAM_MODEL_MIN_RATINGS": os.environ.get("RECSTREAM_MODEL_MIN_RATINGS", "1000"),
        "RECSTREAM_MODEL_RETRAIN_EVERY_S": os.environ.get("RECSTREAM_MODEL_RETRAIN_EVERY_S", "30"),
        # The console rates through POST /ratings: a token of this run's own, unless given.
        "RECSTREAM_API_INGEST_TOKEN": os.environ.get("RECSTREAM_API_INGEST_TOKEN")
        or secrets.token_hex(16),
        "PYTHONUNBUFFERED": "1",
    }
    return demo


def _clear_prefix(prefix: str) -> None:
    """Drop what an earlier demo left under the demo's key prefix."""
    client = open_redis(RedisSettings(key_prefix=prefix))
    try:
        delete_prefix(client, RedisLayout(prefix))
    finally:
        client.close()


def _spawn(demo: DemoRun, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    with demo.log(name).open("ab") as log:
        return subprocess.Popen(  # noqa: S603 - our own argv, no shell
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=demo.env,
            start_new_session=True,  # Ctrl-C reaches the demo only; it stops them in order
        )


def _watch(
    demo: DemoRun,
    processes: dict[str, subprocess.Popen[bytes]],
    samples: list[Sample],
    titles: dict[int, str],
    ticks: list[Tick],
    began: float,
    limit: int,
    interval: float,
) -> None:
    """Print the status every ``interval`` s until the replay is in and processed."""
    from streaming.ingest.topics import TopicWatcher

    watcher = TopicWatcher(KafkaSettings(topic=demo.topic))
    stars_since: float | None = None  # when the demo began to wait for the stars
    try:
        while True:
            time.sleep(interval)
            for name in ("job", "api"):
                code = processes[name].poll()
                if code is not None:
                    msg = f"the {name} process exited with code {code}; see {demo.log(name)}"
                    raise ServiceStartError(msg)
            ends = watcher.end_offsets() or {}
            replayed = sum(ends.values())
            commits = read_commits(demo.commits_dir)
            lag = _lag(ends, commits)
            model = _get(demo, "/model")
            version = model.get("version") if model else None
            ticks.append(Tick(round(time.time() - began, 1), replayed, lag, version))
            print(_status_line(ticks[-1], model, commits))
            for sample in samples:
                print(_sample_line(demo, sample, replayed, titles, ticks[-1].at_s))
            producer_done = processes["producer"].poll() is not None
            code = processes["producer"].returncode
            if producer_done and code != 0:
                msg = f"the producer exited with code {code}; see {demo.log('producer')}"
                raise ServiceStartError(msg)
            if producer_done and replayed >= limit and lag == 0:
                if _stars_pending(model):
                    if stars_since is None:
                        stars_since = time.monotonic()
                        print(f"demo: all {replayed:,} ratings processed; waiting for the "
                              f"rating model of v{version} (its predicted stars)")  # fmt: skip
                    if time.monotonic() - stars_since < _STARS_WAIT_S:
                        continue
                    print(f"demo: the rating model of v{version} was not ready within "
                          f"{_STARS_WAIT_S:.0f} s; see {demo.log('job')}")  # fmt: skip
                print(f"demo: all {replayed:,} ratings replayed and processed")
                return
    finally:
        watcher.close()


def _stars_pending(model: dict[str, Any] | None) -> bool:
    """Whether the current version's own rating model is still being fitted.

    Meanwhile its lists carry an earlier version's stars, or none.
    """
    if not model or not model.get("hyperparameters", {}).get("rating_samples"):
        return False
    return bool(model.get("stars_from_version") != model.get("version"))


def _lag(ends: dict[int, int], commits: list[BatchCommit]) -> int | None:
    if not ends:
        return None
    done: dict[int, int] = {}
    for record in commits:
        done.update({int(p): o for p, o in record.offsets.items()})
    return sum(max(0, end - done.get(p, 0)) for p, end in ends.items())


def _status_line(tick: Tick, model: dict[str, Any] | None, commits: list[BatchCommit]) -> str:
    parts = [f"[{tick.at_s:6.0f} s] replayed {tick.replayed:,}",
             f"lag {'?' if tick.lag is None else f'{tick.lag:,}'}"]  # fmt: skip
    if model:
        evaluation = model.get("evaluation") or {}
        figures = evaluation.get("model") or {}
        popular = evaluation.get("popular") or {}
        quality = ""
        if figures:
            quality = (f", held-out P@10 {figures['precision']:.3f} "
                       f"(popular {popular.get('precision', 0):.3f})")  # fmt: skip
        if evaluation.get("rmse") is not None:
            quality += f", stars RMSE {evaluation['rmse']:.3f}"
        parts.append(f"model v{model['version']} ({model['age_s']:.0f} s old{quality})")
    else:
        parts.append("no model yet")
    recent = commits[-30:]
    checked = sum(c.checked for c in recent)
    if checked:
        hits = sum(c.hits_at_10 for c in recent)
        popular = sum(c.popular_hits_at_10 for c in recent)
        parts.append(f"live hit@10 {hits / checked:.3f} (popular list {popular / checked:.3f}) "
                     f"over the last {checked:,} ratings")  # fmt: skip
    return " · ".join(parts)


def _sample_line(
    demo: DemoRun, sample: Sample, replayed: int, titles: dict[int, str], at_s: float
) -> str:
    rated = int(np.searchsorted(sample.positions, replayed))
    found = _get(demo, f"/users/{sample.user_id}/recommendations?n={_TOP}")
    if not found:
        return f"    user {sample.user_id} (rated {rated}): no list yet"
    movies = found.get("movies", [])
    listed = [m.get("title") or titles.get(m["movie_id"], str(m["movie_id"])) for m in movies]
    shown = [
        _short(title)
        + ("" if m.get("predicted_rating") is None else f" {m['predicted_rating']:.1f}★")
        for title, m in zip(listed, movies, strict=True)
    ]
    marker = ""
    if listed != sample.last:
        if sample.last:
            marker = "   ← changed"
        sample.changes.append((at_s, rated, listed))
        sample.last = listed
    return (f"    user {sample.user_id} (rated {rated}, {found.get('source')}): "
            f"{'; '.join(shown)}{marker}")  # fmt: skip


def _short(title: str, width: int = 28) -> str:
    return title if len(title) <= width else title[: width - 1] + "…"


def _get(demo: DemoRun, path: str) -> dict[str, Any] | None:
    """GET a JSON document from the demo's API; None while it has no answer for it."""
    url = f"http://127.0.0.1:{demo.api_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            document: dict[str, Any] = json.loads(response.read())
            return document
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _stop(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    """Producer first (it flushes), then the job (between two batches), then the API."""
    for name, signum, grace in (
        ("producer", signal.SIGINT, 30.0),
        ("job", signal.SIGINT, 90.0),
        ("api", signal.SIGTERM, 15.0),
    ):
        process = processes.get(name)
        if process is None or process.poll() is not None:
            continue
        with suppress(ProcessLookupError):
            process.send_signal(signum)
        try:
            process.wait(timeout=grace)
            print(f"demo: {name} stopped")
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            print(f"demo: {name} did not stop within {grace:.0f} s and was killed")


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
