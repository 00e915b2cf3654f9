"""Issuer-signed JSON Web Tokens (DICOM User Identity type 5): the key and the signature.

joserfc, a maintained implementation of the JOSE RFCs, checks the signature and holds the
algorithm to an allow-list taken from the registered key, never from the token header: an
Ed25519 key verifies ``EdDSA`` (and RFC 9864's ``Ed25519``), a P-256 key ``ES256``; ``none``,
``HS256`` with the public key as secret and every other algorithm are refused outright.

What stays here is the hygiene joserfc leaves to its caller, applied before it sees the
token: a size cap; strict unpadded base64url (RFC 7515 2: one text form per byte string,
no padding, no stray bits in the last character; joserfc's decoder is lenient); strict JSON
for header and payload (``crypto.strict_json``: no NaN/Infinity, no number overflowing to
infinity, no duplicate member names, at most 32 deep, measured before parsing); and no
``crit`` extension at all (joserfc understands ``b64``, which would change what was signed).
The claims (issuer, audience, subject, times) are policy, checked by ``gateway.identity``.
"""

from __future__ import annotations

import base64
import binascii
import re
import warnings
from dataclasses import dataclass
from typing import Any

from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError, SecurityWarning, UnsupportedAlgorithmError
from joserfc.jwk import ECKey, OKPKey

from gateway.crypto import strict_json
from gateway.errors import CryptoError, InvalidInputError

MAX_TOKEN_BYTES = 8192

# RFC 9864 deprecates "EdDSA" for "Ed25519"; identity providers and DCMTK's users still sign
# "EdDSA", which names the same algorithm for an Ed25519 key. Accepted on purpose, so
# joserfc's warning about it would only repeat itself in the log at every association.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)


@dataclass(frozen=True)
class IssuerKey:
    """A token issuer's public key and the JWS algorithms it may be used with."""

    algorithms: tuple[str, ...]
    key: OKPKey | ECKey

    @property
    def alg(self) -> str:
        """The algorithm's name as registered (the first of ``algorithms``)."""
        return self.algorithms[0]


def load_issuer_key(pem: str) -> IssuerKey:
    """An issuer public key (PEM SubjectPublicKeyInfo): Ed25519 → EdDSA, P-256 → ES256.

    InvalidInputError for anything else: another curve, an RSA key, a private key (we keep
    only public keys, so a copy of our database cannot mint tokens), or no PEM at all.
    """
    if "PRIVATE KEY" in pem:
        raise InvalidInputError("not a PEM public key ('-----BEGIN PUBLIC KEY-----')")
    for kind in (OKPKey, ECKey):
        try:
            key = kind.import_key(pem)
        except JoseError:  # a PEM key of another type
            continue
        except (ValueError, TypeError) as e:
            raise InvalidInputError("not a PEM public key ('-----BEGIN PUBLIC KEY-----')") from e
        if key.is_private:
            raise InvalidInputError("not a PEM public key ('-----BEGIN PUBLIC KEY-----')")
        if isinstance(key, OKPKey) and key.curve_name == "Ed25519":
            return IssuerKey(("EdDSA", "Ed25519"), key)
        if isinstance(key, ECKey) and key.curve_name == "P-256":
            return IssuerKey(("ES256",), key)
        break
    raise InvalidInputError("JWT issuer key must be Ed25519 (EdDSA) or EC P-256 (ES256)")


_B64URL = re.compile(r"[A-Za-z0-9_-]+")


def _b64url(part: str) -> bytes:
    """Strict unpadded base64url: ASCII alphabet only, no padding, no length that no byte
    string encodes to, and no stray bits in the last character."""
    if not part or len(part) % 4 == 1 or not _B64URL.fullmatch(part):
        raise CryptoError("token is not base64url")
    try:
        data = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError) as e:
        raise CryptoError("token is not base64url") from e
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode() != part:
        raise CryptoError("token is not canonical base64url (stray bits in its last character)")
    return data


def verify(token: str, key: IssuerKey) -> dict[str, Any]:
    """Verify a compact JWS with ``key`` and return its JSON claims; CryptoError if not valid."""
    if len(token) > MAX_TOKEN_BYTES:
        raise CryptoError(f"token longer than {MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise CryptoError("token is not a compact JWS (header.payload.signature)")
    header_bytes, claims_bytes, _ = (_b64url(p) for p in parts)
    try:
        header = strict_json(header_bytes)
        claims = strict_json(claims_bytes)
    except ValueError as e:  # UnicodeDecodeError too
        raise CryptoError(f"token header or payload is not JSON: {e}") from e
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise CryptoError("token header and payload must be JSON objects")
    if header.get("alg") not in key.algorithms:
        raise CryptoError(f"token algorithm {header.get('alg')!r} is not the issuer's {key.alg}")
    if "crit" in header:
        raise CryptoError("token has critical header extensions we do not understand")
    try:
        jws.deserialize_compact(token, key.key, algorithms=list(key.algorithms))
    except BadSignatureError as e:
        raise CryptoError("token signature does not verify with the issuer's key") from e
    except UnsupportedAlgorithmError as e:  # checked above; kept so it can never pass
        raise CryptoError(f"token algorithm {header.get('alg')!r} is not the issuer's") from e
    except JoseError as e:
        raise CryptoError(f"token refused: {e.description or e}") from e
    return claims
