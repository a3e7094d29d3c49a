"""``python -m serving``."""

from serving.cli import main

main()
