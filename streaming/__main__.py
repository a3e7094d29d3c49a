"""``python -m streaming``."""

from streaming.cli import main

main()
