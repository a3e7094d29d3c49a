"""``python -m streaming.evaluate``: offline evaluation of the lists recstream publishes.

    python -m streaming.evaluate rating  [--data DIR] [--out DIR]
    python -m streaming.evaluate ranking [--data DIR] [--out DIR] [--train-share 0.8]
    python -m streaming.evaluate prequential [--data DIR] [--out DIR] [--window-s 1]
        [--batch-size N] [--retrain-every 10000]
    python -m streaming.evaluate search --set rank=10,30 --set implicit_prefs=true
        --set alpha=1,10 [--protocol ranking|prequential] [--train-share 0.8]
        [--validation-share 0.8]

Each prints a table and writes ``<out>/<protocol>.json``; ``prequential`` also draws
``<out>/prequential.png``. The model is the configured
one (``RECSTREAM_MODEL_*``, the defaults the streaming job uses); see
``streaming.protocols`` for what each protocol measures.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from recstream_infra.cli import command_app
from streaming.settings import ModelSettings, SparkSettings

__all__ = ["app"]

app = command_app("Offline evaluation of recstream's lists, and a hyperparameter search.")
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
    """RMSE and MAE on ML-100K's u1..u5: the rating model, the explicit ALS twin, Spark's ALS."""
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
    bound = report.ceiling
    print(
        f"ceiling: {bound['new_users']} of the test users are new; the best single list "
        "for them, picked with the test data, has precision "
        f"{bound['new_user_best_list_precision']:.4f}; "
        f"then the {bound['known_users']} known users would need "
        f"{bound['known_user_precision_needed_for_1_5x']:.4f} for 1.5x the popular precision "
        "over all users"
    )
    document = {**report.as_dict(), "settings": settings.model_dump()}
    print(f"written: {_write(out, 'ranking', document)}")


@app.command()
def search(
    grid: Annotated[
        list[str], typer.Option("--set", help="name=v1,v2,… of a model setting; repeatable")
    ],
    data: DataOption = _DEFAULT_DATA,
    out: OutOption = Path("evaluation"),
    protocol: Annotated[
        str, typer.Option(help="ranking (validation split) or prequential (replay)")
    ] = "ranking",
    train_share: Annotated[float, typer.Option(min=0.05, max=0.95)] = 0.8,
    validation_share: Annotated[float, typer.Option(min=0.05, max=0.95)] = 0.8,
) -> None:
    """Grid search on the ratings before the test period, which it never touches.

    Only the ratings before the ranking protocol's cutoff (``--train-share``) are used.
    ``ranking`` splits them again by time (``--validation-share``) and scores each
    combination by NDCG@10 of the users known before that cutoff; ``prequential``
    replays them (1 s micro-batches, a retrain every 10,000) and scores hit rate@10.
    """
    from streaming.protocols import load_split, search_grid, time_split

    if protocol not in {"ranking", "prequential"}:
        msg = f"{protocol!r}: choose ranking or prequential"
        raise typer.BadParameter(msg, param_hint="--protocol")
    parsed: dict[str, list[str]] = {}
    for item in grid:
        name, _, values = item.partition("=")
        if not values:
            msg = f"{item!r}: write name=v1,v2"
            raise typer.BadParameter(msg, param_hint="--set")
        parsed[name.strip()] = [v.strip() for v in values.split(",") if v.strip()]
    try:
        combos = search_grid(parsed, ModelSettings())
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--set") from exc
    development, _, _ = time_split(load_split(data / "u.data"), train_share)
    spark = _spark()
    rows = []
    try:
        for number, settings in enumerate(combos, start=1):
            chosen = {name: getattr(settings, name) for name in sorted(parsed)}
            ours, theirs = _search_score(spark, development, settings, protocol,
                                         validation_share)  # fmt: skip
            rows.append({"settings": chosen, "recstream": ours, "popular": theirs})
            print(f"[{number}/{len(combos)}] {chosen}: NDCG@10 {ours['ndcg']:.4f} "
                  f"(popular {theirs['ndcg']:.4f})", flush=True)  # fmt: skip
    finally:
        spark.stop()
    headline = "precision" if protocol == "ranking" else "hit_rate"
    rows.sort(key=lambda row: -row["recstream"]["ndcg"])
    title = ("validation split, users who rated before its cutoff" if protocol == "ranking"
             else "prequential replay of the period before the test cutoff")  # fmt: skip
    table = Table(title=f"{title}, best NDCG@10 first")
    for column in ("settings", f"{headline}@10", "NDCG@10", "NDCG / popular"):
        table.add_column(column, justify="left" if column == "settings" else "right")
    for row in rows:
        ours, theirs = row["recstream"], row["popular"]
        ratio = ours["ndcg"] / theirs["ndcg"] if theirs["ndcg"] else float("nan")
        table.add_row(json.dumps(row["settings"]), f"{ours[headline]:.4f}",
                      f"{ours['ndcg']:.4f}", f"{ratio:.2f}")  # fmt: skip
    Console().print(table)
    document = {"protocol": "search", "scored_by": protocol, "results": rows}
    print(f"written: {_write(out, 'search', document)}")


def _search_score(
    spark: Any, ratings: Any, settings: ModelSettings, protocol: str, validation_share: float
) -> tuple[dict[str, float], dict[str, float]]:
    """(recstream, popular) figures of one combination under the chosen protocol."""
    from streaming.protocols import prequential_protocol, ranking_protocol

    if protocol == "ranking":
        known = ranking_protocol(spark, ratings, settings, train_share=validation_share,
                                 spark_default=False).known_figures  # fmt: skip
        return asdict(known["recstream"]), asdict(known["popular"])
    report = prequential_protocol(spark, ratings, settings, window_s=1.0)
    figures = {
        name: {"hit_rate": report.hit_rate[name], "ndcg": report.ndcg[name]}
        for name in ("recstream", "popular")
    }
    return figures["recstream"], figures["popular"]


@app.command()
def prequential(
    data: DataOption = _DEFAULT_DATA,
    out: OutOption = Path("evaluation"),
    window_s: Annotated[
        float, typer.Option(min=0.001, help="Seconds of dataset time per micro-batch")
    ] = 1.0,
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, help="Ratings per micro-batch instead (a feed faster than real time)"),
    ] = None,
    retrain_every: Annotated[int, typer.Option(min=1, help="Ratings between retrains")] = 10_000,
) -> None:
    """Test-then-learn replay: hit rate and NDCG at 10 of each next rating, vs popular."""
    from streaming.protocols import load_split, prequential_protocol

    settings = ModelSettings()
    ratings = load_split(data / "u.data")
    spark = _spark()
    try:
        report = prequential_protocol(
            spark, ratings, settings, retrain_every=retrain_every,
            **({"batch_size": batch_size} if batch_size else {"window_s": window_s}),
        )  # fmt: skip
    finally:
        spark.stop()
    table = Table(title=f"prequential replay of {report.ratings:,} ratings in {report.batches:,} "
                  f"micro-batches of {report.batching} ({report.retrains} retrains)")  # fmt: skip
    for column in ("lists", "hit rate@10", "NDCG@10"):
        table.add_column(column, justify="left" if column == "lists" else "right")
    for name in report.hit_rate:
        table.add_row(name, f"{report.hit_rate[name]:.4f}", f"{report.ndcg[name]:.4f}")
    Console().print(table)
    document = {**report.as_dict(), "settings": settings.model_dump()}
    print(f"written: {_write(out, 'prequential', document)}")
    print(f"written: {_plot(out, report.days)}")


def _plot(out: Path, days: list[dict[str, Any]]) -> Path:
    """Hit rate@10 per week of dataset time, recstream beside popular (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.DataFrame(days)
    frame["week"] = (frame["day"] - frame["day"].min()) // 7
    weekly = (
        frame.assign(
            hits=frame["hit_rate"] * frame["ratings"],
            popular_hits=frame["popular_hit_rate"] * frame["ratings"],
        )
        .groupby("week")[["ratings", "hits", "popular_hits"]]
        .sum()
    )
    figure, axis = plt.subplots(figsize=(9, 4.5))
    axis.plot(weekly.index, weekly["hits"] / weekly["ratings"], label="recstream")
    axis.plot(weekly.index, weekly["popular_hits"] / weekly["ratings"], label="popular")
    axis.set_xlabel("week of dataset time")
    axis.set_ylabel("hit rate@10 of the next rating")
    axis.set_title("prequential replay")
    axis.legend()
    figure.tight_layout()
    target = out / "prequential.png"
    figure.savefig(target, dpi=100)
    plt.close(figure)
    return target


if __name__ == "__main__":
    app()
