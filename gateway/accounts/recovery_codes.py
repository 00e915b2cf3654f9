"""Ten single-use recovery codes per enrollment: shown once, stored as SHA-256 only.

A code stands in for a TOTP code when the phone is lost. Why a plain hash and not argon2: each
code is 80 random bits (16 base32 characters), far beyond what any guessing could cover, so a
slow hash would add cost without adding safety (the same reasoning as for session ids).
Using one is a conditional UPDATE (``used_at IS NULL``): two concurrent uses, one winner.
"""

from __future__ import annotations

import base64
import hashlib
import secrets

from sqlalchemy import delete, insert, update

from gateway.index.database import Database, Tx
from gateway.index.models import recovery_codes

COUNT = 10
_CODE_BYTES = 10  # 80 bits -> 16 base32 characters


def _normal(code: str) -> str:
    return code.strip().replace("-", "").replace(" ", "").upper()


def code_hash(code: str) -> str:
    """The stored form of a code (dashes, spaces and case ignored)."""
    return hashlib.sha256(b"ztbridge recovery code\0" + _normal(code).encode()).hexdigest()


def new_codes() -> list[str]:
    """Ten fresh codes, ``XXXX-XXXX-XXXX-XXXX``."""
    out = []
    for _ in range(COUNT):
        raw = base64.b32encode(secrets.token_bytes(_CODE_BYTES)).decode()
        out.append("-".join(raw[i : i + 4] for i in range(0, 16, 4)))
    return out


def replace_codes(conn: Tx, user_id: int, codes: list[str], now: str) -> None:
    """Store ``codes`` as the account's only codes (in the caller's transaction)."""
    execute = conn.execute
    execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
    for c in codes:
        execute(
            insert(recovery_codes).values(
                code_hash=code_hash(c), user_id=user_id, created_at=now, used_at=None
            )
        )


def looks_like_code(text: str) -> bool:
    """Whether ``text`` has the shape of a recovery code (rather than a 6-digit TOTP code)."""
    return len(_normal(text)) == 16


def use_code(db: Database, user_id: int, code: str, now: str) -> bool:
    """Spend ``code`` if it is one of the account's unused codes; True for the one winner."""
    with db.write() as conn:
        result = conn.execute(
            update(recovery_codes)
            .where(
                recovery_codes.c.code_hash == code_hash(code),
                recovery_codes.c.user_id == user_id,
                recovery_codes.c.used_at.is_(None),
            )
            .values(used_at=now)
        )
        return int(result.rowcount) == 1
