"""One-time enrollment links: a random token, stored as its SHA-256, single use, 24 h.

A link is made when an account is created (``user add``, the first admin at ``up``) and when
it is recovered (``user recover``). The token is the only way in until a password is chosen,
so it also carries the account's private keys: they are sealed under a key derived from the
token (``keys.seal_with_token``) in the token's row, and re-sealed under the password when the
enrollment completes. Making a new link for an account voids the links it had.

Single use is a conditional UPDATE (``used_at IS NULL``): of two concurrent completions with
one token, exactly one wins.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update

from gateway.accounts.errors import EnrollmentError
from gateway.index.database import Database, Tx
from gateway.index.models import enrollment_tokens

ENROLL = "enroll"
RECOVER = "recover"


def token_hash(token: str) -> str:
    """How the index names a token (never the token itself)."""
    return hashlib.sha256(b"ztbridge enrollment token\0" + token.encode()).hexdigest()


def new_token() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class TokenRow:
    """A live enrollment token's row."""

    token_hash: str
    user_id: int
    purpose: str
    keys_sealed: bytes
    totp_secret_sealed: bytes | None
    expires_at: str


def issue(
    conn: Tx,
    user_id: int,
    purpose: str,
    keys_sealed: bytes,
    token: str,
    now: datetime,
    hours: float,
) -> None:
    """Store ``token`` for ``user_id`` (in the caller's transaction), voiding older links."""
    conn.execute(delete(enrollment_tokens).where(enrollment_tokens.c.user_id == user_id))
    conn.execute(
        insert(enrollment_tokens).values(
            token_hash=token_hash(token),
            user_id=user_id,
            purpose=purpose,
            keys_sealed=keys_sealed,
            totp_secret_sealed=None,
            created_at=now.isoformat(),
            expires_at=(now + timedelta(hours=hours)).isoformat(),
            used_at=None,
        )
    )


def find(db: Database, token: str, now: datetime) -> TokenRow:
    """The live token; EnrollmentError if unknown, used or expired (one message for all)."""
    with db.read() as conn:
        row = conn.execute(
            select(enrollment_tokens).where(enrollment_tokens.c.token_hash == token_hash(token))
        ).first()
    if row is None or row.used_at is not None or now.isoformat() >= row.expires_at:
        raise EnrollmentError(
            "this enrollment link is unknown, already used or expired; ask an administrator"
            " for a new one"
        )
    return TokenRow(
        row.token_hash,
        int(row.user_id),
        row.purpose,
        bytes(row.keys_sealed),
        None if row.totp_secret_sealed is None else bytes(row.totp_secret_sealed),
        row.expires_at,
    )


def set_pending_secret(db: Database, token: str, sealed_secret: bytes) -> bool:
    """Keep the TOTP secret offered on the enrollment page with the token (first offer wins,
    so reloading the page shows the same secret); True if this call stored it."""
    with db.write() as conn:
        result = conn.execute(
            update(enrollment_tokens)
            .where(
                enrollment_tokens.c.token_hash == token_hash(token),
                enrollment_tokens.c.totp_secret_sealed.is_(None),
            )
            .values(totp_secret_sealed=sealed_secret)
        )
        return int(result.rowcount) == 1


def spend(conn: Tx, token: str, now: datetime) -> bool:
    """Mark the token used (in the caller's transaction); True for the one winner."""
    result = conn.execute(
        update(enrollment_tokens)
        .where(
            enrollment_tokens.c.token_hash == token_hash(token),
            enrollment_tokens.c.used_at.is_(None),
            enrollment_tokens.c.expires_at > now.isoformat(),
        )
        .values(used_at=now.isoformat())
    )
    return int(result.rowcount) == 1
