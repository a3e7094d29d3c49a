"""The tensorflow-datasets source: record conversion on a real tf.data pipeline, and offline."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from producer.dataset import Dataset
from producer.errors import DatasetUnavailableError
from producer.tfds_source import load_tfds, padded_batches, table_from_tfds_batches

GENRES = ["Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama"]


def _records() -> Iterator[dict[str, Any]]:
    # Shaped like TFDS movielens records: ids as strings, genres as a variable-length list.
    yield {"user_id": b"7", "movie_id": b"42", "user_rating": 4.0, "timestamp": 881250949,
           "movie_title": "Café (1995)".encode(), "movie_genres": [0, 4]}  # fmt: skip
    yield {"user_id": b"8", "movie_id": b"43", "user_rating": 2.0, "timestamp": 881250950,
           "movie_title": b"Other", "movie_genres": [7]}  # fmt: skip
    yield {"user_id": b"7", "movie_id": b"43", "user_rating": 5.0, "timestamp": 881250951,
           "movie_title": b"Other", "movie_genres": [7]}  # fmt: skip


def test_tfds_records_become_ratings_and_catalog() -> None:
    import tensorflow as tf
    import tensorflow_datasets as tfds

    signature = {
        "user_id": tf.TensorSpec((), tf.string), "movie_id": tf.TensorSpec((), tf.string),
        "user_rating": tf.TensorSpec((), tf.float32), "timestamp": tf.TensorSpec((), tf.int64),
        "movie_title": tf.TensorSpec((), tf.string),
        "movie_genres": tf.TensorSpec((None,), tf.int64),
    }  # fmt: skip
    dataset = tf.data.Dataset.from_generator(_records, output_signature=signature)
    table, movies = table_from_tfds_batches(tfds.as_numpy(padded_batches(dataset, 2)), GENRES)
    assert table.user_ids.tolist() == [7, 8, 7]
    assert table.ratings.tolist() == [4.0, 2.0, 5.0]
    assert [(m.movie_id, m.title, m.genres) for m in movies] == [
        (42, "Café (1995)", ("Action", "Comedy")),
        (43, "Other", ("Drama",)),  # padding never turns into a genre
    ]


def test_unknown_tfds_name() -> None:
    with pytest.raises(DatasetUnavailableError, match="movielens/1m-ratings"):
        load_tfds("movielens/25m-ratings")


def test_unreachable_download_host_says_to_use_local_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free_port: int
) -> None:
    # Nothing is prepared in an empty data folder; the download host is a closed port,
    # as GroupLens is on a machine without internet. The error comes at once and says
    # what to do instead (TFDS alone would retry for minutes).
    monkeypatch.setattr("producer.tfds_source._DOWNLOAD_HOST", ("127.0.0.1", free_port))
    began = time.monotonic()
    with pytest.raises(DatasetUnavailableError) as caught:
        load_tfds("movielens/100k-ratings", tmp_path, probe_timeout_s=3)
    assert time.monotonic() - began < 10
    message = str(caught.value)
    assert "not prepared in the TFDS data folder and 127.0.0.1 is not reachable" in message
    assert "--source /path/to/ml-1m" in message
    assert "--source synthetic" in message


@pytest.mark.slow
def test_tfds_prepares_the_real_ml100k_like_the_local_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ml100k_dir: Path
) -> None:
    # The real TFDS builder and parsers prepare movielens/100k-ratings; only the
    # download is replaced (this machine cannot reach GroupLens): it hands TFDS the
    # official ml-100k files, exactly what the zip would have extracted to.
    import tensorflow_datasets as tfds

    from producer.grouplens import load_grouplens

    extracted = tmp_path / "extracted"
    extracted.mkdir()
    (extracted / "ml-100k").symlink_to(ml100k_dir.resolve(), target_is_directory=True)
    monkeypatch.setattr("producer.tfds_source._probe_download_host", lambda timeout_s: None)
    monkeypatch.setattr(
        tfds.download.DownloadManager, "download_and_extract", lambda self, url: str(extracted)
    )
    via_tfds = load_tfds("movielens/100k-ratings", tmp_path / "tfds")
    local = load_grouplens(ml100k_dir)

    assert via_tfds.name == local.name == "ml-100k"  # same source, so the same event ids

    def rows(dataset: Dataset) -> list[tuple[int, int, float, int]]:
        table = dataset.ratings
        return sorted(
            zip(
                table.user_ids.tolist(),
                table.movie_ids.tolist(),
                table.ratings.tolist(),
                table.timestamps.tolist(),
                strict=True,
            )
        )

    assert len(via_tfds.ratings.user_ids) == 100_000
    assert rows(via_tfds) == rows(local)
    assert [movie.movie_id for movie in via_tfds.movies] == [m.movie_id for m in local.movies]
    # Prepared once: a second load reads the TFDS data folder and never downloads.
    monkeypatch.setattr(
        tfds.download.DownloadManager, "download_and_extract", lambda self, url: pytest.fail()
    )
    assert len(load_tfds("movielens/100k-ratings", tmp_path / "tfds").ratings.user_ids) == 100_000
