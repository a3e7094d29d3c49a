"""``python -m streaming``: run the streaming updater (Kafka → ALS → Redis)."""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from producer.broker import describe_cluster
from producer.errors import BrokerUnavailableError
from producer.settings import KafkaSettings
from recstream_base.cli import command_app, stop_on_sigterm
from serving.connection import ping
from serving.errors import RedisUnavailableError
from serving.settings import RedisSettings
from streaming.errors import StreamingError
from streaming.settings import ModelSettings, SparkSettings, StreamSettings

__all__ = ["app", "main"]

app = command_app("Keep per-user top-N lists in Redis fresh while ratings stream through Kafka.")
_log = logging.getLogger("recstream.streaming")


@app.callback()
def _root() -> None:
    """Keep per-user top-N lists in Redis fresh while ratings stream through Kafka."""


@app.command()
def run(
    topic: Annotated[str | None, typer.Option(help="Ratings topic [RECSTREAM_KAFKA_TOPIC]")] = None,
    master: Annotated[str | None, typer.Option(help="Spark master URL")] = None,
    state_dir: Annotated[str | None, typer.Option(help="Store, models, commits")] = None,
    checkpoint_location: Annotated[str | None, typer.Option(help="Query checkpoint")] = None,
    starting_offsets: Annotated[str | None, typer.Option(help="earliest or latest")] = None,
    max_offsets_per_trigger: Annotated[int | None, typer.Option(min=1)] = None,
    trigger_interval_s: Annotated[float | None, typer.Option(help="Seconds")] = None,
    fold_in: Annotated[bool | None, typer.Option("--fold-in/--no-fold-in")] = None,
    rank: Annotated[int | None, typer.Option(min=1)] = None,
    max_iter: Annotated[int | None, typer.Option(min=1)] = None,
    reg_param: Annotated[float | None, typer.Option(min=0)] = None,
    implicit_prefs: Annotated[bool | None, typer.Option("--implicit/--explicit")] = None,
    alpha: Annotated[float | None, typer.Option(min=0)] = None,
    popularity_weight: Annotated[float | None, typer.Option(min=0)] = None,
    popularity_half_life_days: Annotated[float | None, typer.Option(min=0)] = None,
    retrain_every_ratings: Annotated[int | None, typer.Option(min=1)] = None,
    retrain_every_s: Annotated[float | None, typer.Option()] = None,
    min_ratings: Annotated[int | None, typer.Option(min=1)] = None,
    holdout_fraction: Annotated[float | None, typer.Option()] = None,
    top_k: Annotated[int | None, typer.Option(min=1)] = None,
    available_now: Annotated[
        bool, typer.Option(help="Process what the topic holds now, then stop.")
    ] = False,
) -> None:
    """Read the ratings topic and keep every user's list in Redis fresh.

    Every option defaults to its setting (see docs/configuration.md).
    """
    options = locals()
    from streaming import heap

    heap.python_objects_on_malloc()  # runs this command again, once, on malloc
    heap.settle()  # before Kafka's and Spark's clients start threads (their arenas)
    stop_on_sigterm()  # `docker compose stop` and systemd stop it between batches too
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    for noisy in ("kafka", "py4j"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        kafka = KafkaSettings(**_given(options, {"topic"}))
        spark_settings = SparkSettings(**_given(options, {"master"}))
        stream = StreamSettings(**_given(options, set(StreamSettings.model_fields)))
        model = ModelSettings(**_given(options, set(ModelSettings.model_fields)))
        redis_settings = RedisSettings()
    except ValidationError as exc:
        _fail(f"bad settings: {exc}", 2)
    try:
        describe_cluster(kafka)
    except BrokerUnavailableError as exc:
        _fail(str(exc), 1)
    try:
        ping(redis_settings)
    except RedisUnavailableError as exc:
        _log.warning("%s; ratings are stored meanwhile and published once it answers", exc)

    from streaming.job import (  # Spark starts only once the inputs are good
        StreamingJob,
        stop_between_batches,
    )
    from streaming.session import NATIVE_BLAS, build_spark_session, linear_algebra

    try:
        spark = build_spark_session(spark_settings)
    except StreamingError as exc:
        _fail(str(exc), 1)
    blas = linear_algebra(spark)
    _log.info("ALS linear algebra: %s (%s)", blas,
              "native" if blas == NATIVE_BLAS else "Java; libblas.so.3 not found")  # fmt: skip
    job = StreamingJob(spark, kafka, redis_settings, stream, model)
    _log.info(
        "reading %s at %s; state in %s; %d ratings stored, model %s",
        kafka.topic,
        kafka.bootstrap_servers,
        stream.state_dir.resolve(),
        job.pipeline.stored,
        "none yet" if job.model is None else f"v{job.model.version}",
    )
    query = job.start(available_now=available_now)
    settle = False  # an interrupted or failed run does not wait for the rating model
    try:
        query.awaitTermination()
        settle = query.exception() is None
    except KeyboardInterrupt:
        _log.info("interrupted: stopping after the current micro-batch")
        if not stop_between_batches(query):
            _log.warning("no pause between micro-batches within 60 s: the running one was "
                         "cancelled and is replayed at the next start")  # fmt: skip
        raise typer.Exit(130) from None
    finally:
        job.close(settle=settle)
    if query.exception() is not None:
        _fail(f"the streaming query failed: {query.exception()}", 1)


@app.command("connector-jars")
def connector_jars_command() -> None:
    """Print the Kafka connector's jars, comma-separated, for spark-submit's --jars."""
    from streaming.session import connector_jars

    try:
        jars = connector_jars(SparkSettings())
    except (ValidationError, StreamingError) as exc:
        _fail(str(exc), 1)
    print(",".join(str(jar) for jar in jars))


def _given(options: dict[str, Any], names: set[str]) -> dict[str, Any]:
    return {name: value for name, value in options.items() if name in names and value is not None}


def _fail(message: str, code: int) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def main() -> None:
    """Entry point of ``python -m streaming`` and ``recstream-streaming``."""
    app()
