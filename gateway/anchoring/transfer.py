"""Handing a study from the custodian to its patient: wraps, capsules, the chain, the index.

The patient usually registers after the scan, so every study starts owned by the custodian.
When the patient's account is linked (the portal issue decides when; an admin page or a
command calls this), ``transfer_study``:

1. wraps every study key of the study to the patient (``key_wraps``; needs the custodian's
   unlocked key pair: only the custodian can open the keys of an unlinked study);
2. re-seals the capsule of every batch to the patient: anchored ones are moved on-chain with
   ``transferRecord`` (admin-signed, one event per record), pending ones are simply sealed to
   the patient before they are sent, and then anchored to the patient directly;
3. records the new owner (``study_owners``), so later batches are sealed and anchored to the
   patient directly, and writes one ``study.transferred`` audit event.

Idempotent: a record already the patient's is skipped, so a transfer interrupted by a chain
outage is finished by running it again, and so is one that later finds batches the fallback
sealed to the custodian (``BatchSealer.seal``). The caller holds the ledger lock
(``Anchoring.lock``), like any signer: the admin key signs here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete, insert, select, update

from gateway import crypto
from gateway.anchoring.batches import RecordOwner
from gateway.anchoring.outbox import ANCHORED, PENDING
from gateway.audit import AuditEvent
from gateway.errors import InvalidInputError, NotFoundError
from gateway.index.models import anchor_batches, studies, study_owners
from gateway.keywraps import CUSTODIAN, KeyHolder, Recipient, add_recipient, user_recipient
from gateway.ledger.errors import LedgerUnavailableError
from gateway.ledger.ledger import Role

if TYPE_CHECKING:
    from gateway.anchoring.service import Anchoring
    from gateway.anchoring.session import Session

log = logging.getLogger("ztbridge.anchoring")


@dataclass(frozen=True)
class TransferReport:
    """What one ``transfer_study`` did."""

    #: Records moved on-chain with ``transferRecord``.
    transferred: int
    #: Pending batches re-sealed to the patient before being sent.
    resealed: int
    #: Study key wraps added for the patient.
    wraps_added: int
    #: Anchored batches left where they are: on another deployment (an older registry, which
    #: has no transfer), or in conflict.
    skipped: int


def transfer_study(
    anchoring: Anchoring,
    session: Session,
    custodian: crypto.KeyPair,
    study_uid: str,
    patient: str,
    kem: crypto.KemName,
    actor: str,
) -> TransferReport:
    """Make ``patient`` (a registered, active PATIENT account) the owner of ``study_uid``.

    ``kem`` names the KEM of the patient's HPKE key; the key itself is read from the
    registry, so the capsules are sealed to exactly the key the chain publishes for it.
    """
    ledger = session.ledger
    address = ledger.chain.w3.to_checksum_address(patient)
    user = ledger.user(address)
    if user.role is not Role.PATIENT or user.suspended:
        raise InvalidInputError(f"{address} is not an active patient account on the registry")
    if address == ledger.chain.w3.to_checksum_address(anchoring.accounts.custodian_address):
        raise InvalidInputError("the custodian cannot be the patient a study is transferred to")
    recipient = Recipient(user_recipient(address), kem, user.hpke_public_key)
    owner = RecordOwner(address, user.hpke_public_key, kem, recipient.name)
    db, clock = anchoring.db, anchoring.clock
    added = add_recipient(db, study_uid, recipient, KeyHolder(CUSTODIAN, custodian), clock)
    with db.write() as conn:  # from now on new batches are sealed to the patient
        conn.execute(delete(study_owners).where(study_owners.c.study_uid == study_uid))
        conn.execute(
            insert(study_owners).values(
                study_uid=study_uid,
                owner=address,
                recipient=recipient.name,
                kem=kem,
                public_key=user.hpke_public_key,
                transferred_at=clock.now().isoformat(),
            )
        )
    with db.read() as conn:
        rows = conn.execute(
            select(anchor_batches)
            .where(anchor_batches.c.study_uid == study_uid)
            .order_by(anchor_batches.c.id)
        ).all()
    custodian_address = ledger.chain.w3.to_checksum_address(anchoring.accounts.custodian_address)
    moved = resealed = skipped = 0
    for row in rows:
        if row.state == PENDING:
            capsule = anchoring.sealer.reseal_capsule(row.id, owner, custodian)
            _set_owner(anchoring, row.id, address, capsule, PENDING)
            resealed += 1
            continue
        if row.state != ANCHORED or row.deployment_id != session.deployment.id:
            skipped += 1
            continue
        record_id = bytes.fromhex(row.record_id)
        record = ledger.record_by_id(record_id)
        if record is not None and record.patient == address:
            if row.owner != address:  # moved by an earlier run that stopped before this row
                _set_owner(anchoring, row.id, address, record.sealed_capsule, ANCHORED)
            continue
        if record is None or record.patient != custodian_address:
            skipped += 1  # not on this chain, or someone else's: nothing to move
            continue
        capsule = anchoring.sealer.reseal_capsule(row.id, owner, custodian)
        ledger.transfer_record(anchoring.accounts.admin, record_id, address, capsule)
        _set_owner(anchoring, row.id, address, capsule, ANCHORED)
        moved += 1
    anchoring.audit.record(
        AuditEvent(
            "study.transferred",
            actor,
            study_uid,
            "ok",
            {"patient": address, "records": moved, "resealed": resealed, "skipped": skipped},
        )
    )
    log.info(
        "study %s transferred to %s: %d record(s) moved, %d pending batch(es) re-sealed",
        study_uid,
        address,
        moved,
        resealed,
    )
    return TransferReport(moved, resealed, added, skipped)


def _set_owner(anchoring: Anchoring, batch_id: int, owner: str, capsule: bytes, state: str) -> None:
    """Mirror the chain in the outbox row (only if the row is still in ``state``)."""
    with anchoring.db.write() as conn:
        conn.execute(
            update(anchor_batches)
            .where(anchor_batches.c.id == batch_id, anchor_batches.c.state == state)
            .values(owner=owner, capsule=capsule)
        )


def transfer_now(
    anchoring: Anchoring,
    custodian: crypto.KeyPair,
    study_uid: str,
    patient: str,
    kem: crypto.KemName,
    actor: str,
) -> TransferReport:
    """``transfer_study`` as a command or an admin page runs it: take the ledger lock,
    connect, transfer, let go. NotFoundError for a study the index does not hold;
    LedgerUnavailableError while another process (a running ``ztbridge up``) signs."""
    with anchoring.db.read() as conn:
        known = conn.execute(
            select(studies.c.study_uid).where(studies.c.study_uid == study_uid)
        ).first()
    if known is None:
        raise NotFoundError(f"no study {study_uid} in the index")
    lock = anchoring.lock
    ours = not lock.held  # the worker calling this already holds it: keep it held then
    if not lock.acquire():
        raise LedgerUnavailableError(
            f"another ztbridge process (pid {lock.holder() or '?'}) holds the ledger; stop"
            " 'ztbridge up' for the transfer, or run it from that process"
        )
    try:
        session = anchoring.connect()
        try:
            return transfer_study(anchoring, session, custodian, study_uid, patient, kem, actor)
        finally:
            session.close()
    finally:
        if ours:
            lock.release()
