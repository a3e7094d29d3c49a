"""The producer's command line: help, bad options and an unreachable broker (no services)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from producer.settings import ProducerSettings
from tests.conftest import subprocess_env


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = subprocess_env()
    return subprocess.run(
        [sys.executable, "-m", "producer", *args], env={**base, **(env or {})},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_help_documents_every_option() -> None:
    done = _run("replay", "--help")
    assert done.returncode == 0
    options = ("--source", "--topic", "--speed", "--rate", "--max", "--limit",
               "--from-timestamp", "--resume", "--strict", "--catalog", "--progress")  # fmt: skip
    for option in options:
        assert option in done.stdout


def test_two_paces_at_once_are_refused() -> None:
    done = _run("replay", "--source", "synthetic", "--speed", "2", "--rate", "3")
    assert done.returncode == 2
    assert "choose one pace, got --speed and --rate" in done.stderr


def test_unreachable_broker_fails_in_seconds_naming_it(tmp_path: Path, free_port: int) -> None:
    env = {
        "RECSTREAM_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port}",
        "RECSTREAM_KAFKA_CONNECT_TIMEOUT_S": "2",
        "RECSTREAM_PRODUCER_SYNTHETIC_EVENTS": "1000",
    }
    began = time.monotonic()
    done = _run("replay", "--source", "synthetic", env=env)
    assert time.monotonic() - began < 30
    assert done.returncode == 1
    assert f"no Kafka broker answered at 127.0.0.1:{free_port} within 2 s" in done.stderr


def test_bad_local_line_with_strict_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "u.data").write_text("1\t2\t3\t881250949\n1\t2\tnine\t881250949\n")
    done = _run("replay", "--source", str(tmp_path), "--strict")
    assert done.returncode == 1
    assert f"{tmp_path / 'u.data'}:2: rating 'nine' is not a number" in done.stderr


def test_producer_settings_validation() -> None:
    with pytest.raises(ValidationError, match="pace"):
        ProducerSettings(pace="warp")
    with pytest.raises(ValidationError, match="speed"):
        ProducerSettings(speed=0)
    with pytest.raises(ValidationError, match="compression"):
        ProducerSettings(compression="brotli")
