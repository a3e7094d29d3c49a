"""The project's own certificate authority: ``python -m recstream_infra.tls <ca-file>``.

It is for TLS between the local services and their clients.

The CA is a self-signed certificate (``ca.pem``) and its key (``ca-key.pem``, readable
by its owner only) in one folder. Clients verify the local Kafka broker and Redis
against ``ca.pem`` (``RECSTREAM_KAFKA_SSL_CAFILE``, ``RECSTREAM_REDIS_TLS_CA_FILE``);
each server gets a certificate signed by the CA for ``127.0.0.1`` and ``localhost``,
made when it starts. Everything is made by the ``openssl`` command.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from recstream_infra.local_service import ServiceStartError

__all__ = ["ServerCertificate", "ensure_ca", "issue_server_certificate", "main"]

_DAYS = "825"  # the longest validity clients accept for a server certificate


@dataclass(frozen=True)
class ServerCertificate:
    """A server's certificate (signed by the CA), its private key, and the CA's certificate."""

    certificate: Path
    key: Path
    ca: Path

    def chain_with_key(self) -> str:
        """The key followed by the certificate: a PEM key store as Kafka reads it."""
        return self.key.read_text() + self.certificate.read_text()


def _openssl(*arguments: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        msg = "the openssl command is needed to make the local TLS certificates; run `make setup`"
        raise ServiceStartError(msg)
    done = subprocess.run(  # noqa: S603 - the arguments are ours
        [openssl, *arguments], cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        msg = f"openssl {arguments[0]} failed in {cwd}: {done.stderr.strip()[-500:]}"
        raise ServiceStartError(msg)


def _private(path: Path) -> None:
    path.touch(mode=0o600)
    path.chmod(0o600)


def ensure_ca(ca_file: Path) -> Path:
    """Make the CA at ``ca_file`` (its key beside it as ``ca-key.pem``) unless it exists.

    Raises:
        ServiceStartError: the certificate exists without its key (nothing could be
            signed with it), or openssl failed.
    """
    ca_file = ca_file.resolve()
    key = ca_file.with_name("ca-key.pem")
    if ca_file.is_file():
        if not key.is_file():
            msg = (
                f"{ca_file} exists but its key {key.name} is not beside it, so no server "
                "certificate can be signed; point the CA file setting at a new path to make "
                "a new CA there"
            )
            raise ServiceStartError(msg)
        return ca_file
    ca_file.parent.mkdir(parents=True, exist_ok=True)
    _private(key)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-noenc", "-keyout", str(key), "-out",
        str(ca_file), "-days", _DAYS, "-subj", "/CN=recstream local CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=ca_file.parent,
    )  # fmt: skip
    return ca_file


def issue_server_certificate(ca_file: Path, folder: Path) -> ServerCertificate:
    """A new key and certificate for a server on 127.0.0.1 / localhost, signed by the CA.

    Raises:
        ServiceStartError: the CA could not be made or openssl failed.
    """
    ca_file = ensure_ca(ca_file)
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    key, request, certificate = folder / "tls-key.pem", folder / "tls.csr", folder / "tls.pem"
    extensions = folder / "tls.ext"
    extensions.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    _private(key)
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out",
             str(key), cwd=folder)  # fmt: skip
    _openssl("req", "-new", "-key", str(key), "-subj", "/CN=127.0.0.1", "-out", str(request),
             cwd=folder)  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca_file), "-CAkey",
        str(ca_file.with_name("ca-key.pem")), "-CAcreateserial", "-days", _DAYS,
        "-extfile", str(extensions), "-out", str(certificate),
        cwd=ca_file.parent,
    )  # fmt: skip
    request.unlink()
    return ServerCertificate(certificate, key, ca_file)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: make the CA at the path given, unless it exists; print where it is."""
    parser = argparse.ArgumentParser(prog="python -m recstream_infra.tls", description=__doc__)
    parser.add_argument("ca_file", type=Path, help="where the CA certificate goes (ca.pem)")
    args = parser.parse_args(argv)
    try:
        made = ensure_ca(args.ca_file)
    except ServiceStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"CA certificate {made} (key {made.with_name('ca-key.pem')}, owner-only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
