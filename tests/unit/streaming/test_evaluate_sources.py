"""``streaming.evaluation.cli --source`` on every local layout the producer reads, from files
the tests write: ml-latest CSV with half stars, ml-1m ``::``, ml-100k with its u1..u5
splits, and a zip; the folds each one gets; one whole command on a generated folder."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streaming.evaluation.cli import load_ratings
from streaming.evaluation.protocols import rating_folds
from tests.movielens_like import write_ml100k_files

ROOT = Path(__file__).resolve().parents[3]


def _ratings(count: int = 60, half_stars: bool = False, seed: int = 3) -> pd.DataFrame:
    """Distinct (user, movie) pairs with increasing timestamps."""
    rng = np.random.default_rng(seed)
    pairs = rng.choice(40 * 30, count, replace=False)
    stars = rng.integers(1, 11, count) / 2 if half_stars else rng.integers(1, 6, count) * 1.0
    return pd.DataFrame({
        "user_id": pairs // 30 + 1, "movie_id": pairs % 30 + 1, "rating": stars,
        "timestamp": 978_300_000 + np.arange(count) * 7,
    })  # fmt: skip


def _ml_latest(folder: Path, ratings: pd.DataFrame) -> Path:
    folder.mkdir(parents=True)
    ratings.rename(columns={"user_id": "userId", "movie_id": "movieId"}).to_csv(
        folder / "ratings.csv", index=False
    )
    movies = [f'{m},"Movie {m}, The (1999)",Drama|Comedy' for m in range(1, 31)]
    (folder / "movies.csv").write_text("movieId,title,genres\n" + "\n".join(movies) + "\n")
    return folder


def _ml_1m(folder: Path, ratings: pd.DataFrame) -> Path:
    folder.mkdir(parents=True)
    lines = [
        f"{r.user_id}::{r.movie_id}::{int(r.rating)}::{r.timestamp}" for r in ratings.itertuples()
    ]
    (folder / "ratings.dat").write_text("\n".join(lines) + "\n")
    movies = [f"{m}::Movie {m} (1999)::Drama" for m in range(1, 31)]
    (folder / "movies.dat").write_text("\n".join(movies) + "\n", encoding="latin-1")
    return folder


def _ml_100k(folder: Path, ratings: pd.DataFrame, splits: bool = True) -> Path:
    columns = ["user_id", "movie_id", "rating", "timestamp"]
    rows = ratings[columns].to_numpy(dtype=np.int64)
    return write_ml100k_files(folder, rows, movies=30, splits=splits)


def _zipped(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(folder.iterdir()):
            zipped.write(path, f"{folder.name}/{path.name}")
    return archive


def _same(loaded: pd.DataFrame, written: pd.DataFrame) -> None:
    key = ["timestamp", "user_id", "movie_id"]
    got = loaded.sort_values(key).reset_index(drop=True)
    want = written.sort_values(key).reset_index(drop=True)
    for column in ("user_id", "movie_id", "timestamp"):
        assert got[column].astype(np.int64).tolist() == want[column].astype(np.int64).tolist()
    assert got["rating"].tolist() == want["rating"].astype(np.float64).tolist()


def test_an_ml_latest_folder_keeps_its_half_stars(tmp_path: Path) -> None:
    written = _ratings(half_stars=True)
    loaded = load_ratings(str(_ml_latest(tmp_path / "ml-latest-small", written)))
    _same(loaded, written)
    assert (loaded["rating"] % 1 == 0.5).any()  # half stars survive the loader
    assert [name for name, _, _ in rating_folds(loaded, tmp_path / "ml-latest-small")] == [
        f"fold{n}" for n in range(1, 6)
    ]  # no official splits: the seeded 5-fold split


def test_an_ml_1m_folder_in_its_double_colon_layout(tmp_path: Path) -> None:
    written = _ratings()
    _same(load_ratings(str(_ml_1m(tmp_path / "ml-1m", written))), written)


def test_an_ml_100k_folder_uses_its_official_splits_and_a_zip_of_it_loads_too(
    tmp_path: Path,
) -> None:
    written = _ratings()
    folder = _ml_100k(tmp_path / "ml-100k", written)
    loaded = load_ratings(str(folder))
    _same(loaded, written)
    folds = rating_folds(loaded, folder)
    assert [name for name, _, _ in folds] == ["u1", "u2", "u3", "u4", "u5"]
    assert [len(test) for _, _, test in folds] == [12] * 5
    archive = _zipped(folder, tmp_path / "ml-100k.zip")
    _same(load_ratings(str(archive)), written)


def test_an_unreadable_source_is_refused_naming_the_option(tmp_path: Path) -> None:
    import typer

    with pytest.raises(typer.BadParameter, match=r"ratings\.csv|u\.data|ratings\.dat"):
        load_ratings(str(tmp_path))  # an empty folder: no known layout


def test_a_whole_prequential_command_on_a_generated_ml_latest_zip(tmp_path: Path) -> None:
    """Table, JSON with today's keys and the new baselines, PNG: on half stars, zipped."""
    rng = np.random.default_rng(5)
    users, movies = rng.integers(1, 81, 3_000), rng.zipf(1.3, 3_000) % 120 + 1
    frame = pd.DataFrame({"user_id": users, "movie_id": movies,
                          "rating": rng.integers(1, 11, 3_000) / 2,
                          "timestamp": 1_000_000 + np.arange(3_000) * 30})  # fmt: skip
    frame = frame.drop_duplicates(["user_id", "movie_id"])
    folder = _ml_latest(tmp_path / "ml-latest-small", frame.iloc[:0])
    frame.rename(columns={"user_id": "userId", "movie_id": "movieId"}).to_csv(
        folder / "ratings.csv", index=False
    )
    movies_csv = [f"{m},Movie {m} (1999),Drama" for m in range(1, 121)]
    (folder / "movies.csv").write_text("movieId,title,genres\n" + "\n".join(movies_csv) + "\n")
    archive = _zipped(folder, tmp_path / "ml-latest-small.zip")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "streaming.evaluation", "prequential", "--source", str(archive),
         "--out", str(out), "--batch-size", "200", "--retrain-every", "5000"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "recent-pop" in done.stdout and "transitions" in done.stdout  # the table
    assert "returning users (" in done.stdout and "new users (" in done.stdout
    assert "on returning users for 1.5x / 2x / 2.5x popular overall" in done.stdout
    report = json.loads((out / "prequential.json").read_text())
    assert report["ratings"] == len(frame)
    for figure in ("hit_rate", "ndcg"):
        assert {"recstream", "popular", "recent-popular", "transitions"} <= set(report[figure])
    assert [group["users"] for group in report["users"]] == ["returning", "new"]
    assert sum(group["ratings"] for group in report["users"]) == len(frame)
    assert (out / "prequential.png").stat().st_size > 1_000
