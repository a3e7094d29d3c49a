"""Managed processes: pid files, identity by pid and start time, stop with TERM then KILL."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from recstream_infra.processes import ManagedProcess, wait_until


def _managed(tmp_path: Path) -> ManagedProcess:
    return ManagedProcess("sleeper", tmp_path / "p.pid", tmp_path / "p.log")


def _sleeper(*, ignore_term: bool = False) -> list[str]:
    code = "import signal, time\n"
    if ignore_term:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('up', flush=True)\ntime.sleep(120)\n"
    return [sys.executable, "-c", code]


def test_start_records_pid_and_stop_ends_the_process(tmp_path: Path) -> None:
    process = _managed(tmp_path)
    pid = process.start(_sleeper())
    assert process.pid() == pid
    assert wait_until(lambda: "up" in process.log_tail(), 10)
    assert process.stop(timeout_s=10) is True
    assert process.pid() is None
    assert not process.pid_file.exists()
    assert not Path(f"/proc/{pid}").exists()


def test_stop_kills_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    process = _managed(tmp_path)
    pid = process.start(_sleeper(ignore_term=True))
    assert wait_until(lambda: "up" in process.log_tail(), 10)
    assert process.stop(timeout_s=0.5) is True
    assert not Path(f"/proc/{pid}").exists()


def test_a_live_pid_with_another_start_time_is_not_ours(tmp_path: Path) -> None:
    process = _managed(tmp_path)
    # Our own pid: alive, but started at another time (what a recycled pid looks like).
    process.pid_file.write_text(f"{os.getpid()} 1\n")
    assert process.pid() is None
    assert process.stop() is False  # and it was not signalled: we are still here
    assert not process.pid_file.exists()


def test_stop_without_a_process_is_a_no_op(tmp_path: Path) -> None:
    process = _managed(tmp_path)
    assert process.stop() is False
    process.pid_file.write_text("not a pid\n")
    assert process.stop() is False


def test_log_tail_without_a_log(tmp_path: Path) -> None:
    assert _managed(tmp_path).log_tail() == "(no log file)"


def test_wait_until_gives_up_at_the_deadline() -> None:
    assert wait_until(lambda: False, 0.2, interval_s=0.05) is False
