"""Shares whose expiry has passed end like a revoke: in the index at once, on-chain as soon as
the patient's key can sign.

The contract's ``grant`` has no expiry (``hasAccess`` knows only active grants) and only the
study's owner may ``revoke``, signed with the patient's own Ethereum key, which the gateway
holds unlocked only while the patient is logged in. Nothing is pre-signed: a transaction
signed in advance is bound to a nonce that any later transaction of the patient spends. So
an expiry ends in two steps (docs/ledger.md, "Share expiry"):

1. ``decide`` refuses the doctor from the expiry's first second (``access.grant_is_live``);
   this sweep then deletes the doctor's wraps of the study keys, so nothing the doctor holds
   through the gateway opens the study any more, and ingest stops wrapping new study keys
   to the doctor (``links.LinkedRecipients``). The ``shares`` row stays, as the mark that an
   on-chain revoke is owed. Audited once (``study.share_expired``).
2. At the next sweep while the patient has a live session or token in this process
   (``Sessions.held_keys``), ``revoke`` is sent signed with the patient's key and the row is
   deleted (``study.revoked`` with ``"expired": true``). If the chain has no active grant left
   (a revoke sent from elsewhere), only the row is deleted.

``ztbridge up`` runs ``sweep`` every minute.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete

from gateway.accounts.shares import Share, expired_shares
from gateway.audit import AuditEvent, AuditLog
from gateway.clock import Clock
from gateway.index.database import Database
from gateway.index.models import key_wraps, shares
from gateway.keywraps import study_key_ids

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from gateway.accounts.sessions import Sessions
    from gateway.accounts.users import Accounts
    from gateway.anchoring.service import Anchoring
    from gateway.anchoring.session import Session

log = logging.getLogger("ztbridge.shares")


@dataclass(frozen=True)
class SweepResult:
    """What one sweep did."""

    wraps_removed: int  # shares whose doctor's wraps were deleted now
    revoked: int  # shares ended on-chain (or found already ended there) and removed
    waiting: int  # expired shares still owed an on-chain revoke (patient not logged in)


def _drop_wraps(db: Database, share: Share, recipient: str) -> int:
    with db.write() as conn:
        ids = study_key_ids(conn, share.study_uid)
        result = conn.execute(
            delete(key_wraps).where(key_wraps.c.recipient == recipient, key_wraps.c.key_id.in_(ids))
        )
    return int(result.rowcount or 0)


def _drop_row(db: Database, share: Share) -> None:
    with db.write() as conn:
        conn.execute(
            delete(shares).where(
                shares.c.study_uid == share.study_uid,
                shares.c.doctor_id == share.doctor_id,
                shares.c.expires_at == share.expires_at,  # not a share renewed meanwhile
            )
        )


def _revoke_on_chain(
    anchoring: Anchoring, study_id: bytes, signer: LocalAccount, doctor: str
) -> bool:
    """``revoke`` signed by the patient, if the chain still has the grant; True if sent."""

    def send(s: Session) -> bool:
        active, _, _ = s.ledger.study_grant(study_id, doctor)
        if active:
            s.ledger.revoke_study(signer, study_id, doctor)
        return active

    return anchoring.run_on_ledger(send)


def sweep(
    db: Database,
    users: Accounts,
    sessions: Sessions,
    anchoring: Anchoring | None,
    clock: Clock,
    audit: AuditLog,
) -> SweepResult:
    """End every expired share as far as can be done now (see the module docstring)."""
    removed = revoked = waiting = 0
    for share in expired_shares(db, clock.now()):
        doctor = users.by_id(share.doctor_id)
        patient = users.by_id(share.patient_id)
        if _drop_wraps(db, share, doctor.recipient):
            removed += 1
            audit.record(
                AuditEvent(
                    "study.share_expired",
                    patient.username,
                    share.study_uid,
                    "ok",
                    {"doctor": doctor.username, "expired_at": share.expires_at},
                )
            )
        keys = sessions.held_keys(share.patient_id)
        if anchoring is None or keys is None:
            waiting += 1
            continue
        on_chain = _revoke_on_chain(
            anchoring, anchoring.study_id(share.study_uid), keys.eth_account(), doctor.address
        )
        _drop_row(db, share)
        revoked += 1
        audit.record(
            AuditEvent(
                "study.revoked",
                patient.username,
                share.study_uid,
                "ok",
                {"doctor": doctor.username, "on_chain": on_chain, "expired": True},
            )
        )
        log.info("share of a study with %s expired: revoked on-chain", doctor.username)
    return SweepResult(removed, revoked, waiting)
