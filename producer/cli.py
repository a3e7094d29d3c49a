"""``python -m producer``: replay MovieLens (or a synthetic feed) into Kafka."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, NoReturn

import typer
from kafka import KafkaProducer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from producer.broker import create_topic
from producer.errors import ProducerError
from producer.pacing import MaxPace, Pacer, RatePace, SpeedPace
from producer.replay import (
    ReplayPlan,
    ReplaySummary,
    catalog_topic,
    last_events,
    open_producer,
    plan_replay,
    prepare_topic,
    publish_catalog,
    run_replay,
)
from producer.settings import KafkaSettings, ProducerSettings
from producer.sources import load_source
from recstream_base.cli import command_app

__all__ = ["app", "main"]

app = command_app("Replay MovieLens ratings into Kafka in timestamp order.")
# soft_wrap: summary lines stay whole in logs, whatever the terminal width.
_err = Console(stderr=True, soft_wrap=True)


@app.callback()
def _root() -> None:
    """Replay MovieLens ratings into Kafka in timestamp order."""


@app.command()
def replay(
    source: Annotated[
        str | None,
        typer.Option(
            help="tfds, tfds:movielens/1m-ratings (the default), tfds:movielens/100k-ratings, "
            "tfds:movielens/latest-small-ratings, a GroupLens folder or zip, or 'synthetic' "
            "[default: RECSTREAM_PRODUCER_SOURCE]"
        ),
    ] = None,
    topic: Annotated[
        str | None,
        typer.Option(help="Ratings topic [default: RECSTREAM_KAFKA_TOPIC, else ratings]"),
    ] = None,
    speed: Annotated[
        float | None, typer.Option(help="Replay at X times the dataset's real time.", min=1e-9)
    ] = None,
    rate: Annotated[
        float | None, typer.Option(help="Replay N events per second.", min=1e-9)
    ] = None,
    max_pace: Annotated[
        bool, typer.Option("--max", help="As fast as the broker takes them (the default pace).")
    ] = False,
    limit: Annotated[
        int | None, typer.Option(help="Replay only the first N events.", min=1)
    ] = None,
    from_timestamp: Annotated[
        int | None, typer.Option(help="Skip events before this epoch second.", min=0)
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue where the topic ends: events already in it are not sent again."
        ),
    ] = True,
    strict: Annotated[
        bool, typer.Option(help="Fail on the first malformed line instead of skipping it.")
    ] = False,
    catalog: Annotated[
        bool, typer.Option(help="Also publish the movie catalog to <topic>.movies.")
    ] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Load, order by timestamp, and send every rating as a JSON event keyed by user id."""
    try:
        settings = ProducerSettings()
        kafka = KafkaSettings()
        if topic is not None:
            kafka = KafkaSettings(**{**kafka.model_dump(), "topic": topic})
    except ValidationError as exc:
        _fail(f"bad settings: {exc}", 2)
    pacer = _pacer(settings, speed=speed, rate=rate, max_pace=max_pace)
    try:
        dataset = load_source(source or settings.source, settings, strict=strict,
                              fell_back=lambda note: _err.print(f"note: {note}"))  # fmt: skip
        _err.print(
            f"source: {dataset.label}: {len(dataset.ratings):,} ratings, "
            f"{len(dataset.movies):,} movies"
        )
        for record in dataset.bad_records[:10]:
            _err.print(f"  skipped {record.describe()}", markup=False)
        if len(dataset.bad_records) > 10:
            _err.print(f"  … and {len(dataset.bad_records) - 10:,} more bad lines")
        partitions = prepare_topic(kafka)
        last = last_events(kafka, kafka.topic, partitions) if resume else {}
        plan = plan_replay(
            dataset, partitions, from_timestamp=from_timestamp, limit=limit, last_in_topic=last
        )
    except ProducerError as exc:
        _fail(str(exc), 1)
    if plan.already_sent:
        _err.print(
            f"resume: {plan.already_sent:,} events already in {kafka.topic}; "
            f"sending the other {plan.to_send:,}"
        )
    producer = open_producer(kafka, settings)
    catalog_sent = 0
    try:
        if catalog and dataset.movies:
            create_topic(kafka, catalog_topic(kafka.topic), configs={"cleanup.policy": "compact"})
            catalog_sent = publish_catalog(producer, catalog_topic(kafka.topic), dataset)
        summary = _run_with_progress(plan, producer, kafka.topic, pacer, show=progress)
        summary.catalog_sent = catalog_sent
    finally:
        producer.close()
    _err.print(summary.describe(), markup=False)
    for sample in summary.error_samples:
        _err.print(f"  send error: {sample}", markup=False)
    if summary.interrupted:
        _err.print("interrupted: run the same command again to resume from here")
        raise typer.Exit(130)
    if summary.errors:
        raise typer.Exit(1)


def _pacer(
    settings: ProducerSettings, *, speed: float | None, rate: float | None, max_pace: bool
) -> Pacer:
    chosen = [
        name
        for name, value in (("--speed", speed), ("--rate", rate), ("--max", max_pace or None))
        if value is not None
    ]
    if len(chosen) > 1:
        _fail(f"choose one pace, got {' and '.join(chosen)}", 2)
    if speed is not None:
        return SpeedPace(speed)
    if rate is not None:
        return RatePace(rate)
    if max_pace or settings.pace == "max":
        return MaxPace()
    return SpeedPace(settings.speed) if settings.pace == "speed" else RatePace(settings.rate)


def _run_with_progress(
    plan: ReplayPlan, producer: KafkaProducer, topic: str, pacer: Pacer, *, show: bool
) -> ReplaySummary:
    if not show:
        return run_replay(plan, producer, topic, pacer)
    columns = (
        TextColumn("[bold]replay"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8} ev/s"),
        TextColumn("dataset {task.fields[date]}"),
        TimeElapsedColumn(),
    )
    began = time.monotonic()
    with Progress(*columns, console=_err, transient=False) as bar:
        task = bar.add_task("replay", total=plan.to_send, rate="-", date="-")

        def update(sent: int, total: int, stamp: int) -> None:
            elapsed = max(time.monotonic() - began, 1e-9)
            date = datetime.fromtimestamp(stamp, tz=UTC).strftime("%Y-%m-%d %H:%M")
            bar.update(task, completed=sent, rate=f"{sent / elapsed:,.0f}", date=date)

        return run_replay(plan, producer, topic, pacer, progress=update)


def _fail(message: str, code: int) -> NoReturn:
    _err.print(f"error: {message}", markup=False)
    raise typer.Exit(code)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="python -m producer")
