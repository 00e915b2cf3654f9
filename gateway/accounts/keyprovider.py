"""Retrieve with a user's own key: a ``retrieve.KeyProvider`` over the user's ``key_wraps``.

A patient or doctor is served with the HPKE key unlocked at their login, opening only the
wraps made out to them (``user:0x…``): never the custodian's. A study key they hold no wrap
of (not theirs, not shared, or a share revoked since: the wrap is deleted) is
``KeyUnavailableError``, so even a wrong authorization decision could not decrypt it.
"""

from __future__ import annotations

from gateway import crypto
from gateway.accounts.errors import SessionError
from gateway.accounts.keys import UnlockedKeys
from gateway.accounts.sessions import SessionView
from gateway.errors import CryptoError, InvalidEnvelopeError, KeyUnavailableError
from gateway.index.database import Database
from gateway.keys import study_key_info
from gateway.keywraps import user_recipient, wraps_for


class UserKeyProvider:
    """Study keys opened from the user's own wraps with the user's unlocked HPKE key.

    Keys are cached for the provider's life; make one per request, so a revoke counts from
    the next request on.
    """

    def __init__(self, db: Database, keys: UnlockedKeys) -> None:
        self._db = db
        self._keys = keys
        self.recipient = user_recipient(keys.address)
        self._cache: dict[str, bytes] = {}

    def study_key(self, key_id: str) -> bytes:
        """The study key ``key_id``; KeyUnavailableError if it is not wrapped to this user."""
        found = self._cache.get(key_id)
        if found is not None:
            return found
        with self._db.read() as conn:
            wraps = wraps_for(conn, [key_id], self.recipient)
        if key_id not in wraps:
            raise KeyUnavailableError(f"study key {key_id} is not wrapped to this account")
        try:
            key = crypto.unwrap(self._keys.hpke_pair(), wraps[key_id].wrap, study_key_info(key_id))
        except (InvalidEnvelopeError, CryptoError) as e:
            raise KeyUnavailableError(f"study key {key_id} cannot be unwrapped") from e
        self._cache[key_id] = key
        return key


def key_provider(db: Database, view: SessionView) -> UserKeyProvider:
    """The key provider of a checked session or token (SessionError without its keys)."""
    if view.keys is None or not view.complete:
        raise SessionError("this session holds no unlocked keys; log in again")
    return UserKeyProvider(db, view.keys)
