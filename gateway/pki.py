"""The gateway's own certificate authority, for DICOM TLS with client certificates.

``ztbridge ca init`` creates a CA (RSA-3072, 10 years) and the gateway's server certificate;
``ztbridge device add --cert-out`` and ``ztbridge device cert`` issue device (client)
certificates. Admission trusts a certificate only if it chains to this CA *and* its SHA-256
fingerprint is recorded for the calling device, so removing a fingerprint revokes it without
a CRL, and a certificate can never be replayed for another AE title.

Files, all owner-only:

* ``keys/ca-key.json`` — the CA private key, sealed under the CA passphrase (argon2id +
  AES-256-GCM). Issuing is rare and done by a person, so the key is never needed unattended;
  if the gateway host is compromised, the attacker still cannot mint device identities.
  It is a passphrase of its own, not the custodian's: the custodian passphrase unlocks every
  patient's images and belongs to the recovery ceremony, while enrolling modalities is the
  PACS administrator's daily job; neither role should have to hold the other's secret.
* ``keys/server-key.pem`` — the server's TLS key, unencrypted: ``ztbridge up`` must start
  unattended. It can only impersonate this server, and is replaced by ``ca server-cert``.
* ``tls/ca.pem``, ``tls/server.pem`` — the public certificates.

Key generation and signing live in ``gateway.crypto``; this module only builds X.509.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway import crypto, durable
from gateway.clock import Clock
from gateway.errors import ConfigError, InvalidEnvelopeError, InvalidInputError

CA_KEY_FILE = "ca-key.json"
SERVER_KEY_FILE = "server-key.pem"
CA_CERT_FILE = "ca.pem"
SERVER_CERT_FILE = "server.pem"

CA_DAYS = 3650
LEAF_DAYS = 730
_BACKDATE = timedelta(minutes=5)  # tolerate modality clocks a little behind ours


@dataclass(frozen=True)
class PkiPaths:
    """Where the CA and server files of one data folder live."""

    home: Path

    @property
    def ca_key(self) -> Path:
        return self.home / "keys" / CA_KEY_FILE

    @property
    def server_key(self) -> Path:
        return self.home / "keys" / SERVER_KEY_FILE

    @property
    def ca_cert(self) -> Path:
        return self.home / "tls" / CA_CERT_FILE

    @property
    def server_cert(self) -> Path:
        return self.home / "tls" / SERVER_CERT_FILE

    def exists(self) -> bool:
        """Whether ``ca init`` has run here (CA and server certificate present)."""
        return all(
            p.is_file() for p in (self.ca_key, self.ca_cert, self.server_key, self.server_cert)
        )


@dataclass(frozen=True)
class Issued:
    """A freshly issued certificate with its private key (PEM) and what admission records."""

    cert_pem: bytes
    key_pem: bytes
    fingerprint: str
    serial: str
    not_after: datetime


@dataclass(frozen=True)
class Authority:
    """An unlocked CA: its certificate and signing key (held only for one CLI command)."""

    cert: x509.Certificate
    key: crypto.CertKey


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate, lowercase hex: how devices' certificates are recorded."""
    return hashlib.sha256(der).hexdigest()


def write_new_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a file that must not exist yet, owner-only, durably.

    A thin alias of ``durable.write_new_file``: refuses to overwrite, since a certificate or
    key written over another is a silent revocation (or a key mix-up) on a modality.
    """
    durable.write_new_file(path, data)


def default_server_names() -> list[str]:
    """Names a modality may use for this host: its host names, localhost and loopback."""
    names = [socket.gethostname(), socket.getfqdn(), "localhost", "127.0.0.1", "::1"]
    return list(dict.fromkeys(n for n in names if n))


def _general_names(hosts: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for host in hosts:
        host = host.strip()
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        label = host.rstrip(".")
        if (
            not label
            or any(not (c.isalnum() or c in "-.*") for c in label)
            or label.isascii() is False
        ):
            raise InvalidInputError(f"{host!r} is neither an IP address nor a DNS host name")
        out.append(x509.DNSName(label))
    if not out:
        raise InvalidInputError("give at least one host name or address (--host)")
    return out


def _serial() -> int:
    return secrets.randbits(127) | 1  # positive, non-zero, unpredictable (RFC 5280: <= 20 bytes)


def _leaf(
    authority: Authority,
    subject: x509.Name,
    now: datetime,
    days: int,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName],
) -> Issued:
    if not 1 <= days <= 3650:
        raise InvalidInputError("certificate lifetime must be 1 to 3650 days")
    key = crypto.new_cert_key(crypto.LEAF_KEY_BITS)
    not_after = min(now + timedelta(days=days), authority.cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(authority.cert.subject)
        .public_key(key.public)
        .serial_number(_serial())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=True,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = crypto.sign_certificate(builder, authority.key)
    return Issued(
        cert_pem=crypto.certificate_pem(cert),
        key_pem=crypto.private_key_pem(key),
        fingerprint=fingerprint(crypto.certificate_der(cert)),
        serial=f"{cert.serial_number:x}",
        not_after=cert.not_valid_after_utc,
    )


def init_ca(
    paths: PkiPaths, passphrase: str, hosts: list[str], clock: Clock, name: str = "ztbridge"
) -> Issued:
    """Create the CA and the server certificate; refuses if a CA exists here already."""
    if paths.ca_key.exists() or paths.ca_cert.exists():
        raise InvalidInputError(
            f"a CA already exists in {paths.home} ({paths.ca_cert}); every issued certificate"
            " depends on it. To re-issue only the server certificate: 'ztbridge ca server-cert'"
        )
    if not passphrase:
        raise InvalidInputError("the CA passphrase cannot be empty")
    sans = _general_names(hosts)
    now = clock.now()
    key = crypto.new_cert_key(crypto.CA_KEY_BITS)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{name} DICOM CA"),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public)
        .serial_number(_serial())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public), critical=False)
    )
    cert = crypto.sign_certificate(builder, key)
    write_new_file(paths.ca_key, crypto.protect_cert_key(key, passphrase, "ca").encode())
    write_new_file(paths.ca_cert, crypto.certificate_pem(cert))
    return _write_server(paths, Authority(cert, key), sans, now)


def _server_issue(authority: Authority, sans: list[x509.GeneralName], now: datetime) -> Issued:
    first = next((str(n.value) for n in sans if isinstance(n, x509.DNSName)), str(sans[0].value))
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ztbridge"),
            x509.NameAttribute(NameOID.COMMON_NAME, first[:64]),
        ]
    )
    return _leaf(authority, subject, now, LEAF_DAYS, ExtendedKeyUsageOID.SERVER_AUTH, sans)


def _write_server(
    paths: PkiPaths, authority: Authority, sans: list[x509.GeneralName], now: datetime
) -> Issued:
    issued = _server_issue(authority, sans, now)
    # Replace atomically: a running gateway reads these at start, never half-written files.
    for target, data in ((paths.server_key, issued.key_pem), (paths.server_cert, issued.cert_pem)):
        durable.replace_file(target, data)
    return issued


def reissue_server_cert(
    paths: PkiPaths, authority: Authority, hosts: list[str], clock: Clock
) -> Issued:
    """A new server key and certificate (new host names, or before the old one expires)."""
    return _write_server(paths, authority, _general_names(hosts), clock.now())


def load_ca_cert(paths: PkiPaths) -> x509.Certificate:
    """The CA certificate (public), or a ConfigError naming ``ztbridge ca init``."""
    try:
        return x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    except FileNotFoundError as e:
        raise ConfigError(
            f"no CA in {paths.home}: run 'ztbridge ca init' first (it creates the CA that"
            " issues device certificates, and the server certificate for DICOM TLS)"
        ) from e
    except ValueError as e:
        raise ConfigError(f"{paths.ca_cert} is not a PEM certificate") from e


def unlock_ca(paths: PkiPaths, passphrase: str | None) -> Authority:
    """The CA with its private key, for issuing. Needs the CA passphrase."""
    cert = load_ca_cert(paths)
    if not passphrase:
        raise ConfigError("the CA passphrase is needed: set ZTBRIDGE_CA_PASSPHRASE")
    try:
        key = crypto.unlock_cert_key(paths.ca_key.read_text(), passphrase)
    except FileNotFoundError as e:
        raise ConfigError(f"the CA key {paths.ca_key} is missing") from e
    except InvalidEnvelopeError as e:
        raise ConfigError("the CA passphrase is wrong (ZTBRIDGE_CA_PASSPHRASE)") from e
    return Authority(cert, key)


def issue_device_cert(
    authority: Authority, ae_title: str, clock: Clock, days: int = LEAF_DAYS
) -> Issued:
    """A client certificate for a modality: CN = its AE title, extended key usage clientAuth.

    The CN is informational; what admission checks is the fingerprint recorded for the
    device, so the certificate cannot be used under another AE title.
    """
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ztbridge devices"),
            x509.NameAttribute(NameOID.COMMON_NAME, ae_title),
        ]
    )
    return _leaf(authority, subject, clock.now(), days, ExtendedKeyUsageOID.CLIENT_AUTH, [])


def key_path_for(cert_out: Path) -> Path:
    """Where the private key goes beside ``--cert-out FILE``: ``FILE`` with suffix ``.key``."""
    if cert_out.suffix == ".key":
        raise InvalidInputError(f"--cert-out {cert_out}: name the certificate file, e.g. ct01.pem")
    return cert_out.with_suffix(".key")


PORTAL_KEY_FILE = "portal-key.pem"
PORTAL_CERT_FILE = "portal.pem"


def self_signed_paths(home: Path) -> tuple[Path, Path]:
    """Where the portal's self-signed certificate and its key live (made at first start)."""
    return home / "tls" / PORTAL_CERT_FILE, home / "keys" / PORTAL_KEY_FILE


def portal_certificate(
    home: Path, cert_file: Path | None, key_file: Path | None
) -> tuple[Path, Path] | None:
    """The certificate and key the portal serves HTTPS with, or None (none yet).

    ``portal.tls_cert_file``/``tls_key_file`` when set; otherwise the gateway's own server
    certificate from ``ztbridge ca init``, so one command gives DICOM TLS and the portal the
    same identity, and agents trust the same CA file (``ztbridge agent --ca tls/ca.pem``);
    otherwise the self-signed one a first ``ztbridge up`` made (``ensure_self_signed``).
    """
    if cert_file is not None and key_file is not None:
        return cert_file, key_file
    if cert_file is not None or key_file is not None:
        return None
    paths = PkiPaths(home)
    if paths.exists():
        return paths.server_cert, paths.server_key
    cert, key = self_signed_paths(home)
    if cert.is_file() and key.is_file():
        return cert, key
    return None


def ensure_self_signed(home: Path, hosts: list[str], clock: Clock) -> tuple[Path, Path, bool]:
    """The portal's self-signed certificate, made now if this home has none: RSA-2048,
    SHA-256, two years, the host names and addresses of ``hosts`` as SANs. Kept in the home
    (key owner-only) so its fingerprint stays the same across restarts: users compare it
    once, then their browser remembers it. Returns (certificate, key, made now)."""
    cert_path, key_path = self_signed_paths(home)
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path, False
    sans = _general_names(hosts)
    now = clock.now()
    key = crypto.new_cert_key(crypto.LEAF_KEY_BITS)
    first = next((str(n.value) for n in sans if isinstance(n, x509.DNSName)), str(sans[0].value))
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ztbridge portal (self-signed)"),
            x509.NameAttribute(NameOID.COMMON_NAME, first[:64]),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public)
        .serial_number(_serial())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=LEAF_DAYS))
        # What ``openssl req -x509`` makes: its own trust anchor, so an agent or a browser
        # can be given this file as the one certificate to trust.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=True,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
    )
    cert = crypto.sign_certificate(builder, key)
    if key_path.exists():  # a key without its certificate (a crash between the two writes)
        key_path.unlink()
    write_new_file(key_path, crypto.private_key_pem(key))
    if cert_path.exists():
        cert_path.unlink()
    write_new_file(cert_path, crypto.certificate_pem(cert))
    return cert_path, key_path, True


def certificate_fingerprint(cert_file: Path) -> str:
    """SHA-256 of the (first) certificate in a PEM file, as ``AB:CD:...``: the form browsers
    and ``openssl x509 -fingerprint -sha256`` show. ConfigError if it is not readable PEM."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except OSError as e:
        raise ConfigError(f"cannot read the certificate {cert_file}: {e.strerror}") from e
    except ValueError as e:
        raise ConfigError(f"{cert_file} is not a PEM certificate") from e
    digest = fingerprint(crypto.certificate_der(cert)).upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
