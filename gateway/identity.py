"""DICOM User Identity Negotiation (PS3.7 D.3.3.7): what a device must prove, and the check.

A device may require one of two kinds of identity in its A-ASSOCIATE-RQ:

* ``passcode`` — User-Identity-Type 2, username + passcode. Only an argon2id hash of the
  passcode is stored. (Type 1, a bare username, proves nothing and is never enough.)
* ``jwt`` — User-Identity-Type 5, a JSON Web Token signed by an issuer the hospital trusts
  (its identity provider, or the modality itself). We store only the issuer's *public* key
  (Ed25519 → EdDSA, or P-256 → ES256), so a copy of our database cannot mint tokens —
  which a shared HS256 secret would allow. The token must carry ``iss`` equal to the
  registered issuer, ``aud`` containing the registered audience (by default our AE title),
  ``exp`` in the future and, if present, ``nbf``/``iat`` not in the future;
  ``sub`` must equal the registered subject (by default the device's AE title, so one
  issuer's token for one modality cannot open associations for another). Times must be
  finite numbers (the JSON parser refuses NaN/Infinity and numbers that overflow), and
  ``exp`` may lie at most ``tls.max_jwt_validity_days`` ahead. The signature is checked by
  ``gateway.jws`` (joserfc), the claims by joserfc's ``JWTClaimsRegistry`` with our clock.

The leeway (``tls.jwt_leeway_seconds``, 60 by default) allows for the issuer's clock and
ours disagreeing, alike for ``exp``, ``nbf`` and ``iat`` (RFC 7519 4.1.4: "usually no more
than a few minutes"): a token that expired less than the leeway ago is still accepted, and
one dated up to the leeway ahead of our clock is not yet refused. 60 s is what posture
reports are allowed ahead (``posture.max_future_seconds``) and what identity providers
commonly default to; modalities' clocks are often set by hand. 0 holds every time exactly.

``check`` is a pure function of the requirement, the claim and the time: it returns None
when the identity is proven, else the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from joserfc.errors import ClaimError, ExpiredTokenError
from joserfc.jwt import JWTClaimsRegistry

from gateway import crypto, jws
from gateway.errors import CryptoError, InvalidInputError

PASSCODE = 2
JWT = 5
TYPE_NAMES = {1: "username", 2: "username+passcode", 3: "Kerberos", 4: "SAML", 5: "JWT"}
LEEWAY_SECONDS = 60
"""The default of ``tls.jwt_leeway_seconds`` (see the module's docstring)."""


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


def _claim_refusal(e: ClaimError, claims: dict[str, Any], req: JwtRequirement) -> str:
    """Our wording for joserfc's refusal of a claim (logs, audit and tests read it)."""
    names = e.claim.split(",")  # a MissingClaimError names every missing claim
    name = next((n for n in ("iss", "aud", "exp", "sub") if n in names), names[0])
    if isinstance(e, ExpiredTokenError):
        return "token has expired"
    if name == "iss":
        return f"token issuer {claims.get('iss')!r} is not {req.issuer!r}"
    if name == "aud":
        return f"token audience {claims.get('aud')!r} does not include {req.audience!r}"
    if name == "exp":
        return "token has no expiry (exp) that is a finite number"
    if name == "sub":
        return f"token subject {claims.get('sub')!r} is not {req.subject!r}"
    if name in ("nbf", "iat"):
        if _number(claims.get(name)) is None:
            return f"token {name} is not a finite number"
        return f"token {name} is in the future"
    return f"token claim {name!r} refused: {e.description}"


def _claims_problem(
    claims: dict[str, Any],
    req: JwtRequirement,
    now: datetime,
    max_validity: timedelta | None,
    leeway: int,
) -> str | None:
    t = now.timestamp()
    options: dict[str, Any] = {
        "iss": {"essential": True, "value": req.issuer},
        "aud": {"essential": True, "value": req.audience},
        "exp": {"essential": True},
    }
    if req.subject is not None:
        options["sub"] = {"essential": True, "value": req.subject}
    registry = JWTClaimsRegistry(now=math.floor(t), leeway=leeway, **options)
    try:
        registry.validate(claims)
    except ClaimError as e:
        return _claim_refusal(e, claims, req)
    exp = _number(claims.get("exp"))
    assert exp is not None  # essential, and a NumericDate: the registry checked it
    if max_validity is not None and exp - t > max_validity.total_seconds() + leeway:
        return (
            f"token is valid for {int((exp - t) // 86400)} more days, longer than the"
            f" {max_validity.days} days accepted (tls.max_jwt_validity_days)"
        )
    return None


def check(
    req: Requirement,
    claim: Claim | None,
    now: datetime,
    max_validity: timedelta | None = None,
    leeway: int = LEEWAY_SECONDS,
) -> str | None:
    """None if ``claim`` proves ``req`` at ``now``; otherwise why not (for logs and audit).

    ``max_validity``: a JWT whose ``exp`` lies further ahead than this is refused (a token
    that practically never expires is a standing credential). ``leeway``: seconds of clock
    disagreement allowed for ``exp``, ``nbf`` and ``iat`` (``tls.jwt_leeway_seconds``).
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
        claims = jws.verify(token, jws.load_issuer_key(req.public_key_pem))
    except UnicodeDecodeError:
        return "token is not ASCII"
    except (CryptoError, InvalidInputError) as e:
        return str(e)
    return _claims_problem(claims, req, now, max_validity, leeway)
