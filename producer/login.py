"""Asking a broker, on one plain socket, whether it accepts our SASL login.

kafka-python treats a refused login like an unreachable broker: it backs off, retries
and, at its deadline, says only "Unable to bootstrap". Worse, the broker closes the
connection right after its refusal, and a busy client often sees the close before the
answer. So when a bootstrap fails, recstream asks once more here, where the answer is
read before the close: a SaslHandshake, then SaslAuthenticate rounds driven by
kafka-python's own mechanism (PLAIN or SCRAM).
"""

from __future__ import annotations

import socket
import ssl
import struct
from typing import Any

from kafka.net.sasl import get_sasl_mechanism

from producer.settings import KafkaSettings

__all__ = ["login_refusal"]

_SASL_HANDSHAKE, _SASL_AUTHENTICATE = 17, 36
_CLIENT_ID = b"recstream-login-check"


class _ProtocolError(Exception):
    """The peer does not speak the Kafka protocol we expect."""


def login_refusal(
    settings: KafkaSettings, options: dict[str, Any], timeout_s: float = 5.0
) -> str | None:
    """The reason the first broker that answers gives for refusing our login.

    ``options`` are the kafka-python client options (they carry the credentials).
    None when the login succeeds, SASL is off, or no broker speaks to us at all.
    """
    if not settings.sasl:
        return None
    for host, port in settings.servers:
        try:
            with socket.create_connection((host, port), timeout=timeout_s) as plain:
                sock = _tls(plain, host, settings) if settings.tls else plain
                sock.settimeout(timeout_s)
                return _Conversation(sock).log_in(settings.sasl_mechanism, host, options)
        except (OSError, _ProtocolError, struct.error):  # ssl.SSLError is an OSError
            continue
    return None


def _tls(sock: socket.socket, host: str, settings: KafkaSettings) -> ssl.SSLSocket:
    """``sock`` after a TLS handshake that verifies the broker as the clients do."""
    cafile = str(settings.ssl_cafile) if settings.ssl_cafile is not None else None
    return ssl.create_default_context(cafile=cafile).wrap_socket(sock, server_hostname=host)


class _Conversation:
    """Framed request/response pairs on a blocking socket (request header v1)."""

    def __init__(self, sock: socket.socket | ssl.SSLSocket) -> None:
        self.sock = sock
        self.correlation = 0

    def log_in(self, mechanism_name: str, host: str, options: dict[str, Any]) -> str | None:
        body = self.ask(_SASL_HANDSHAKE, 1, _string(mechanism_name.encode()))
        error, offered = struct.unpack_from(">hi", body)
        if error:
            names, at = [], 6
            for _ in range(offered):
                (size,) = struct.unpack_from(">h", body, at)
                names.append(body[at + 2 : at + 2 + size].decode())
                at += 2 + size
            return f"it does not offer SASL {mechanism_name} (it offers {', '.join(names)})"
        mechanism = get_sasl_mechanism(mechanism_name)(host=host, **options)
        while not mechanism.is_done():
            token = mechanism.auth_bytes()
            body = self.ask(_SASL_AUTHENTICATE, 1, struct.pack(">i", len(token)) + token)
            error, size = struct.unpack_from(">hh", body)
            message = "" if size < 0 else body[4 : 4 + size].decode(errors="replace")
            if error:
                return message or f"SaslAuthenticate error code {error}"
            at = 4 + max(size, 0)
            (length,) = struct.unpack_from(">i", body, at)
            mechanism.receive(body[at + 4 : at + 4 + max(length, 0)])
        return None if mechanism.is_authenticated() else "the SASL exchange did not authenticate"

    def ask(self, api_key: int, version: int, body: bytes) -> bytes:
        self.correlation += 1
        header = struct.pack(">hhi", api_key, version, self.correlation) + _string(_CLIENT_ID)
        request = header + body
        self.sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", self._read(4))
        reply = self._read(size)
        (correlation,) = struct.unpack_from(">i", reply)
        if correlation != self.correlation:
            msg = f"answer {correlation} to request {self.correlation}"
            raise _ProtocolError(msg)
        return reply[4:]

    def _read(self, count: int) -> bytes:
        chunks, missing = [], count
        while missing:
            chunk = self.sock.recv(missing)
            if not chunk:
                msg = "the broker closed the connection mid-answer"
                raise _ProtocolError(msg)
            chunks.append(chunk)
            missing -= len(chunk)
        return b"".join(chunks)


def _string(raw: bytes) -> bytes:
    return struct.pack(">h", len(raw)) + raw
