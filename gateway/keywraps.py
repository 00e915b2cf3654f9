"""Study key wraps, one per recipient: who can open which study key, kept in the index.

A study key is HPKE-wrapped once per recipient into ``key_wraps`` (docs/ledger.md, "Key wraps
per recipient"). Recipient names:

* ``"custodian"``: the hospital's recovery key. Always written, in the ingest transaction.
* ``"user:<address>"``: a registered user (a patient linked to the study's Patient ID, or a
  doctor it is shared with), named by its registry account address in lower-case hex
  (``user:0x…``, 40 hex digits). Why the address and not a portal account id: it is the
  user's identity on the chain too (one role for life, never reused), so a wrap, a record
  owner and a grant all name the same thing, and lower case keeps the name canonical without
  computing a checksum.

Why the index and not memory: the batch capsule (gateway/anchoring/batches.py) must carry
the study keys to the record owner whatever happened between ingest and sealing (a restart,
an idle eviction of the key cache). The gateway never holds the custodian's private key, so
the only form of a study key it can always reach is a wrap, and the owner's wrap is exactly
what the capsule needs.

Old homes: ``study_keys.custodian_wrap`` (written by every version) stays and is the fallback
for a key that has no ``custodian`` row here (rows written before this table existed). Nothing
is migrated: ``wraps_for`` reads both, so the two can never disagree about what exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import insert, select

from gateway import crypto
from gateway.clock import Clock
from gateway.errors import CryptoError, InvalidEnvelopeError, InvalidInputError
from gateway.index.database import Database, Tx
from gateway.index.models import key_wraps, study_keys
from gateway.keys import StudyKey, study_key_info

CUSTODIAN = "custodian"
USER_PREFIX = "user:"
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")

_INSERT_WRAP = insert(key_wraps)


class MissingKeyWrapError(CryptoError):
    """A recipient has no wrap of a study key it needs (not linked yet, or not shared)."""


def user_recipient(address: str) -> str:
    """The recipient name of the registry account ``address``: ``user:0x…`` in lower case."""
    if not _ADDRESS.fullmatch(address):
        raise InvalidInputError(f"not an account address: {address!r}")
    return USER_PREFIX + address.lower()


def recipient_address(recipient: str) -> str | None:
    """The account address a ``user:`` recipient names; None for the custodian."""
    if recipient.startswith(USER_PREFIX) and _ADDRESS.fullmatch(recipient[len(USER_PREFIX) :]):
        return recipient[len(USER_PREFIX) :]
    return None


@dataclass(frozen=True)
class Recipient:
    """Someone a study key is wrapped to: its recipient name and HPKE public key."""

    name: str
    kem: crypto.KemName
    public: bytes


class RecipientDirectory(Protocol):
    """Who, besides the custodian, gets a wrap of a new study key at ingest.

    The hook for linking a patient account to a Patient ID (the portal issue): called once per
    new study key, before the ingest transaction, with the study's Patient ID as received. It
    must be fast and must not write (it runs on the C-STORE path). The default knows nobody;
    ``gateway.accounts.links.LinkedRecipients`` is the real one.
    """

    def recipients_for(
        self, patient_id: str, issuer: str = "", study_uid: str = ""
    ) -> Sequence[Recipient]:
        """The recipients (never the custodian) of a new key of ``study_uid``, a study of
        this patient (``issuer``: the Issuer of Patient ID as received, empty if none)."""
        ...


class NoRecipients:
    """The default directory: no patient is linked to any Patient ID yet."""

    def recipients_for(
        self, patient_id: str, issuer: str = "", study_uid: str = ""
    ) -> Sequence[Recipient]:
        """Nobody."""
        return ()


NO_RECIPIENTS = NoRecipients()


@dataclass(frozen=True)
class StoredWrap:
    """One row of ``key_wraps`` (or a custodian wrap read from ``study_keys``)."""

    key_id: str
    recipient: str
    kem: str
    wrap: bytes


def new_key_rows(key: StudyKey, recipients: Iterable[Recipient], now: str) -> list[dict[str, Any]]:
    """The ``key_wraps`` rows of a fresh study key: the custodian's, then each recipient's.

    The custodian's wrap is the one ``StudyKeyCache`` already made (no second HPKE seal); a
    recipient named twice, or named ``custodian``, is written once.
    """
    rows = [_row(key.key_id, CUSTODIAN, key.kem, key.custodian_wrap, now)]
    seen = {CUSTODIAN}
    for r in recipients:
        if r.name in seen:
            continue
        seen.add(r.name)
        wrap = crypto.wrap(r.public, r.kem, key.key, study_key_info(key.key_id))
        rows.append(_row(key.key_id, r.name, r.kem, wrap, now))
    return rows


def insert_rows(conn: Tx, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write rows made by ``new_key_rows`` (inside the caller's transaction)."""
    for row in rows:
        conn.execute(_INSERT_WRAP, dict(row))


def _row(key_id: str, recipient: str, kem: str, wrap: bytes, now: str) -> dict[str, Any]:
    return {"key_id": key_id, "recipient": recipient, "kem": kem, "wrap": wrap, "created_at": now}


def wraps_for(conn: Any, key_ids: Sequence[str], recipient: str) -> dict[str, StoredWrap]:
    """``recipient``'s wraps of ``key_ids`` (key id -> wrap); keys it cannot open are absent.

    The one way wraps are read: for the custodian, a key with no ``key_wraps`` row (a home
    written before the table existed) falls back to ``study_keys.custodian_wrap``.
    """
    ids = sorted(set(key_ids))
    if not ids:
        return {}
    found = {
        r.key_id: StoredWrap(r.key_id, recipient, r.kem, bytes(r.wrap))
        for r in conn.execute(
            select(key_wraps.c.key_id, key_wraps.c.kem, key_wraps.c.wrap).where(
                key_wraps.c.recipient == recipient, key_wraps.c.key_id.in_(ids)
            )
        )
    }
    missing = [k for k in ids if k not in found]
    if recipient == CUSTODIAN and missing:
        for r in conn.execute(
            select(study_keys.c.key_id, study_keys.c.kem, study_keys.c.custodian_wrap).where(
                study_keys.c.key_id.in_(missing)
            )
        ):
            found[r.key_id] = StoredWrap(r.key_id, CUSTODIAN, r.kem, bytes(r.custodian_wrap))
    return found


def study_key_ids(conn: Any, study_uid: str) -> list[str]:
    """Every study key id of ``study_uid``, oldest first."""
    return [
        r.key_id
        for r in conn.execute(
            select(study_keys.c.key_id)
            .where(study_keys.c.study_uid == study_uid)
            .order_by(study_keys.c.created_at, study_keys.c.key_id)
        )
    ]


@dataclass(frozen=True)
class KeyHolder:
    """Someone who can open wraps right now: the custodian's unlocked pair, or a user's
    unlocked key (a patient adding a doctor). ``recipient`` names whose wraps ``pair`` opens."""

    recipient: str
    pair: crypto.KeyPair


def open_wrap(holder: KeyHolder, wrap: StoredWrap) -> bytes:
    """The study key in ``wrap``; CryptoError if the holder's key does not open it."""
    try:
        return crypto.unwrap(holder.pair, wrap.wrap, study_key_info(wrap.key_id))
    except InvalidEnvelopeError as e:
        raise CryptoError(
            f"the key of {holder.recipient} does not open its wrap of study key {wrap.key_id}"
        ) from e


def add_recipient(
    db: Database, study_uid: str, new: Recipient, holder: KeyHolder, clock: Clock
) -> int:
    """Wrap every key of ``study_uid`` to ``new`` too (linking a patient, sharing); returns
    how many wraps were added (keys it already had are left alone).

    The holder must have a wrap of every key: a study key nobody here can open cannot be
    given to anyone, and a partial grant would look complete. Raises MissingKeyWrapError then,
    before writing anything.
    """
    now = clock.now().isoformat()
    with db.read() as conn:
        ids = study_key_ids(conn, study_uid)
        held = wraps_for(conn, ids, holder.recipient)
        already = wraps_for(conn, ids, new.name)
    todo = [k for k in ids if k not in already]
    lacking = [k for k in todo if k not in held]
    if lacking:
        raise MissingKeyWrapError(
            f"{holder.recipient} holds no wrap of study key(s) {', '.join(lacking)} of study"
            f" {study_uid}; open them as the custodian instead"
        )
    rows = [
        _row(
            k,
            new.name,
            new.kem,
            crypto.wrap(new.public, new.kem, open_wrap(holder, held[k]), study_key_info(k)),
            now,
        )
        for k in todo
    ]
    if not rows:
        return 0
    with db.write() as conn:
        present = set(wraps_for(conn, ids, new.name))  # a concurrent add may have won
        fresh = [r for r in rows if r["key_id"] not in present]
        insert_rows(conn, fresh)
    return len(fresh)
