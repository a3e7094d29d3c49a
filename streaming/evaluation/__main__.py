"""``python -m streaming.evaluation``."""

from streaming.evaluation.cli import app

app()
