"""Start, find and stop the background processes of the local services.

A process is recorded in a pid file together with its start time (field 22 of
``/proc/<pid>/stat``); a pid only counts as ours while a process with that pid and
that start time is alive, so a recycled pid never makes us signal a stranger. (The
command line is no proof: Redis, for one, rewrites its own.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ManagedProcess", "wait_until"]


@dataclass(frozen=True)
class ManagedProcess:
    """A background process recorded by its pid file (pid and start time)."""

    name: str
    pid_file: Path
    log_file: Path

    def pid(self) -> int | None:
        """The pid of our process if it is alive, else None (a stale pid file is removed)."""
        try:
            pid_text, started_text = self.pid_file.read_text().split()
            pid, started = int(pid_text), int(started_text)
        except (FileNotFoundError, ValueError):
            return None
        if _is_alive(pid) and _start_time(pid) == started:
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
        """Start ``argv`` detached from our session, output appended to the log file."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(  # noqa: S603 - argv is built by us, never a shell
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{process.pid} {_start_time(process.pid)}\n")
        return process.pid

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop our process (SIGTERM, then SIGKILL at the deadline); False if none ran."""
        pid = self.pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not wait_until(lambda: not _is_alive(pid), timeout_s):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not _is_alive(pid), 10.0)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> bool:
        """SIGKILL our process and all it started, as a crash ends them; False if none ran.

        ``start`` made the process the leader of a process group of its own, which its
        children join (a Spark worker's executors, their Python workers): the whole
        group is killed.
        """
        pid = self.pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        wait_until(lambda: not _is_alive(pid), 10.0)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the log file, for error messages."""
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log file)"
        return "\n".join(text.splitlines()[-lines:])


def wait_until(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll ``condition()`` until it is true or ``timeout_s`` passes; its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def _is_alive(pid: int) -> bool:
    # Reap it first if it is our own exited child, so it does not linger as a zombie.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat_fields(pid)
    if fields is None:
        return True
    state, threads = fields[0], int(fields[17])
    if state != "Z" or threads > 1:
        # A zombie leader with live threads (a JVM shutting down) has not exited yet.
        return True
    # It has exited; if it is our child, reap it so that it does not linger.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return False


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` after the parenthesised command name (None if it is gone).

    Index 0 is the state (field 3 of proc(5)), 17 the thread count, 19 the start time.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()


def _start_time(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (None if it is gone)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None
