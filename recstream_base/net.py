"""A TCP probe: is anything listening at an address."""

from __future__ import annotations

import socket

__all__ = ["port_open"]


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
