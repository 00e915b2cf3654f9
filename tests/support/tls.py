"""Throwaway TLS material for tests, made by OpenSSL (a real peer, and no key generation
outside gateway/crypto.py). Until the gateway's own CA issues the portal's certificate, a
self-signed one for 127.0.0.1 stands in; the agent trusts it with ``--ca``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.node import missing_peer


def self_signed(folder: Path, name: str = "portal") -> tuple[Path, Path]:
    """(certificate, key) PEM files for CN=localhost, SAN 127.0.0.1 and localhost, 2 days."""
    if shutil.which("openssl") is None:
        missing_peer("openssl not installed: install Debian's openssl")
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key
