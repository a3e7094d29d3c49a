"""A demo run's record and the HTML report drawn from it (``make demo`` writes it at the end).

The record: where the run keeps its things (``DemoRun``), the sample users whose lists it
prints (``Sample``) and its monitoring samples (``Tick``). The report: four plots from the
job's commit records and those samples, a table of totals, each sample user's top 5 as
it changed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streaming.ingest.store import BatchCommit, read_commits

__all__ = ["DemoRun", "Sample", "Tick", "write_report"]


@dataclass
class DemoRun:
    """Where one demo run keeps its things, and the environment its processes share."""

    state: Path
    topic: str
    prefix: str
    api_port: int
    env: dict[str, str] = field(default_factory=dict)
    started_at: float = 0.0  # epoch seconds
    dataset: str = ""  # what is replayed, as the report names it (a synthetic feed says so)

    @property
    def commits_dir(self) -> Path:
        """The streaming job's commit records (one JSON file a micro-batch)."""
        return self.state / "streaming" / "store" / "commits"

    def log(self, name: str) -> Path:
        """The log file of one of the demo's processes."""
        return self.state / "logs" / f"{name}.log"


@dataclass
class Sample:
    """A user whose list the demo prints: their replayed ratings and list changes."""

    user_id: int
    positions: np.ndarray  # where in the replay their ratings are
    last: list[str] = field(default_factory=list)
    changes: list[tuple[float, int, list[str]]] = field(default_factory=list)


@dataclass
class Tick:
    """One monitoring sample (for the report)."""

    at_s: float
    replayed: int
    lag: int | None
    version: int | None


@contextmanager
def _figure(target: Path, title: str) -> Iterator[Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 3.6))
    yield axis
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(target, dpi=90)
    plt.close(figure)


def write_report(folder: Path, demo: DemoRun, ticks: list[Tick], samples: list[Sample]) -> Path:
    """report.html with four plots from the commit records and the monitoring samples."""
    folder.mkdir(parents=True, exist_ok=True)
    commits = read_commits(demo.commits_dir)
    start = demo.started_at or (commits[0].committed_at if commits else time.time())
    plots: list[tuple[str, str]] = []
    if commits:
        at = np.array([c.committed_at - start for c in commits])
        with _figure(folder / "ingested.png", "ratings ingested (valid, committed)") as axis:
            axis.plot(at, np.cumsum([c.valid for c in commits]), label="stored by the job")
            axis.plot([t.at_s for t in ticks], [t.replayed for t in ticks],
                      label="in the topic (sampled)", linestyle="--")  # fmt: skip
            axis.set_xlabel("seconds since the demo started")
            axis.legend()
        plots.append(("ingested.png", "Ratings ingested"))
        with _figure(folder / "versions.png", "model version in use") as axis:
            versions = [c.model_version or 0 for c in commits]
            axis.step(at, versions, where="post")
            retrained = [i for i, c in enumerate(commits) if c.retrained]
            axis.plot(at[retrained], np.array(versions)[retrained], "o", label="retrain")
            axis.set_xlabel("seconds since the demo started")
            axis.set_ylabel("version")
            axis.legend()
        plots.append(("versions.png", "Model versions over time"))
        fresh = [c for c in commits if c.freshness_s]
        if fresh:
            with _figure(folder / "freshness.png", "Kafka append → lists in Redis") as axis:
                axis.hist([c.freshness_s[0] for c in fresh], bins=30, alpha=0.7,
                          label="batch median")  # fmt: skip
                axis.hist([c.freshness_s[1] for c in fresh], bins=30, alpha=0.5,
                          label="batch oldest event")  # fmt: skip
                axis.set_xlabel("seconds")
                axis.set_ylabel("micro-batches")
                axis.legend()
            plots.append(("freshness.png", "Freshness distribution"))
        checked = [c for c in commits if c.checked and c.rating_time]
        if checked:
            days = np.array([c.rating_time[1] // 86_400 for c in checked])
            hits = np.array([c.hits_at_10 for c in checked], dtype=np.float64)
            counts = np.array([c.checked for c in checked], dtype=np.float64)
            order = np.unique(days)
            rate = [hits[days == d].sum() / counts[days == d].sum() for d in order]
            with _figure(folder / "hit_rate.png", "live hit rate@10 (test, then learn)") as axis:
                axis.plot((order - order[0]), rate, marker=".")
                axis.set_xlabel("day of dataset time")
                axis.set_ylabel("next rating in the user's top 10")
            plots.append(("hit_rate.png", "Prequential hit rate over dataset time"))
    html = _html(demo, commits, plots, samples)
    target = folder / "report.html"
    target.write_text(html, encoding="utf-8")
    return target


def _html(
    demo: DemoRun, commits: list[BatchCommit], plots: list[tuple[str, str]], samples: list[Sample]
) -> str:
    from html import escape

    valid = sum(c.valid for c in commits)
    invalid = sum(c.invalid for c in commits)
    checked = sum(c.checked for c in commits)
    hits = sum(c.hits_at_10 for c in commits)
    popular = sum(c.popular_hits_at_10 for c in commits)
    retrains = sum(c.retrained for c in commits)
    medians = [c.freshness_s[0] for c in commits if c.freshness_s]
    rows = [
        ("micro-batches", f"{len(commits):,}"),
        ("ratings stored / dead letters", f"{valid:,} / {invalid:,}"),
        ("retrains", f"{retrains:,}"),
        ("live hit rate@10", f"{hits / checked:.4f} over {checked:,} ratings" if checked else "-"),
        ("the same, popular list", f"{popular / checked:.4f}" if checked else "-"),
        ("freshness, median of batch medians", f"{np.median(medians):.2f} s" if medians else "-"),
    ]
    parts = [
        "<!doctype html><meta charset='utf-8'><title>recstream demo report</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "td,th{padding:.2em .8em;text-align:left}</style>",
        f"<h1>recstream demo</h1><p>{escape(demo.dataset)}: topic "
        f"<code>{escape(demo.topic)}</code>, generated {time.strftime('%Y-%m-%d %H:%M:%S')}"
        "</p><table>",
        *(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows),
        "</table>",
        *(
            f"<h2>{escape(title)}</h2><img src='{name}' alt='{escape(title)}'>"
            for name, title in plots
        ),
        "<h2>Sample users: their top 5 as it changed</h2>",
    ]
    for sample in samples:
        parts.append(f"<h3>user {sample.user_id}</h3><table>")
        parts.append("<tr><th>demo time</th><th>ratings replayed</th><th>top 5</th></tr>")
        for at_s, rated, listed in sample.changes:
            parts.append(f"<tr><td>{at_s:.0f} s</td><td>{rated}</td>"
                         f"<td>{escape('; '.join(listed))}</td></tr>")  # fmt: skip
        parts.append("</table>")
    return "\n".join(parts) + "\n"
