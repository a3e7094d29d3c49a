"""The project's own CA: made once, its key private, server certificates that verify."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from recstream_infra import tls
from recstream_infra.local_service import ServiceStartError


def test_the_ca_is_made_once_with_an_owner_only_key(tmp_path: Path) -> None:
    ca = tls.ensure_ca(tmp_path / "tls" / "ca.pem")
    key = ca.with_name("ca-key.pem")
    assert ca.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = ca.read_bytes()
    assert tls.ensure_ca(ca) == ca and ca.read_bytes() == before  # reused, not remade


def test_a_ca_without_its_key_is_refused_with_what_to_do(tmp_path: Path) -> None:
    ca = tls.ensure_ca(tmp_path / "ca.pem")
    ca.with_name("ca-key.pem").unlink()
    with pytest.raises(ServiceStartError, match="no server certificate can be signed"):
        tls.ensure_ca(ca)


def test_a_server_certificate_verifies_against_the_ca_for_loopback(tmp_path: Path) -> None:
    issued = tls.issue_server_certificate(tmp_path / "tls" / "ca.pem", tmp_path / "server")
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", str(issued.ca), str(issued.certificate)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    names = subprocess.run(
        ["openssl", "x509", "-in", str(issued.certificate), "-noout", "-ext", "subjectAltName"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "IP Address:127.0.0.1" in names and "DNS:localhost" in names
    assert stat.S_IMODE(issued.key.stat().st_mode) == 0o600
    store = issued.chain_with_key()
    assert store.index("PRIVATE KEY") < store.index("BEGIN CERTIFICATE")  # Kafka's order


def test_the_command_makes_the_ca_and_says_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tls.main([str(tmp_path / "ca.pem")]) == 0
    assert "owner-only" in capsys.readouterr().out
    (tmp_path / "ca-key.pem").unlink()
    assert tls.main([str(tmp_path / "ca.pem")]) == 1
