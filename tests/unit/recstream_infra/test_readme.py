"""The README and the docs stay true: the configuration table, the make targets and the
``python -m`` commands they name."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from recstream_infra.config_table import render_table

ROOT = Path(__file__).resolve().parents[3]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TEXT = {page.relative_to(ROOT).as_posix(): page.read_text() for page in PAGES}


def test_configuration_table_matches_the_settings_classes() -> None:
    page = TEXT["docs/configuration.md"]
    start = page.index("<!-- config-table:start")
    start = page.index("\n", start) + 1
    end = page.index("<!-- config-table:end -->")
    assert page[start:end] == render_table(), (
        "docs/configuration.md's table is stale: paste the output of "
        "`python -m recstream_infra.config_table`"
    )


def test_the_readme_stays_short() -> None:
    lines = TEXT["README.md"].count("\n")
    assert lines <= 200, f"README.md has {lines} lines; move detail into docs/"


@pytest.mark.parametrize("page", sorted(TEXT))
def test_every_make_target_a_page_names_exists(page: str) -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, flags=re.MULTILINE))
    named = set(re.findall(r"`make ([a-z][a-z0-9-]*)", TEXT[page])) | set(
        re.findall(r"^make ([a-z][a-z0-9-]*)", TEXT[page], flags=re.MULTILINE)
    )
    assert named <= targets, f"{page} names missing make targets: {sorted(named - targets)}"


@pytest.mark.parametrize("page", sorted(TEXT))
def test_every_python_module_a_page_runs_exists(page: str) -> None:
    modules = set(re.findall(r"python -m ([a-z_][a-z_.]*[a-z_])", TEXT[page]))
    ours = {name for name in modules if name.split(".")[0] in _PACKAGES}
    missing = sorted(name for name in ours if importlib.util.find_spec(name) is None)
    assert not missing, f"{page} runs modules that do not exist: {missing}"


def test_the_pages_name_make_targets_and_our_modules() -> None:
    """The two checks above look at something: the pages do name targets and modules."""
    everything = "\n".join(TEXT.values())
    assert re.search(r"`make demo`", everything)
    assert "python -m streaming.evaluation" in everything
    assert "python -m producer" in everything


_PACKAGES = {"producer", "streaming", "serving", "recstream_infra"}
