"""TOTP (RFC 6238) with pyotp: ±``window`` time steps, and no code accepted twice.

RFC 6238 5.2: "the verifier MUST NOT accept the second attempt of the OTP after the successful
validation has been issued for the first OTP". pyotp's ``verify_and_get_timecode`` gives the
time step a code matched; it is accepted only if that step is later than the last one
accepted for the account, and the acceptance itself is one conditional UPDATE
(``... SET totp_last_step = :step WHERE id = :id AND totp_last_step < :step``), so of two
concurrent submissions of one code (two threads, two gateway processes on PostgreSQL) exactly
one changes the row and wins; the other sees no row changed and is refused.

The secret is 160 random bits (RFC 4226's recommended length), base32 for authenticator apps.
It is stored sealed under the index key, and shown only at enrollment (text and QR code).
"""

from __future__ import annotations

from datetime import datetime

import pyotp
from pyotp.exceptions import OTPVerificationError
from sqlalchemy import update

from gateway.index.database import Database
from gateway.index.models import users

STEP_SECONDS = 30
DIGITS = 6
SECRET_BYTES = 20


def new_secret() -> str:
    """A fresh base32 TOTP secret (160 bits)."""
    return pyotp.random_base32(length=32)


def provisioning_uri(secret: str, username: str, issuer: str) -> str:
    """The otpauth:// URI authenticator apps read from the QR code."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=issuer)


def qr_svg(uri: str) -> str:
    """The URI as an inline SVG QR code (segno), for the enrollment page."""
    import segno

    svg: str = segno.make(uri, error="m").svg_inline(scale=4)
    return svg


def matching_step(secret: str, code: str, now: datetime, window: int) -> int | None:
    """The time step ``code`` is valid for within ±``window`` steps of ``now``; None if none."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    try:
        return int(totp.verify_and_get_timecode(code, for_time=now, valid_window=window))
    except (OTPVerificationError, ValueError):
        return None


def accept_step(db: Database, user_id: int, step: int) -> bool:
    """Record ``step`` as the account's last accepted step, only if it is later than the one
    stored; True for the one caller that moved it (the race-safe core of replay refusal)."""
    with db.write() as conn:
        result = conn.execute(
            update(users)
            .where(users.c.id == user_id, users.c.totp_last_step < step)
            .values(totp_last_step=step)
        )
        return int(result.rowcount) == 1


def code_at(secret: str, when: datetime) -> str:
    """The code for ``when`` (provisioning and tests; never logged)."""
    return pyotp.TOTP(secret).at(when)
