"""Share and revoke: a patient gives a doctor a study, on-chain and in the index, and takes
it back.

Share (the owning patient only, as ``access.decide`` rules; a doctor cannot pass a study on):

1. every study key of the study is unwrapped with the patient's unlocked HPKE key and
   wrapped to the doctor's (``keywraps.add_recipient``: new ``key_wraps`` rows);
2. ``grant`` is sent signed with the patient's own Ethereum key (the gateway only relays
   it), with a capsule sealed to the doctor: the doctor's wraps of the study keys;
3. the ``shares`` row (with the expiry, if any) makes it visible to ``decide`` at the next
   request. A grant that fails on-chain takes the doctor's new wraps back.

Revoke: the ``shares`` row and the doctor's wraps are deleted first (the index then refuses
at once, and the doctor's key provider has nothing left to open), then ``revoke`` is sent
signed by the patient. Idempotent: a revoke whose transaction failed is finished by running
it again (the chain is asked whether the grant is still active).

A share's expiry is enforced by ``decide`` (``access.grant_is_live``) from the moment it
passes; ``expired_shares`` lists them so a periodic job can revoke them on-chain too.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import delete, insert, select

from gateway import crypto
from gateway.access import Action, Decision, Role, decide
from gateway.accounts.facts import facts_for
from gateway.accounts.sessions import SessionView
from gateway.audit import AuditEvent, AuditLog
from gateway.clock import Clock
from gateway.errors import InvalidInputError, ZtbridgeError
from gateway.index.database import Database
from gateway.index.models import key_wraps, shares
from gateway.keywraps import KeyHolder, Recipient, add_recipient, study_key_ids, wraps_for

if TYPE_CHECKING:
    from gateway.accounts.users import Account
    from gateway.ledger.ledger import Ledger

GRANT_CAPSULE_INFO = b"ztbridge/grant-capsule/v1/"


class AccessDeniedError(ZtbridgeError):
    """``decide`` said no; ``decision`` says why and how to answer (404 / 403 / 401)."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


@dataclass(frozen=True)
class Share:
    """A live share as the index mirrors it."""

    study_uid: str
    doctor_id: int
    patient_id: int
    granted_at: str
    expires_at: str | None
    tx_hash: str | None


def grant_capsule(doctor: Account, study_id: bytes, wraps: list[tuple[str, bytes]]) -> bytes:
    """The doctor's own wraps of the study keys, HPKE-sealed to the doctor for the chain:
    ``u8 n | n x (key id 16 | u16be len | wrap)``, bound to the study id."""
    body = bytearray((len(wraps),))
    for key_id, wrap in wraps:
        body += bytes.fromhex(key_id) + struct.pack(">H", len(wrap)) + wrap
    return crypto.wrap(
        doctor.hpke_public, doctor.kem, bytes(body), GRANT_CAPSULE_INFO + study_id.hex().encode()
    )


def _allowed(db: Database, who: SessionView, action: Action, study_uid: str, now: datetime) -> None:
    decision = decide(facts_for(db, who, action, study_uid, now))
    if not decision.allowed:
        raise AccessDeniedError(decision)


def share_study(
    db: Database,
    ledger: Ledger,
    study_id: bytes,
    patient: SessionView,
    doctor: Account,
    study_uid: str,
    expires_at: datetime | None,
    clock: Clock,
    audit: AuditLog,
) -> Share:
    """Give ``doctor`` the study (see the module docstring); AccessDeniedError if
    ``patient`` may not share it, InvalidInputError for an account that is not an active
    registered doctor. Sharing again renews the capsule and the expiry."""
    now = clock.now()
    _allowed(db, patient, Action.SHARE, study_uid, now)
    if doctor.role is not Role.DOCTOR or doctor.suspended or doctor.chain_state != "synced":
        raise InvalidInputError(f"{doctor.username!r} is not an active, registered doctor")
    if expires_at is not None and expires_at <= now:
        raise InvalidInputError("the share's expiry is in the past")
    keys = patient.keys
    assert keys is not None  # a complete session (decide allowed it) holds its keys
    from gateway.keywraps import user_recipient

    holder = KeyHolder(user_recipient(keys.address), keys.hpke_pair())
    recipient = Recipient(doctor.recipient, doctor.kem, doctor.hpke_public)
    added = add_recipient(db, study_uid, recipient, holder, clock)
    with db.read() as conn:
        ids = study_key_ids(conn, study_uid)
        wraps = wraps_for(conn, ids, doctor.recipient)
    capsule = grant_capsule(doctor, study_id, [(k, wraps[k].wrap) for k in ids if k in wraps])
    try:
        receipt = ledger.grant_study(keys.eth_account(), study_id, doctor.address, capsule)
    except BaseException:
        if added:
            _delete_wraps(db, study_uid, doctor.recipient)
        raise
    tx = "0x" + receipt.tx_hash.hex()
    with db.write() as conn:
        conn.execute(
            delete(shares).where(shares.c.study_uid == study_uid, shares.c.doctor_id == doctor.id)
        )
        conn.execute(
            insert(shares).values(
                study_uid=study_uid,
                doctor_id=doctor.id,
                patient_id=patient.user_id,
                granted_at=now.isoformat(),
                expires_at=None if expires_at is None else expires_at.isoformat(),
                tx_hash=tx,
            )
        )
    audit.record(
        AuditEvent(
            "study.shared",
            patient.username,
            study_uid,
            "ok",
            {
                "doctor": doctor.username,
                "expires": expires_at.isoformat() if expires_at else None,
                "tx": tx,
            },
        )
    )
    return Share(
        study_uid,
        doctor.id,
        patient.user_id,
        now.isoformat(),
        None if expires_at is None else expires_at.isoformat(),
        tx,
    )


def _delete_wraps(db: Database, study_uid: str, recipient: str) -> None:
    with db.write() as conn:
        ids = study_key_ids(conn, study_uid)
        conn.execute(
            delete(key_wraps).where(key_wraps.c.recipient == recipient, key_wraps.c.key_id.in_(ids))
        )


def revoke_share(
    db: Database,
    ledger: Ledger,
    study_id: bytes,
    patient: SessionView,
    doctor: Account,
    study_uid: str,
    clock: Clock,
    audit: AuditLog,
) -> bool:
    """End ``doctor``'s access (see the module docstring); True if a grant was revoked
    on-chain, False if there was none left there."""
    _allowed(db, patient, Action.REVOKE, study_uid, clock.now())
    with db.write() as conn:
        conn.execute(
            delete(shares).where(shares.c.study_uid == study_uid, shares.c.doctor_id == doctor.id)
        )
    _delete_wraps(db, study_uid, doctor.recipient)
    active, _, _ = ledger.study_grant(study_id, doctor.address)
    keys = patient.keys
    assert keys is not None
    if active:
        ledger.revoke_study(keys.eth_account(), study_id, doctor.address)
    audit.record(
        AuditEvent(
            "study.revoked",
            patient.username,
            study_uid,
            "ok",
            {"doctor": doctor.username, "on_chain": active},
        )
    )
    return active


def shares_of(db: Database, study_uid: str) -> list[Share]:
    """The study's live shares (for the patient's page)."""
    with db.read() as conn:
        rows = conn.execute(select(shares).where(shares.c.study_uid == study_uid)).all()
    return [
        Share(
            r.study_uid, int(r.doctor_id), int(r.patient_id), r.granted_at, r.expires_at, r.tx_hash
        )
        for r in rows
    ]


def expired_shares(db: Database, now: datetime) -> list[Share]:
    """Shares whose expiry has passed (decide already refuses them): to revoke on-chain."""
    with db.read() as conn:
        rows = conn.execute(
            select(shares).where(
                shares.c.expires_at.is_not(None), shares.c.expires_at <= now.isoformat()
            )
        ).all()
    return [
        Share(
            r.study_uid, int(r.doctor_id), int(r.patient_id), r.granted_at, r.expires_at, r.tx_hash
        )
        for r in rows
    ]
