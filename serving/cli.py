"""``python -m serving``: look up recommendations, show the model, run the HTTP API."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from recstream_base.cli import command_app
from recstream_base.ids import MAX_ID
from serving.answers import MAX_N, BecauseMovie
from serving.client import RecommendationClient
from serving.errors import NoModelError, RedisUnavailableError, UnknownMovieError
from serving.layout import PIPELINE_KEPT, LayoutDecodeError
from serving.settings import ApiSettings, RedisSettings

__all__ = ["app", "main"]

app = command_app("Look up fresh movie recommendations in Redis, or serve them over HTTP.")


def _fail(message: str, code: int) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def _client() -> RecommendationClient:
    try:
        return RecommendationClient(RedisSettings())
    except ValidationError as exc:
        _fail(f"bad settings: {exc}", 2)


def _print_table(
    title: str, columns: Sequence[str], left: set[str], rows: Sequence[Sequence[str]]
) -> None:
    """A table under ``title``: the ``left`` columns of text aligned left, the rest right."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="left" if column in left else "right")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _when(epoch_s: float | None) -> str:
    if epoch_s is None:
        return "-"
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@app.command()
def recs(
    user_id: Annotated[int, typer.Argument(min=1, max=MAX_ID, help="The user's id.")],
    n: Annotated[int, typer.Option("-n", "--n", min=1, max=MAX_N, help="How many.")] = 10,
    genre: Annotated[str | None, typer.Option(help="Only movies of this genre.")] = None,
    explain: Annotated[
        bool, typer.Option(help="Add the rated movie behind each one (because you rated).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = (
        False
    ),
) -> None:
    """A user's top N movies, best first (unknown users get the popular list)."""
    with _client() as client:
        try:
            found = client.recommendations(user_id, n, genre=genre, explain=explain)
        except ValueError as exc:
            _fail(str(exc), 2)
        except (RedisUnavailableError, NoModelError, LayoutDecodeError) as exc:
            _fail(str(exc), 1)
    if as_json:
        print(found.model_dump_json(indent=2))
        return
    title = (
        f"user {found.user_id}: {len(found.movies)} movies"
        f"{f' of genre {genre}' if genre else ''} — source {found.source}, "
        f"model v{found.model_version} trained {_when(found.trained_at)}, "
        f"list updated {_when(found.updated_at)}"
    )
    rows = [
        (str(rank), str(movie.movie_id), movie.title or "(not in the catalog)",
         ", ".join(movie.genres), f"{movie.score:.3f}",
         "—" if movie.predicted_rating is None else f"{movie.predicted_rating:.1f}")
        + ((_because(movie.because),) if explain else ())
        for rank, movie in enumerate(found.movies, start=1)
    ]  # fmt: skip
    columns: tuple[str, ...] = ("#", "movie", "title", "genres", "score", "stars")
    if explain:
        columns += ("because you rated",)
    _print_table(title, columns, {"title", "genres", "because you rated"}, rows)


def _because(movie: BecauseMovie | None) -> str:
    """A table cell naming the movie behind a recommendation ("—" without one)."""
    if movie is None:
        return "—"
    return movie.title or f"movie {movie.movie_id} (not in the catalog)"


@app.command()
def similar(
    movie_id: Annotated[int, typer.Argument(min=1, max=MAX_ID, help="The movie's id.")],
    n: Annotated[int, typer.Option("-n", "--n", min=1, max=MAX_N, help="How many.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = (
        False
    ),
) -> None:
    """A movie's N nearest movies by the current model's item factors, nearest first."""
    with _client() as client:
        try:
            found = client.similar(movie_id, n)
        except ValueError as exc:
            _fail(str(exc), 2)
        except (RedisUnavailableError, NoModelError, UnknownMovieError, LayoutDecodeError) as exc:
            _fail(str(exc), 1)
    if as_json:
        print(found.model_dump_json(indent=2))
        return
    title = (
        f"movies like {found.movie_id} ({found.title or 'not in the catalog'}) — "
        f"model v{found.model_version} trained {_when(found.trained_at)}"
    )
    rows = [
        (str(rank), str(movie.movie_id), movie.title or "(not in the catalog)",
         ", ".join(movie.genres), f"{movie.similarity:.3f}")
        for rank, movie in enumerate(found.movies, start=1)
    ]  # fmt: skip
    _print_table(title, ("#", "movie", "title", "genres", "similarity"), {"title", "genres"}, rows)


@app.command()
def model(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """The current model: version, when it was trained, its size and evaluation."""
    with _client() as client:
        try:
            info = client.model_info()
        except (RedisUnavailableError, NoModelError, LayoutDecodeError) as exc:
            _fail(str(exc), 1)
    if as_json:
        print(info.model_dump_json(indent=2))
        return
    print(f"model v{info.version}, trained {_when(info.trained_at)} ({info.age_s:.0f} s ago), "
          f"published {_when(info.published_at)}")  # fmt: skip
    print(f"  {info.ratings or 0:,} ratings, {info.users or 0:,} users, {info.movies or 0:,} "
          f"movies; last folded-in batch {info.last_folded_in_batch}")  # fmt: skip
    print(f"  hyperparameters: {json.dumps(info.hyperparameters, sort_keys=True)}")
    evaluation = info.evaluation or {}
    if not evaluation:
        print("  evaluation: none (no ratings were held out)")
    for name, value in sorted(evaluation.items()):
        print(f"  {name}: {_figures(value)}")


def _figures(value: object) -> str:
    """A figure, or a group of them (e.g. the model's and the popular list's P/R/NDCG)."""
    if isinstance(value, dict):
        return ", ".join(f"{key} {_figures(inner)}" for key, inner in sorted(value.items()))
    return f"{value:.4f}" if isinstance(value, float) else str(value)


@app.command()
def pipeline(
    batches: Annotated[
        int, typer.Option("-b", "--batches", min=1, max=PIPELINE_KEPT, help="How many.")
    ] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = (
        False
    ),
) -> None:
    """The streaming job's newest micro-batches, newest first, and what they add up to."""
    with _client() as client:
        try:
            view = client.pipeline(batches)
        except (RedisUnavailableError, LayoutDecodeError) as exc:
            _fail(str(exc), 1)
    if as_json:
        print(view.model_dump_json(indent=2))
        return
    if not view.batches:
        print("no micro-batch reported yet: is the streaming job running?")
        return
    rate = "-" if view.ratings_per_s is None else f"{view.ratings_per_s:,.0f}"
    hits = "-" if view.hit_rate_at_10 is None else f"{view.hit_rate_at_10:.4f}"
    popular = "-" if view.popular_hit_rate_at_10 is None else f"{view.popular_hit_rate_at_10:.4f}"
    title = (
        f"{len(view.batches)} batches over {view.window_s:.0f} s: {rate} ratings/s stored, "
        f"live hit@10 {hits} (popular {popular})"
    )
    rows = []
    for batch in view.batches:
        notes = (
            f"retrain: {batch.retrain}" if batch.retrain else "",
            f"switched to v{batch.switched_to}" if batch.switched_to is not None else "",
        )
        rows.append((str(batch.batch_id), _when(batch.committed_at), f"{batch.valid:,}",
                     str(batch.invalid), f"{batch.seconds:.2f}",
                     "-" if batch.lag is None else f"{batch.lag:,}",
                     "-" if batch.model_version is None else f"v{batch.model_version}",
                     "; ".join(note for note in notes if note)))  # fmt: skip
    columns = ("batch", "committed", "stored", "bad", "seconds", "lag", "model", "note")
    _print_table(title, columns, {"committed", "note"}, rows)


@app.command()
def health() -> None:
    """Exit 0 when Redis answers and a model is published, 1 otherwise (with the reason)."""
    with _client() as client:
        state = client.health()
    print(state.reason if not state.ok else f"ok: model v{state.model_version}")
    if not state.ok:
        raise typer.Exit(1)


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Listen address [RECSTREAM_API_HOST]")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535)] = None,
    workers: Annotated[int | None, typer.Option(min=1, max=64)] = None,
) -> None:
    """Serve the HTTP API with uvicorn (docs at /docs)."""
    import uvicorn

    given: dict[str, Any] = {"host": host, "port": port, "workers": workers}
    try:
        settings = ApiSettings(**{k: v for k, v in given.items() if v is not None})
        RedisSettings()
    except ValidationError as exc:
        _fail(f"bad settings: {exc}", 2)
    uvicorn.run(
        "serving.api:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level="warning",
        access_log=False,
    )


def main() -> None:
    """Entry point of ``python -m serving`` and ``recstream-serving``."""
    app()
