"""The id range every part of recstream accepts.

User and movie ids are positive 32-bit integers (Spark's ALS keeps ids as ``int``).
"""

from __future__ import annotations

__all__ = ["MAX_ID"]

MAX_ID = 2**31 - 1
