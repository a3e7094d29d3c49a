"""Turn a source specification into a loaded dataset.

``tfds`` or ``tfds:<name>`` (tensorflow-datasets, the default ``tfds:movielens/1m-ratings``),
``synthetic``, ``auto`` (MovieLens-1M through tensorflow-datasets when it can be had,
else the synthetic feed), or the path of a GroupLens folder or zip.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from producer.dataset import Dataset
from producer.errors import DatasetUnavailableError
from producer.grouplens import load_grouplens
from producer.settings import ProducerSettings
from producer.synthetic import synthetic_dataset
from producer.tfds_source import load_tfds

__all__ = ["AUTO", "DEFAULT_TFDS", "FALLBACK_NOTE", "load_source"]

DEFAULT_TFDS = "movielens/1m-ratings"
AUTO = "auto"
FALLBACK_NOTE = (
    "MovieLens-1M cannot be had through tensorflow-datasets here (no internet?); "
    "replaying the SYNTHETIC feed instead (choose another with DATASET= or --source)"
)


def load_source(
    spec: str,
    settings: ProducerSettings,
    *,
    strict: bool = False,
    fell_back: Callable[[str], None] | None = None,
) -> Dataset:
    """Load what ``spec`` names; ``strict`` makes the first bad local line an error.

    With ``auto``, a MovieLens-1M that cannot be loaded is replaced by the synthetic
    feed, and ``fell_back`` (if given) is told so in one line (``FALLBACK_NOTE``).
    """
    if spec == AUTO:
        try:
            return load_tfds(DEFAULT_TFDS, settings.tfds_data_dir)
        except DatasetUnavailableError:
            if fell_back is not None:
                fell_back(FALLBACK_NOTE)
            return load_source("synthetic", settings)
    if spec == "tfds" or spec.startswith("tfds:"):
        name = spec.partition(":")[2] or DEFAULT_TFDS
        return load_tfds(name, settings.tfds_data_dir)
    if spec == "synthetic":
        return synthetic_dataset(
            settings.synthetic_events,
            users=settings.synthetic_users or None,
            movies=settings.synthetic_movies or None,
            arrivals=settings.synthetic_arrivals,
            seed=settings.synthetic_seed,
        )
    return load_grouplens(Path(spec).expanduser(), strict=strict)
