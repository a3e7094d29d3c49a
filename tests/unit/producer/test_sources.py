"""``auto``: MovieLens-1M through tensorflow-datasets when it loads, else the synthetic feed."""

from __future__ import annotations

import pytest

from producer import sources
from producer.dataset import Dataset
from producer.errors import DatasetUnavailableError
from producer.settings import ProducerSettings
from producer.synthetic import synthetic_dataset

SETTINGS = ProducerSettings(synthetic_events=500)


def test_auto_falls_back_to_the_synthetic_feed_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unreachable(name: str, data_dir: object) -> Dataset:
        msg = f"{name}: files.grouplens.org is not reachable"
        raise DatasetUnavailableError(msg)

    monkeypatch.setattr(sources, "load_tfds", unreachable)
    notes: list[str] = []
    data = sources.load_source("auto", SETTINGS, fell_back=notes.append)
    assert notes == [sources.FALLBACK_NOTE]
    assert "SYNTHETIC" in notes[0]
    assert data.name == "synthetic"
    assert data.label.startswith("synthetic feed (500 events")
    assert sources.load_source("auto", SETTINGS).name == "synthetic"  # no listener: quiet
    with pytest.raises(DatasetUnavailableError):  # asked for by name, it still fails
        sources.load_source("tfds", SETTINGS)


def test_auto_takes_movielens_when_it_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    movielens = synthetic_dataset(50, seed=1)  # stands in for what tensorflow-datasets gave
    asked: list[str] = []

    def loaded(name: str, data_dir: object) -> Dataset:
        asked.append(name)
        return movielens

    monkeypatch.setattr(sources, "load_tfds", loaded)
    notes: list[str] = []
    assert sources.load_source("auto", SETTINGS, fell_back=notes.append) is movielens
    assert (asked, notes) == (["movielens/1m-ratings"], [])
