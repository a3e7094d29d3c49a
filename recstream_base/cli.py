"""What recstream's command lines share: how a Typer app is set up."""

from __future__ import annotations

import typer

__all__ = ["command_app"]


def command_app(help_text: str) -> typer.Typer:
    """A Typer app that shows its help when called bare, with plain tracebacks."""
    return typer.Typer(
        help=help_text,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
