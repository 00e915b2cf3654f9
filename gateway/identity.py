"""DICOM User Identity Negotiation (PS3.7 D.3.3.7): what a device must prove, and the check.

A device may require one of two kinds of identity in its A-ASSOCIATE-RQ:

* ``passcode`` — User-Identity-Type 2, username + passcode. Only an argon2id hash of the
  passcode is stored. (Type 1, a bare username, proves nothing and is never enough.)
* ``jwt`` — User-Identity-Type 5, a JSON Web Token signed by an issuer the hospital trusts
  (its identity provider, or the modality itself). We store only the issuer's *public* key
  (Ed25519 → EdDSA, or P-256 → ES256), so a copy of our database cannot mint tokens —
  which a shared HS256 secret would allow. The token must carry ``iss`` equal to the
  registered issuer, ``aud`` containing the registered audience (by default our AE title),
  ``exp`` in the future and, if present, ``nbf``/``iat`` not in the future (60 s leeway);
  ``sub`` must equal the registered subject (by default the device's AE title, so one
  issuer's token for one modality cannot open associations for another). Times must be
  finite numbers (the JSON parser refuses NaN/Infinity and numbers that overflow), and
  ``exp`` may lie at most ``tls.max_jwt_validity_days`` ahead.

``check`` is a pure function of the requirement, the claim and the time: it returns None
when the identity is proven, else the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from gateway import crypto
from gateway.errors import CryptoError, InvalidInputError

PASSCODE = 2
JWT = 5
TYPE_NAMES = {1: "username", 2: "username+passcode", 3: "Kerberos", 4: "SAML", 5: "JWT"}
LEEWAY_SECONDS = 60


@dataclass(frozen=True)
class PasscodeRequirement:
    """Username + passcode (type 2)."""

    username: str
    passcode_hash: str
    kind: Literal["passcode"] = "passcode"


@dataclass(frozen=True)
class JwtRequirement:
    """A JSON Web Token (type 5) from a registered issuer."""

    issuer: str
    audience: str
    public_key_pem: str
    subject: str | None = None
    kind: Literal["jwt"] = "jwt"


Requirement = PasscodeRequirement | JwtRequirement


@dataclass(frozen=True)
class Claim:
    """The User Identity sub-item of an A-ASSOCIATE-RQ, as received."""

    identity_type: int
    primary: bytes
    secondary: bytes | None
    wants_response: bool


def describe(req: Requirement) -> str:
    """How a requirement reads in ``device list`` and in refusals."""
    if isinstance(req, PasscodeRequirement):
        return f"passcode (user {req.username!r})"
    return f"JWT from {req.issuer!r}"


def _number(value: Any) -> float | None:
    """A JSON NumericDate (RFC 7519 2): an int or a finite float; anything else is None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _claims_problem(
    claims: dict[str, Any], req: JwtRequirement, now: datetime, max_validity: timedelta | None
) -> str | None:
    t = now.timestamp()
    if claims.get("iss") != req.issuer:
        return f"token issuer {claims.get('iss')!r} is not {req.issuer!r}"
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if req.audience not in audiences:
        return f"token audience {aud!r} does not include {req.audience!r}"
    exp = _number(claims.get("exp"))
    if exp is None:
        return "token has no expiry (exp) that is a finite number"
    if exp + LEEWAY_SECONDS <= t:
        return "token has expired"
    if max_validity is not None and exp - t > max_validity.total_seconds() + LEEWAY_SECONDS:
        return (
            f"token is valid for {int((exp - t) // 86400)} more days, longer than the"
            f" {max_validity.days} days accepted (tls.max_jwt_validity_days)"
        )
    for name in ("nbf", "iat"):
        if name not in claims:
            continue
        value = _number(claims[name])
        if value is None:
            return f"token {name} is not a finite number"
        if value - LEEWAY_SECONDS > t:
            return f"token {name} is in the future"
    if req.subject is not None and claims.get("sub") != req.subject:
        return f"token subject {claims.get('sub')!r} is not {req.subject!r}"
    return None


def check(
    req: Requirement, claim: Claim | None, now: datetime, max_validity: timedelta | None = None
) -> str | None:
    """None if ``claim`` proves ``req`` at ``now``; otherwise why not (for logs and audit).

    ``max_validity``: a JWT whose ``exp`` lies further ahead than this is refused (a token
    that practically never expires is a standing credential).
    """
    if claim is None:
        return f"no user identity sent; the device requires {describe(req)}"
    sent = TYPE_NAMES.get(claim.identity_type, f"type {claim.identity_type}")
    if isinstance(req, PasscodeRequirement):
        if claim.identity_type != PASSCODE:
            return f"user identity is {sent}; the device requires username+passcode"
        # argon2 runs whatever the username, so the time taken does not tell a peer whether
        # it guessed the username; the passcode is compared as the bytes sent (a lenient
        # decoding would make different invalid byte strings equal).
        matches = crypto.verify_passcode(req.passcode_hash, claim.secondary or b"")
        try:
            username = claim.primary.decode("utf-8")
        except UnicodeDecodeError:
            return "username is not UTF-8"
        if username != req.username:
            return f"unknown username {username!r}"
        if not matches:
            return f"wrong passcode for user {username!r}"
        return None
    if claim.identity_type != JWT:
        return f"user identity is {sent}; the device requires a JWT"
    try:
        token = claim.primary.decode("ascii").strip()
        claims = crypto.verify_jws(token, crypto.load_jwt_key(req.public_key_pem))
    except UnicodeDecodeError:
        return "token is not ASCII"
    except (CryptoError, InvalidInputError) as e:
        return str(e)
    return _claims_problem(claims, req, now, max_validity)
