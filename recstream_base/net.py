"""Network probes: is anything listening, does it speak TLS, does its certificate verify."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

__all__ = ["port_open", "speaks_tls", "tls_problem"]


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def speaks_tls(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """Whether a TLS handshake (certificate unchecked) completes at ``host:port``."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as sock,
            context.wrap_socket(sock, server_hostname=host),
        ):
            return True
    except (OSError, ssl.SSLError):
        return False


def tls_problem(host: str, port: int, ca_file: Path | None, setting: str) -> str | None:
    """Why a verified TLS handshake with ``host:port`` fails, if it does.

    ``setting`` names the CA file's setting in the message, where that is what to fix.
    None when the handshake succeeds or nothing answers.
    """
    where = f"{host}:{port}"
    if ca_file is not None and not ca_file.is_file():
        return (
            f"{setting}={ca_file} does not exist; point it at the PEM file of the CA that "
            f"signed the certificate of {where}"
        )
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        return f"{setting}={ca_file} is not a PEM file of CA certificates ({exc})"
    try:
        with (
            socket.create_connection((host, port), timeout=2.0) as sock,
            context.wrap_socket(sock, server_hostname=host),
        ):
            return None
    except ssl.SSLCertVerificationError as exc:
        trusted = f"the CA in {setting} ({ca_file})" if ca_file else "the system's CAs"
        return (
            f"the certificate of {where} is not trusted by {trusted}: {exc.verify_message}; "
            f"point {setting} at the CA that signed it"
        )
    except (ssl.SSLError, ConnectionResetError) as exc:
        return f"{where} does not speak TLS ({type(exc).__name__}: {exc})"
    except OSError:
        return None
