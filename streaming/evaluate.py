"""``python -m streaming.evaluate``: offline evaluation of the lists recstream publishes.

    python -m streaming.evaluate rating  [--data DIR] [--out DIR]
    python -m streaming.evaluate ranking [--data DIR] [--out DIR] [--train-share 0.8]

Each prints a table and writes ``<out>/<protocol>.json``. The model is the configured
one (``RECSTREAM_MODEL_*``, the defaults the streaming job uses); see
``streaming.protocols`` for what each protocol measures.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from recstream_infra.cli import command_app
from streaming.settings import ModelSettings, SparkSettings

__all__ = ["app"]

app = command_app("Offline evaluation of recstream's lists (rating, ranking).")
_DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
DataOption = Annotated[Path, typer.Option(help="ML-100K folder (u.data, u1..u5 splits)")]
OutOption = Annotated[Path, typer.Option(help="Where the JSON reports go")]


def _spark() -> Any:
    from streaming.session import build_spark_session

    for noisy in ("py4j",):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    return build_spark_session(
        SparkSettings(master="local[2]", shuffle_partitions=4, ui_enabled=False,
                      console_progress=False)
    )  # fmt: skip


def _write(out: Path, name: str, report: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{name}.json"
    target.write_text(json.dumps(report, indent=2, sort_keys=True))
    return target


@app.command()
def rating(data: DataOption = _DEFAULT_DATA, out: OutOption = Path("evaluation")) -> None:
    """RMSE and MAE on ML-100K's u1..u5 splits: recstream's model and Spark's default ALS."""
    from streaming.protocols import rating_protocol

    settings = ModelSettings()
    spark = _spark()
    try:
        report = rating_protocol(spark, data, settings)
    finally:
        spark.stop()
    table = Table(title="rating prediction, ML-100K u1..u5 (mean ± std over the folds)")
    for column in ("model", "RMSE", "MAE", "RMSE per fold"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, figures in report.summary().items():
        errors = f"{figures['rmse_mean']:.4f} ± {figures['rmse_std']:.4f}"
        absolute = f"{figures['mae_mean']:.4f} ± {figures['mae_std']:.4f}"
        per_fold = " ".join(f"{row.rmse:.3f}" for row in report.folds[name])
        table.add_row(name, errors, absolute, per_fold)
    Console().print(table)
    document = {**report.as_dict(), "settings": settings.model_dump()}
    print(f"written: {_write(out, 'rating', document)}")


@app.command()
def ranking(
    data: DataOption = _DEFAULT_DATA,
    out: OutOption = Path("evaluation"),
    train_share: Annotated[float, typer.Option(min=0.05, max=0.95)] = 0.8,
) -> None:
    """Precision, recall, NDCG and MAP at 10 on a time split: model, Spark default, popular."""
    from streaming.protocols import load_split, ranking_protocol

    settings = ModelSettings()
    ratings = load_split(data / "u.data")
    spark = _spark()
    try:
        report = ranking_protocol(spark, ratings, settings, train_share=train_share)
    finally:
        spark.stop()
    table = Table(
        title=f"ranking at 10, time split ({report.train_ratings:,} before / "
        f"{report.test_ratings:,} after), relevant = rating ≥ {report.relevant_rating:g}"
    )
    for column in ("lists", "users", "precision", "recall", "NDCG", "MAP"):
        table.add_column(column, justify="left" if column == "lists" else "right")
    for group, figures in (("all", report.figures), ("known", report.known_figures)):
        for name, f in figures.items():
            table.add_row(f"{name} ({group} users)", str(f.users), f"{f.precision:.4f}",
                          f"{f.recall:.4f}", f"{f.ndcg:.4f}", f"{f.map:.4f}")  # fmt: skip
    Console().print(table)
    document = {**report.as_dict(), "settings": settings.model_dump()}
    print(f"written: {_write(out, 'ranking', document)}")


if __name__ == "__main__":
    app()
