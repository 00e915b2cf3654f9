"""The DICOM TLS server context (PS3.15 Annex B, BCP 195 profiles) and handshake diagnosis.

TLS 1.2 offers exactly the suites the BCP 195 profiles require (B.9 BCP 195, B.10
Non-downgrading BCP 195: ECDHE/DHE with RSA authentication and AES-GCM); TLS 1.3 uses
OpenSSL's TLS 1.3 suites (AES-GCM, ChaCha20-Poly1305), all permitted by RFC 9325. The server
picks the strongest suite the client offers (server preference, as BCP 195 recommends), no
compression, no renegotiation. A client certificate is *required* and must chain to the
gateway's CA: a peer without one never reaches the DICOM parser. Which device a certificate
belongs to is admission's check (``gateway.admission.check_tls_certificate``).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError
from gateway.pki import PkiPaths
from gateway.settings import TlsSettings

# RFC 7919's 2048-bit group (BCP 195 / RFC 9325 4.5: named FFDHE groups, at least 2048 bits).
FFDHE2048 = Path(__file__).with_name("ffdhe2048.pem")

BCP195_TLS12_CIPHERS = ":".join(
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-AES128-GCM-SHA256",
    )
)


def server_context(paths: PkiPaths, settings: TlsSettings) -> ssl.SSLContext:
    """The SSLContext for the TLS listener, from ``ztbridge ca init``'s files."""
    if not paths.exists():
        raise ConfigError(
            f"DICOM TLS needs a CA and server certificate in {paths.home}: run"
            " 'ztbridge ca init' (or set ZTBRIDGE_TLS__ENABLED=off)"
        )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if settings.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(BCP195_TLS12_CIPHERS)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        # Without DH parameters OpenSSL never selects a DHE suite, however it is listed: a
        # modality that offers only DHE-RSA (as BCP 195 allows) would find no suite in common.
        ctx.load_dh_params(str(FFDHE2048))
        ctx.load_verify_locations(cafile=str(paths.ca_cert))
        ctx.load_cert_chain(str(paths.server_cert), str(paths.server_key))
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cannot load the TLS certificates in {paths.home}: {e}") from e
    return ctx


@dataclass(frozen=True)
class HandshakeFailure:
    """Why a TLS handshake failed, as admission names it."""

    check: str  # "tls-client-certificate" (the peer's certificate) or "tls-handshake"
    reason: str
    about_certificate: bool


def diagnose(error: BaseException) -> HandshakeFailure:
    """Turn an ssl/socket error from a server-side handshake into a named refusal."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return HandshakeFailure(
            "tls-client-certificate",
            f"client certificate rejected: {error.verify_message} (not issued by this"
            " gateway's CA, or expired)",
            True,
        )
    if isinstance(error, ssl.SSLError):
        code = str(error.reason or "")
        if code == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return HandshakeFailure("tls-client-certificate", "no client certificate sent", True)
        if code in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNSUPPORTED_PROTOCOL"):
            return HandshakeFailure(
                "tls-handshake", f"not a supported TLS client ({code.lower()})", False
            )
        if code == "NO_SHARED_CIPHER":
            return HandshakeFailure(
                "tls-handshake", "no BCP 195 cipher suite in common with the client", False
            )
        return HandshakeFailure("tls-handshake", f"TLS error: {code or error}", False)
    if isinstance(error, TimeoutError):
        return HandshakeFailure("tls-handshake", "TLS handshake timed out", False)
    return HandshakeFailure(
        "tls-handshake", f"connection failed during TLS handshake: {error}", False
    )
