"""Certificates the tests make: a CA, a server certificate for localhost and a client one."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certs:
    """PEM files in one directory."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path
    other_key: Path  # a key that belongs to no certificate here


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(directory: Path) -> Certs:
    """A CA, and a server (localhost, 127.0.0.1, ::1) and a client certificate it signed."""
    d = directory
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key", cwd=d)
    _openssl("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=sipreg test CA",
             "-days", "2", "-out", "ca.pem", cwd=d)  # fmt: skip
    (d / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n"
    )
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client", "other"):
        _openssl(
            "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=d
        )
    for name in ("server", "client"):
        _openssl("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={name}", "-out",
                 f"{name}.csr", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out",
                 f"{name}.pem", cwd=d)  # fmt: skip
    return Certs(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem",
                 d / "client.key", d / "other.key")  # fmt: skip
