"""Foundations shared by every recstream package: strict settings and the local services.

Nothing here is imported at package import time, so ``python3 -m recstream_infra...``
modules that only need the standard library keep working before the venv exists.
"""
