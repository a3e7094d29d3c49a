"""SIGTERM stops a command the way Ctrl-C does."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import pytest

from recstream_base.cli import stop_on_sigterm

# Waits for a stop; says whether its clean-up ran.
_WAITER = """
import sys, time
from recstream_base.cli import stop_on_sigterm
if sys.argv[1] == "handled":
    stop_on_sigterm()
try:
    print("ready", flush=True)
    time.sleep(60)
finally:
    print("cleaned up", flush=True)
"""


@pytest.mark.parametrize(
    ("mode", "code", "cleaned"),
    # an uncaught KeyboardInterrupt ends Python as SIGINT would: the shell sees a Ctrl-C
    [("handled", -signal.SIGINT, True), ("python's default", -signal.SIGTERM, False)],
)
def test_sigterm_runs_the_clean_up_only_once_handled(mode: str, code: int, cleaned: bool) -> None:
    waiter = subprocess.Popen(
        [sys.executable, "-c", _WAITER, mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert waiter.stdout is not None
        assert waiter.stdout.readline() == "ready\n"
        waiter.send_signal(signal.SIGTERM)
        out, err = waiter.communicate(timeout=30)
    finally:
        if waiter.poll() is None:
            waiter.kill()
    assert waiter.returncode == code, err
    assert ("cleaned up" in out) is cleaned
    if cleaned:
        assert "KeyboardInterrupt" in err  # what Ctrl-C raises, so one except serves both


def test_off_the_main_thread_it_changes_nothing() -> None:
    before = signal.getsignal(signal.SIGTERM)
    failures: list[BaseException] = []

    def call() -> None:
        try:
            stop_on_sigterm()
        except BaseException as exc:  # reported below
            failures.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    thread.join()
    assert failures == []
    assert signal.getsignal(signal.SIGTERM) is before
