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
  ``sub`` must equal the registered subject if one is registered.

``check`` is a pure function of the requirement, the claim and the time: it returns None
when the identity is proven, else the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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


def _claims_problem(claims: dict[str, Any], req: JwtRequirement, now: datetime) -> str | None:
    t = now.timestamp()
    if claims.get("iss") != req.issuer:
        return f"token issuer {claims.get('iss')!r} is not {req.issuer!r}"
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if req.audience not in audiences:
        return f"token audience {aud!r} does not include {req.audience!r}"
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return "token has no expiry (exp)"
    if exp + LEEWAY_SECONDS <= t:
        return "token has expired"
    for name in ("nbf", "iat"):
        value = claims.get(name)
        if value is not None and (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or value - LEEWAY_SECONDS > t
        ):
            return f"token {name} is in the future"
    if req.subject is not None and claims.get("sub") != req.subject:
        return f"token subject {claims.get('sub')!r} is not {req.subject!r}"
    return None


def check(req: Requirement, claim: Claim | None, now: datetime) -> str | None:
    """None if ``claim`` proves ``req`` at ``now``; otherwise why not (for logs and audit)."""
    if claim is None:
        return f"no user identity sent; the device requires {describe(req)}"
    sent = TYPE_NAMES.get(claim.identity_type, f"type {claim.identity_type}")
    if isinstance(req, PasscodeRequirement):
        if claim.identity_type != PASSCODE:
            return f"user identity is {sent}; the device requires username+passcode"
        try:
            username = claim.primary.decode("utf-8")
        except UnicodeDecodeError:
            return "username is not UTF-8"
        if username != req.username:
            return f"unknown username {username!r}"
        passcode = (claim.secondary or b"").decode("utf-8", errors="replace")
        if not crypto.verify_passcode(req.passcode_hash, passcode):
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
    return _claims_problem(claims, req, now)
