"""MovieLens through tensorflow-datasets, prepared once into the TFDS data folder.

TFDS downloads from GroupLens the first time; offline it would retry for minutes.
So before preparing, the download host is probed for a few seconds, and an
unreachable one gets an error that says how to use local files instead.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from producer.dataset import Dataset, Movie, RatingTable
from producer.errors import DatasetUnavailableError

__all__ = ["TFDS_DATASETS", "load_tfds", "padded_batches", "table_from_tfds_batches"]

# TFDS name -> our source name (the same ratings loaded from local files get the
# same source name, hence the same event ids).
TFDS_DATASETS: dict[str, str] = {
    "movielens/1m-ratings": "ml-1m",
    "movielens/100k-ratings": "ml-100k",
    "movielens/latest-small-ratings": "ml-latest-small",
}
_DOWNLOAD_HOST = ("files.grouplens.org", 443)
_OFFLINE_HELP = (
    "without internet, replay local GroupLens files instead: "
    "`python -m producer replay --source /path/to/ml-1m` (a folder or zip in the ml-100k, "
    "ml-1m or ml-latest layout), or `--source synthetic`"
)


def load_tfds(name: str, data_dir: Path | None = None, *, probe_timeout_s: float = 5.0) -> Dataset:
    """Load ``name`` (a key of :data:`TFDS_DATASETS`), preparing it on first use.

    Raises:
        DatasetUnavailableError: unknown name, or it is not prepared and cannot be
            downloaded; the message says how to use local files.
    """
    if name not in TFDS_DATASETS:
        msg = f"unknown TFDS dataset {name!r}; choose one of {', '.join(TFDS_DATASETS)}"
        raise DatasetUnavailableError(msg)
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=str(data_dir) if data_dir else None)
    if not builder.is_prepared():
        _probe_download_host(probe_timeout_s)
        try:
            builder.download_and_prepare()
        except (OSError, ConnectionError) as exc:
            reason = type(exc).__name__
            msg = f"tensorflow-datasets could not download {name} ({reason}); {_OFFLINE_HELP}"
            raise DatasetUnavailableError(msg) from exc
    genre_names = builder.info.features["movie_genres"].feature.names
    source = TFDS_DATASETS[name]
    batches = tfds.as_numpy(padded_batches(builder.as_dataset(split="train")))
    table, movies = table_from_tfds_batches(batches, genre_names)
    return Dataset(
        name=source,
        label=f"MovieLens {source} via tensorflow-datasets ({name}, {builder.data_dir})",
        ratings=table,
        movies=movies,
    )


def padded_batches(dataset: Any, size: int = 65_536) -> Any:
    """Batch TFDS MovieLens records; genre lists differ in length, so they are padded.

    Genre labels are shifted up by one first, so the padding value 0 never stands
    for a real genre; :func:`table_from_tfds_batches` shifts them back.
    """

    def shift_genres(record: dict[str, Any]) -> dict[str, Any]:
        return {**record, "movie_genres": record["movie_genres"] + 1}

    return dataset.map(shift_genres).padded_batch(size)


def table_from_tfds_batches(
    batches: Iterable[Mapping[str, Any]], genre_names: list[str]
) -> tuple[RatingTable, list[Movie]]:
    """Turn :func:`padded_batches` output (ids as byte strings, genre labels + 1) into our types."""
    users, movies, ratings, stamps = [], [], [], []
    catalog: dict[int, Movie] = {}
    for batch in batches:
        movie_ids = [int(value) for value in batch["movie_id"]]
        users.append(np.array([int(value) for value in batch["user_id"]], dtype=np.int64))
        movies.append(np.array(movie_ids, dtype=np.int64))
        ratings.append(np.asarray(batch["user_rating"], dtype=np.float64))
        stamps.append(np.asarray(batch["timestamp"], dtype=np.int64))
        for movie_id, title, genres in zip(
            movie_ids, batch["movie_title"], batch["movie_genres"], strict=True
        ):
            if movie_id not in catalog:
                names = tuple(
                    genre_names[int(label) - 1] for label in np.ravel(genres) if label > 0
                )
                catalog[movie_id] = Movie(movie_id, bytes(title).decode("utf-8", "replace"), names)
    if not users:
        msg = "tensorflow-datasets returned no ratings"
        raise DatasetUnavailableError(msg)
    table = RatingTable(
        np.concatenate(users),
        np.concatenate(movies),
        np.concatenate(ratings),
        np.concatenate(stamps),
    )
    return table, sorted(catalog.values(), key=lambda movie: movie.movie_id)


def _probe_download_host(timeout_s: float) -> None:
    host, port = _DOWNLOAD_HOST
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as exc:
        msg = (
            f"MovieLens is not prepared in the TFDS data folder and {host} is not reachable "
            f"({exc.strerror or type(exc).__name__}); {_OFFLINE_HELP}"
        )
        raise DatasetUnavailableError(msg) from exc
