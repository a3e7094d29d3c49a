"""What recstream's command lines share: how a Typer app is set up, how a stop is asked for."""

from __future__ import annotations

import signal
import threading

import typer

__all__ = ["STOP_SIGNALS", "command_app", "stop_on_sigterm"]

# The signals that ask a command to stop cleanly: Ctrl-C, and what orchestrators send
# (`docker compose stop`, systemd, Kubernetes) before they kill after a grace period.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def command_app(help_text: str) -> typer.Typer:
    """A Typer app that shows its help when called bare, with plain tracebacks."""
    return typer.Typer(
        help=help_text,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )


def stop_on_sigterm() -> None:
    """Make SIGTERM stop this process the way Ctrl-C does: KeyboardInterrupt in the main thread.

    Python's default for SIGTERM ends the process on the spot, with no ``finally`` run:
    the streaming job would not stop between two micro-batches, the demo would leave its
    children and services running. Only the main thread may set a handler; elsewhere
    this does nothing.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)
