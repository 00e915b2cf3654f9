"""JSON Web Tokens signed by the ``openssl`` command line: an issuer independent of ztbridge.

ztbridge only verifies tokens; signing them with OpenSSL (not with our own code) means a
test passing shows interoperability, not agreement with ourselves.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.support.node import missing_peer


def _openssl(*args: str, data: bytes | None = None) -> bytes:
    if shutil.which("openssl") is None:
        missing_peer("openssl is not installed: apt-get install openssl")
    done = subprocess.run(["openssl", *args], input=data, capture_output=True, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed: {done.stderr.decode()}")
    return done.stdout


def keypair(folder: Path, kind: str = "ed25519") -> tuple[Path, Path]:
    """(private key PEM, public key PEM) for ``ed25519`` or ``p256``."""
    folder.mkdir(parents=True, exist_ok=True)
    private, public = folder / f"{kind}.key", folder / f"{kind}.pub.pem"
    if kind == "ed25519":
        _openssl("genpkey", "-algorithm", "ed25519", "-out", str(private))
    else:
        _openssl(
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            str(private),
        )
    _openssl("pkey", "-in", str(private), "-pubout", "-out", str(public))
    return private, public


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _der_to_raw(der: bytes) -> bytes:
    """ECDSA-Sig-Value (SEQUENCE of two INTEGERs) to JWS's fixed 64-byte r || s."""
    assert der[0] == 0x30
    pos = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    out = b""
    for _ in range(2):
        assert der[pos] == 0x02
        n = der[pos + 1]
        value = der[pos + 2 : pos + 2 + n]
        out += int.from_bytes(value, "big").to_bytes(32, "big")
        pos += 2 + n
    return out


def sign(
    private: Path,
    claims: dict[str, Any] | str,
    alg: str = "EdDSA",
    header: dict[str, Any] | str | None = None,
) -> str:
    """A compact JWS over ``claims`` signed with ``alg``; ``header`` overrides header fields
    (e.g. a lying ``alg``). A str for either is encoded exactly as given (JSON no library
    would write: NaN, duplicate names, deep nesting)."""
    if isinstance(header, str):
        head_json = header
    else:
        head_json = json.dumps({"alg": alg, "typ": "JWT", **(header or {})})
    body_json = claims if isinstance(claims, str) else json.dumps(claims)
    signing_input = f"{_b64(head_json.encode())}.{_b64(body_json.encode())}"
    if alg == "ES256":
        der = _openssl("dgst", "-sha256", "-sign", str(private), data=signing_input.encode())
        signature = _der_to_raw(der)
    else:
        tmp = private.with_suffix(".input")
        tmp.write_bytes(signing_input.encode())
        signature = _openssl("pkeyutl", "-sign", "-inkey", str(private), "-rawin", "-in", str(tmp))
    return f"{signing_input}.{_b64(signature)}"
