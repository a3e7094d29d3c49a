"""``python -m streaming.evaluation``: offline evaluation of the lists recstream publishes.

    python -m streaming.evaluation rating  [--source SPEC] [--out DIR]
    python -m streaming.evaluation ranking [--source SPEC] [--out DIR] [--train-share 0.8]
    python -m streaming.evaluation prequential [--source SPEC] [--out DIR] [--window-s 1]
        [--batch-size N] [--retrain-every 10000] [--part all|first-80]
    python -m streaming.evaluation search --set rank=10,30 --set transition_weight=0.5,1
        [--protocol ranking|prequential] [--train-share 0.8] [--validation-share 0.8]

``--source`` takes what ``producer replay --source`` takes: ``tfds:<name>``, a GroupLens
folder or zip (ml-100k, ml-1m, ml-10m or ml-latest layout) or ``synthetic``; the
default is the team's ML-100K folder when it is there, else ``synthetic``. Each
command prints a table and writes ``<out>/<protocol>.json``; ``prequential`` also draws
``<out>/prequential.png``. The model is the configured
one (``RECSTREAM_MODEL_*``, the defaults the streaming job uses); see
``streaming.evaluation.protocols`` for what each protocol measures.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from recstream_base.cli import command_app
from streaming.settings import ModelSettings, SparkSettings

__all__ = ["app"]

app = command_app("Offline evaluation of recstream's lists, and a hyperparameter search.")
_TEAM_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
_DEFAULT_SOURCE = str(_TEAM_DATA) if _TEAM_DATA.is_dir() else "synthetic"
SourceOption = Annotated[
    str,
    typer.Option(help="tfds:<name>, a GroupLens folder or zip, or synthetic (as producer replay)"),
]
OutOption = Annotated[Path, typer.Option(help="Where the JSON reports go")]


def load_ratings(source: str) -> pd.DataFrame:
    """The ratings of ``source`` (as ``producer replay --source``) as a frame.

    Raises:
        typer.BadParameter: the source cannot be loaded (the message says why).
    """
    from producer.errors import ProducerError
    from producer.settings import ProducerSettings
    from producer.sources import load_source

    try:
        dataset = load_source(source, ProducerSettings())
    except (ProducerError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--source") from exc
    table = dataset.ratings
    print(f"source: {dataset.label}: {len(table):,} ratings", flush=True)
    if dataset.bad_records:
        print(f"source: {len(dataset.bad_records):,} unusable lines left out, first: "
              f"{dataset.bad_records[0].describe()}")  # fmt: skip
    return pd.DataFrame({"user_id": table.user_ids, "movie_id": table.movie_ids,
                         "rating": table.ratings, "timestamp": table.timestamps})  # fmt: skip


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
def rating(source: SourceOption = _DEFAULT_SOURCE, out: OutOption = Path("evaluation")) -> None:
    """RMSE and MAE over 5 folds (ML-100K's u1..u5 where present).

    The rating model, the explicit ALS twin, Spark's default ALS.
    """
    from streaming.evaluation.protocols import rating_folds, rating_protocol

    settings = ModelSettings()
    folds = rating_folds(load_ratings(source), Path(source), seed=settings.seed)
    spark = _spark()
    try:
        report = rating_protocol(spark, folds, settings)
    finally:
        spark.stop()
    table = Table(title=f"rating prediction, folds {', '.join(f[0] for f in folds)} "
                  "(mean ± std over the folds)")  # fmt: skip
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
    summary = report.summary()
    bars = {"RMSE": {n: f["rmse_mean"] for n, f in summary.items()},
            "MAE": {n: f["mae_mean"] for n, f in summary.items()}}  # fmt: skip
    print(f"written: {_bars(out, 'rating', 'rating prediction (mean over the folds)', bars)}")


@app.command()
def ranking(
    source: SourceOption = _DEFAULT_SOURCE,
    out: OutOption = Path("evaluation"),
    train_share: Annotated[float, typer.Option(min=0.05, max=0.95)] = 0.8,
) -> None:
    """Precision, recall, NDCG and MAP at 10 on a time split: model, Spark default, popular."""
    from streaming.evaluation.protocols import ranking_protocol

    settings = ModelSettings()
    ratings = load_ratings(source)
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
    bars = {metric: {name: getattr(f, metric.lower()) for name, f in report.figures.items()}
            for metric in ("precision", "recall", "NDCG", "MAP")}  # fmt: skip
    print(f"written: {_bars(out, 'ranking', 'ranking at 10, all test users', bars)}")


@app.command()
def search(
    grid: Annotated[
        list[str], typer.Option("--set", help="name=v1,v2,… of a model setting; repeatable")
    ],
    source: SourceOption = _DEFAULT_SOURCE,
    out: OutOption = Path("evaluation"),
    protocol: Annotated[
        str, typer.Option(help="ranking (validation split) or prequential (replay)")
    ] = "ranking",
    train_share: Annotated[float, typer.Option(min=0.05, max=0.95)] = 0.8,
    validation_share: Annotated[float, typer.Option(min=0.05, max=0.95)] = 0.8,
    window_s: Annotated[float, typer.Option(min=0.001)] = 1.0,
    retrain_every: Annotated[int, typer.Option(min=1)] = 10_000,
) -> None:
    """Grid search on the ratings before the test period, which it never touches.

    Only the ratings before the cutoff that leaves ``--train-share`` of them before it
    are used. ``ranking`` splits them again by time (``--validation-share``) and scores
    each combination by NDCG@10 of the users known before that cutoff; ``prequential``
    replays them (``--window-s`` micro-batches, a retrain every ``--retrain-every``)
    and scores NDCG@10 of the next rating. Models are fitted once per distinct ALS
    setting: combinations that differ only in the blend share them.
    """
    from streaming.evaluation.protocols import search_grid, time_split

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
    development, _, _ = time_split(load_ratings(source), train_share)
    spark = _spark()
    rows = []
    fits: dict[str, Any] = {}
    try:
        for number, settings in enumerate(combos, start=1):
            chosen = {name: getattr(settings, name) for name in sorted(parsed)}
            ours, theirs = _search_score(spark, development, settings, protocol,
                                         validation_share, window_s, retrain_every,
                                         fits)  # fmt: skip
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


_ALS_SETTINGS = ("rank", "max_iter", "reg_param", "implicit_prefs", "alpha", "nonnegative",
                 "seed", "popularity_half_life_days", "popularity_weight")  # fmt: skip


def _search_score(
    spark: Any,
    ratings: pd.DataFrame,
    settings: ModelSettings,
    protocol: str,
    validation_share: float,
    window_s: float,
    retrain_every: int,
    fits: dict[str, Any],
) -> tuple[dict[str, float], dict[str, float]]:
    """(recstream, popular) figures of one combination under the chosen protocol."""
    from streaming.evaluation.prequential import prequential_protocol
    from streaming.evaluation.protocols import fit_for_evaluation, ranking_protocol

    if protocol == "ranking":
        known = ranking_protocol(spark, ratings, settings, train_share=validation_share,
                                 spark_default=False).known_figures  # fmt: skip
        return asdict(known["recstream"]), asdict(known["popular"])
    als = json.dumps(settings.model_dump(include=set(_ALS_SETTINGS)), sort_keys=True)
    if als not in fits:  # the blend does not change the fit: one model per ALS setting
        fit = fit_for_evaluation(spark, settings)
        models: dict[int, Any] = {}

        def cached(frame: pd.DataFrame) -> Any:
            if len(frame) not in models:
                models[len(frame)] = fit(frame)
            return models[len(frame)]

        fits[als] = cached
    report = prequential_protocol(ratings, settings, fits[als], window_s=window_s,
                                  retrain_every=retrain_every)  # fmt: skip
    figures = {
        name: {"hit_rate": report.hit_rate[name], "ndcg": report.ndcg[name]}
        for name in ("recstream", "popular")
    }
    return figures["recstream"], figures["popular"]


@app.command()
def prequential(
    source: SourceOption = _DEFAULT_SOURCE,
    out: OutOption = Path("evaluation"),
    window_s: Annotated[
        float, typer.Option(min=0.001, help="Seconds of dataset time per micro-batch")
    ] = 1.0,
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, help="Ratings per micro-batch instead (a feed faster than real time)"),
    ] = None,
    retrain_every: Annotated[int, typer.Option(min=1, help="Ratings between retrains")] = 10_000,
    part: Annotated[
        str,
        typer.Option(help="all, or first-80 (the search's period: the first 80 % of the timeline)"),
    ] = "all",
) -> None:
    """Test-then-learn replay.

    Hit rate and NDCG at 10 of each next rating, beside the popular, recency-weighted
    popular and transition lists.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from streaming.evaluation.prequential import prequential_protocol
    from streaming.evaluation.protocols import fit_for_evaluation, time_split

    if part not in {"all", "first-80"}:
        msg = f"{part!r}: choose all or first-80"
        raise typer.BadParameter(msg, param_hint="--part")
    settings = ModelSettings()
    ratings = load_ratings(source)
    if part == "first-80":
        ratings = time_split(ratings, 0.8)[0]
    spark = _spark()
    try:
        with Progress(*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn()) as bar:  # fmt: skip
            task = bar.add_task("replay (ratings)", total=len(ratings))
            report = prequential_protocol(
                ratings, settings, fit_for_evaluation(spark, settings),
                retrain_every=retrain_every,
                progress=lambda done, _total: bar.update(task, completed=done),
                **({"batch_size": batch_size} if batch_size else {"window_s": window_s}),
            )  # fmt: skip
    finally:
        spark.stop()
    table = Table(title=f"prequential replay of {report.ratings:,} ratings in {report.batches:,} "
                  f"micro-batches of {report.batching} ({report.retrains} retrains)")  # fmt: skip
    columns = ("lists", "hit rate@10", "NDCG@10", "hit / popular", "hit, 1st half",
               "hit, 2nd half")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "lists" else "right")
    for name in report.hit_rate:
        table.add_row(name, f"{report.hit_rate[name]:.4f}", f"{report.ndcg[name]:.4f}",
                      f"{report.ratio(name):.2f}x",
                      *(f"{half['hit_rate'][name]:.4f}" for half in report.halves))  # fmt: skip
    Console().print(table)
    for group in report.users:
        shares = ", ".join(f"{name} {group['hit_rate'][name]:.4f}" for name in report.hit_rate)
        print(f"{group['users']} users ({group['ratings']:,} ratings): hit rate@10 {shares}")
    needed = " / ".join(f"{report.needed_on_returning(times):.4f}" for times in (1.5, 2.0, 2.5))
    print(f"recstream would need hit rate@10 {needed} on returning users for 1.5x / 2x / 2.5x "
          "popular overall (new users' lists cannot know them)")  # fmt: skip
    print(f"replayed in {report.seconds:.1f} s, of which {report.fit_seconds:.1f} s in the "
          f"{report.retrains} retrains")  # fmt: skip
    document = {**report.as_dict(), "source": source, "settings": settings.model_dump()}
    print(f"written: {_write(out, 'prequential', document)}")
    print(f"written: {_plot(out, report.days)}")


def _bars(out: Path, name: str, title: str, groups: dict[str, dict[str, float]]) -> Path:
    """``<out>/<name>.png``: one group of bars per figure, one bar per model or list."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = list(dict.fromkeys(label for values in groups.values() for label in values))
    width = 0.8 / max(len(series), 1)
    figure, axis = plt.subplots(figsize=(9, 4.5))
    for index, label in enumerate(series):
        heights = [values.get(label, 0.0) for values in groups.values()]
        axis.bar([g + index * width for g in range(len(groups))], heights, width, label=label)
    axis.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))],
                    list(groups))  # fmt: skip
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{name}.png"
    figure.savefig(target, dpi=100)
    plt.close(figure)
    return target


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
