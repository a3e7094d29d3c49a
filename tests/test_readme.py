"""The README stays true: its configuration table and the make targets it names."""

from __future__ import annotations

import re
from pathlib import Path

from recstream_infra.config_table import render_table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_configuration_table_matches_the_settings_classes() -> None:
    start = README.index("<!-- config-table:start")
    start = README.index("\n", start) + 1
    end = README.index("<!-- config-table:end -->")
    assert README[start:end] == render_table(), (
        "README table is stale: paste the output of `python -m recstream_infra.config_table`"
    )


def test_every_make_target_the_readme_names_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.MULTILINE))
    named = set(re.findall(r"`make ([a-z][a-z-]*)", README)) | set(
        re.findall(r"^make ([a-z][a-z-]*)", README, flags=re.MULTILINE)
    )
    assert named, "the README names no make target"
    assert named <= targets, f"README names missing targets: {sorted(named - targets)}"
