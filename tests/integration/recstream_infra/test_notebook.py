"""notebooks/walkthrough.ipynb runs top to bottom on ML-100K, so it never rots."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from serving.settings import RedisSettings

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.integration
@pytest.mark.slow
def test_walkthrough_runs_and_redis_agrees_with_the_batch_list(
    redis_settings: RedisSettings, ml100k_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the kernel inherits these: the test's own data, Redis and key prefix
    monkeypatch.setenv("RECSTREAM_NOTEBOOK_DATASET", str(ml100k_dir))
    monkeypatch.setenv("RECSTREAM_REDIS_URL", redis_settings.url)
    monkeypatch.setenv("RECSTREAM_REDIS_KEY_PREFIX", redis_settings.key_prefix)
    notebook = nbformat.read(ROOT / "notebooks" / "walkthrough.ipynb", as_version=4)  # type: ignore[no-untyped-call]
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()  # fmt: skip
    printed = "\n".join(
        output.get("text", "")
        for cell in notebook.cells if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )  # fmt: skip
    assert "100,000 ratings, 943 users, 1,682 movies" in printed
    assert "explicit ALS: RMSE" in printed
    assert "the live list is the batch list" in printed
