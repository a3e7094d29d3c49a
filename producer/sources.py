"""Turn a source specification into a loaded dataset.

``tfds`` or ``tfds:<name>`` (tensorflow-datasets, the default ``tfds:movielens/1m-ratings``),
``synthetic``, or the path of a GroupLens folder or zip.
"""

from __future__ import annotations

from pathlib import Path

from producer.dataset import Dataset
from producer.grouplens import load_grouplens
from producer.settings import ProducerSettings
from producer.synthetic import synthetic_dataset
from producer.tfds_source import load_tfds

__all__ = ["DEFAULT_TFDS", "load_source"]

DEFAULT_TFDS = "movielens/1m-ratings"


def load_source(spec: str, settings: ProducerSettings, *, strict: bool = False) -> Dataset:
    """Load what ``spec`` names; ``strict`` makes the first bad local line an error."""
    if spec == "tfds" or spec.startswith("tfds:"):
        name = spec.partition(":")[2] or DEFAULT_TFDS
        return load_tfds(name, settings.tfds_data_dir)
    if spec == "synthetic":
        return synthetic_dataset(
            settings.synthetic_events,
            users=settings.synthetic_users or None,
            movies=settings.synthetic_movies or None,
            seed=settings.synthetic_seed,
        )
    return load_grouplens(Path(spec).expanduser(), strict=strict)
