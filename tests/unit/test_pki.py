"""The CA: certificates OpenSSL accepts, owner-only files, no overwrites, passphrase checks."""

from __future__ import annotations

import shutil
import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway import pki
from gateway.clock import FixedClock
from gateway.errors import ConfigError, InvalidInputError
from tests.support.node import missing_peer

CLOCK = FixedClock(datetime.now(UTC))


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("openssl") is None:
        missing_peer("openssl is not installed")
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> pki.PkiPaths:
    paths = pki.PkiPaths(tmp_path_factory.mktemp("home"))
    pki.init_ca(paths, "ca passphrase", ["pacs.example.org", "10.1.2.3", "localhost"], CLOCK)
    return paths


def test_files_are_owner_only_and_ca_key_is_sealed(ca: pki.PkiPaths) -> None:
    for path in (ca.ca_key, ca.ca_cert, ca.server_key, ca.server_cert):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert b"PRIVATE KEY" not in ca.ca_key.read_bytes()  # sealed JSON, not PEM
    assert b"PRIVATE KEY" in ca.server_key.read_bytes()  # needed unattended by 'up'


def test_server_certificate_verifies_with_openssl(ca: pki.PkiPaths) -> None:
    done = openssl(
        "verify", "-CAfile", str(ca.ca_cert), "-purpose", "sslserver", str(ca.server_cert)
    )
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr
    cert = x509.load_pem_x509_certificate(ca.server_cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "pacs.example.org" in sans.get_values_for_type(x509.DNSName)
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["10.1.2.3"]
    assert cert.public_key().key_size == 2048  # type: ignore[union-attr]
    ca_cert = x509.load_pem_x509_certificate(ca.ca_cert.read_bytes())
    assert ca_cert.public_key().key_size == 3072  # type: ignore[union-attr]
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_device_certificate(ca: pki.PkiPaths, tmp_path: Path) -> None:
    authority = pki.unlock_ca(ca, "ca passphrase")
    issued = pki.issue_device_cert(authority, "CT01", CLOCK, days=30)
    cert_file = tmp_path / "ct01.pem"
    cert_file.write_bytes(issued.cert_pem)
    done = openssl("verify", "-CAfile", str(ca.ca_cert), "-purpose", "sslclient", str(cert_file))
    assert done.returncode == 0, done.stderr
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.subject.rfc4514_string().startswith("CN=CT01")
    assert (cert.not_valid_after_utc - CLOCK.now()).days == 29
    # The recorded fingerprint is what OpenSSL computes for the certificate.
    out = openssl("x509", "-in", str(cert_file), "-noout", "-fingerprint", "-sha256").stdout
    assert out.split("=", 1)[1].strip().replace(":", "").lower() == issued.fingerprint
    # The key matches the certificate.
    key_file = tmp_path / "ct01.key"
    key_file.write_bytes(issued.key_pem)
    mod_cert = openssl("x509", "-in", str(cert_file), "-noout", "-modulus").stdout
    mod_key = openssl("rsa", "-in", str(key_file), "-noout", "-modulus").stdout
    assert mod_cert == mod_key


def test_wrong_or_missing_passphrase(ca: pki.PkiPaths) -> None:
    with pytest.raises(ConfigError, match="passphrase is wrong"):
        pki.unlock_ca(ca, "guess")
    with pytest.raises(ConfigError, match="ZTBRIDGE_CA_PASSPHRASE"):
        pki.unlock_ca(ca, None)


def test_refusals(ca: pki.PkiPaths, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="already exists"):
        pki.init_ca(ca, "again", ["localhost"], CLOCK)
    target = tmp_path / "exists.pem"
    target.write_text("keep me")
    with pytest.raises(InvalidInputError, match="already exists"):
        pki.write_new_file(target, b"other")
    assert target.read_text() == "keep me"
    with pytest.raises(InvalidInputError, match="neither an IP"):
        pki.init_ca(pki.PkiPaths(tmp_path / "h2"), "p", ["bad host!"], CLOCK)
    with pytest.raises(ConfigError, match="ztbridge ca init"):
        pki.load_ca_cert(pki.PkiPaths(tmp_path / "nothing"))
    with pytest.raises(InvalidInputError, match="name the certificate file"):
        pki.key_path_for(Path("ct01.key"))
