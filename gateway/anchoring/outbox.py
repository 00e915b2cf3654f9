"""The anchoring outbox: durable rows waiting for the chain, sent at most once each.

Idempotency is by record id for studies: the contract refuses a second ``anchorRecord`` with
the same id (``RecordExists``), so a batch whose receipt was lost (node restarted, timeout)
is retried, the retry is refused, the record found on-chain is compared with the row, and the
row is marked anchored. Audit ranges are idempotent by position: the contract accepts only
the range that starts right after the last one, so a repeated range is refused
(``InvalidAuditRange``) and is then looked up among the anchored ranges.

A row that disagrees with what the chain holds under its id is marked ``conflict`` and never
retried: only a restored-from-backup index or a second gateway writing with the same keys can
cause it, and a person must look (``ztbridge chain info`` shows it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Table, bindparam, exists, func, insert, select, update

from gateway.clock import Clock
from gateway.errors import AuditError
from gateway.index.database import Database
from gateway.index.models import (
    anchor_batch_members,
    anchor_batches,
    audit_anchors,
    audit_events,
    audit_head,
    instances,
)
from gateway.ledger.errors import LedgerRevertError
from gateway.logsafe import shown
from gateway.merkle import merkle_root

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from gateway.ledger.ledger import AnchorReceipt, Ledger

log = logging.getLogger("ztbridge.anchoring")

ANCHORED = "anchored"
PENDING = "pending"
CONFLICT = "conflict"
SUPERSEDED = "superseded"

_AUDIT_HASHES = (
    select(audit_events.c.seq, audit_events.c.hash)
    .where(audit_events.c.seq.between(bindparam("lo"), bindparam("hi")))
    .order_by(audit_events.c.seq)
)


@dataclass(frozen=True)
class PendingBatch:
    """A sealed batch waiting to be anchored."""

    id: int
    study_uid: str
    record_id: bytes
    owner: str
    merkle_root: bytes
    manifest_cid: str
    capsule: bytes
    attempts: int


@dataclass(frozen=True)
class PendingAudit:
    """An audit range waiting to be anchored on one deployment."""

    id: int
    deployment_id: int
    from_seq: int
    to_seq: int
    root: bytes
    attempts: int


@dataclass(frozen=True)
class OutboxCounts:
    """What ``status`` and ``chain info`` show about anchoring."""

    batches_pending: int
    batches_anchored: int
    batches_conflict: int
    unbatched_instances: int
    audit_pending: int
    audit_anchored_to: int
    audit_conflict: int
    audit_head: int
    last_error: str | None


def audit_root(hashes: list[str]) -> bytes:
    """Merkle root over audit entry hashes (leaf bytes: the 32-byte entry hash)."""
    return merkle_root([bytes.fromhex(h) for h in hashes])


class Outbox:
    """Reads and updates the outbox tables; sends rows through a ``Ledger``."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    # -- study batches ----------------------------------------------------------------------

    def pending_batches(self, limit: int = 100) -> list[PendingBatch]:
        """Oldest pending batches first."""
        with self._db.read() as conn:
            rows = conn.execute(
                select(anchor_batches)
                .where(anchor_batches.c.state == PENDING)
                .order_by(anchor_batches.c.id)
                .limit(limit)
            ).all()
        return [
            PendingBatch(
                id=r.id,
                study_uid=r.study_uid,
                record_id=bytes.fromhex(r.record_id),
                owner=r.owner,
                merkle_root=bytes.fromhex(r.merkle_root),
                manifest_cid=r.manifest_cid,
                capsule=bytes(r.capsule),
                attempts=r.attempts,
            )
            for r in rows
        ]

    def send_batch(
        self,
        ledger: Ledger,
        sender: LocalAccount,
        deployment_id: int,
        row: PendingBatch,
        study_id: bytes,
    ) -> str:
        """Anchor one batch of the study ``study_id``; returns the row's new state. Chain
        errors propagate (backoff)."""
        try:
            receipt = ledger.anchor_study(
                sender,
                row.owner,
                row.record_id,
                row.merkle_root,
                row.manifest_cid,
                row.capsule,
                study_id=study_id,
            )
        except LedgerRevertError as e:
            if e.name != "RecordExists":
                raise
            return self._already_anchored(ledger, deployment_id, row)
        self._finish(anchor_batches, row.id, deployment_id, receipt)
        log.info(
            "study %s batch %d anchored: record %s… in block %d (%d gas)",
            shown(row.study_uid),
            row.id,
            row.record_id.hex()[:12],
            receipt.block_number,
            receipt.gas_used,
        )
        return ANCHORED

    def _already_anchored(self, ledger: Ledger, deployment_id: int, row: PendingBatch) -> str:
        """``RecordExists``: ours (a lost receipt) or somebody else's (a conflict)."""
        from gateway.ledger.ledger import AnchorReceipt

        record = ledger.record_by_id(row.record_id)
        if (
            record is not None
            and record.merkle_root == row.merkle_root
            and record.manifest_cid == row.manifest_cid
            and record.patient == ledger.chain.w3.to_checksum_address(row.owner)
        ):
            event = ledger.record_event(row.record_id)
            receipt = AnchorReceipt(
                event.tx_hash if event else b"",
                event.block_number if event else 0,
                0,
            )
            self._finish(anchor_batches, row.id, deployment_id, receipt, gas_known=False)
            log.info(
                "study %s batch %d was already anchored (receipt lost earlier)",
                shown(row.study_uid),
                row.id,
            )
            return ANCHORED
        self._mark(anchor_batches, row.id, CONFLICT, "record id exists on-chain with other content")
        log.error(
            "study %s batch %d: record %s exists on-chain with a different root or manifest;"
            " not retried (see docs/ledger.md, 'Conflicts')",
            shown(row.study_uid),
            row.id,
            row.record_id.hex(),
        )
        return CONFLICT

    # -- audit ranges -----------------------------------------------------------------------

    def supersede_audit(self, deployment_id: int) -> None:
        """Pending audit rows of other deployments will never be sent: mark them so."""
        with self._db.write() as conn:
            conn.execute(
                update(audit_anchors)
                .where(
                    audit_anchors.c.state == PENDING,
                    audit_anchors.c.deployment_id != deployment_id,
                )
                .values(state=SUPERSEDED)
            )

    def audit_state(self, deployment_id: int) -> tuple[PendingAudit | None, int, bool]:
        """(pending row, last anchored seq, blocked by a conflict) for ``deployment_id``."""
        with self._db.read() as conn:
            rows = conn.execute(
                select(audit_anchors)
                .where(audit_anchors.c.deployment_id == deployment_id)
                .where(audit_anchors.c.state.in_([PENDING, ANCHORED, CONFLICT]))
                .order_by(audit_anchors.c.from_seq)
            ).all()
        pending = next((r for r in rows if r.state == PENDING), None)
        last = max((r.to_seq for r in rows if r.state == ANCHORED), default=0)
        blocked = any(r.state == CONFLICT for r in rows)
        return (self._audit_row(pending) if pending else None), last, blocked

    @staticmethod
    def _audit_row(r: object) -> PendingAudit:
        return PendingAudit(
            id=r.id,  # type: ignore[attr-defined]
            deployment_id=r.deployment_id,  # type: ignore[attr-defined]
            from_seq=r.from_seq,  # type: ignore[attr-defined]
            to_seq=r.to_seq,  # type: ignore[attr-defined]
            root=bytes.fromhex(r.root),  # type: ignore[attr-defined]
            attempts=r.attempts,  # type: ignore[attr-defined]
        )

    def audit_head(self) -> int:
        """The audit log's last sequence number (0 when empty)."""
        with self._db.read() as conn:
            seq = conn.execute(select(audit_head.c.seq)).scalar()
        return int(seq or 0)

    def range_root(self, from_seq: int, to_seq: int) -> bytes:
        """The Merkle root over entries ``from_seq..to_seq``; refuses a range with holes."""
        with self._db.read() as conn:
            rows = conn.execute(_AUDIT_HASHES, {"lo": from_seq, "hi": to_seq}).all()
        seqs = [r.seq for r in rows]
        if seqs != list(range(from_seq, to_seq + 1)):
            raise AuditError(
                f"audit entries {from_seq}..{to_seq} are not all present; run 'ztbridge audit"
                " verify'"
            )
        return audit_root([r.hash for r in rows])

    def queue_audit(self, deployment_id: int, from_seq: int, to_seq: int) -> PendingAudit:
        """Compute the range's root and write its outbox row."""
        root = self.range_root(from_seq, to_seq)
        with self._db.write() as conn:
            result = conn.execute(
                insert(audit_anchors).values(
                    deployment_id=deployment_id,
                    from_seq=from_seq,
                    to_seq=to_seq,
                    root=root.hex(),
                    created_at=self._clock.now().isoformat(),
                    state=PENDING,
                    attempts=0,
                )
            )
        assert result.inserted_primary_key is not None
        return PendingAudit(
            int(result.inserted_primary_key[0]), deployment_id, from_seq, to_seq, root, 0
        )

    def send_audit(self, ledger: Ledger, sender: LocalAccount, row: PendingAudit) -> str:
        """Anchor one audit range; returns the row's new state."""
        from gateway.ledger.ledger import AnchorReceipt

        try:
            receipt = ledger.anchor_audit(sender, row.root, row.from_seq, row.to_seq)
        except LedgerRevertError as e:
            if e.name != "InvalidAuditRange":
                raise
            for anchor in reversed(ledger.audit_anchors()):
                if anchor.from_seq == row.from_seq:
                    if anchor.to_seq == row.to_seq and anchor.root == row.root:
                        self._finish(
                            audit_anchors,
                            row.id,
                            row.deployment_id,
                            AnchorReceipt(b"", 0, 0),
                            gas_known=False,
                        )
                        return ANCHORED
                    break
            self._mark(
                audit_anchors,
                row.id,
                CONFLICT,
                f"the chain's audit ranges do not continue at {row.from_seq}"
                f" (it has anchored up to {ledger.last_audit_seq()})",
            )
            log.error(
                "audit range %d..%d conflicts with the chain; audit anchoring stops for this"
                " deployment (see docs/ledger.md, 'Conflicts')",
                row.from_seq,
                row.to_seq,
            )
            return CONFLICT
        self._finish(audit_anchors, row.id, row.deployment_id, receipt)
        log.info(
            "audit entries %d..%d anchored in block %d",
            row.from_seq,
            row.to_seq,
            receipt.block_number,
        )
        return ANCHORED

    # -- bookkeeping ------------------------------------------------------------------------

    def _finish(
        self,
        table: Table,
        row_id: int,
        deployment_id: int,
        receipt: AnchorReceipt,
        gas_known: bool = True,
    ) -> None:
        """Mark a row anchored (``table``: anchor_batches or audit_anchors, same columns)."""
        values: dict[str, object] = {
            "state": ANCHORED,
            "tx_hash": ("0x" + receipt.tx_hash.hex()) if receipt.tx_hash else None,
            "block_number": receipt.block_number or None,
            "gas_used": receipt.gas_used if gas_known else None,
            "anchored_at": self._clock.now().isoformat(),
            "last_error": None,
        }
        if table is anchor_batches:
            values["deployment_id"] = deployment_id
        with self._db.write() as conn:
            conn.execute(update(table).where(table.c.id == row_id).values(**values))

    def _mark(self, table: Table, row_id: int, state: str, error: str) -> None:
        with self._db.write() as conn:
            conn.execute(
                update(table).where(table.c.id == row_id).values(state=state, last_error=error)
            )

    def note_failure(self, table: Table, row_id: int, error: str) -> None:
        """Count a failed attempt and keep its reason (the row stays pending)."""
        with self._db.write() as conn:
            conn.execute(
                update(table)
                .where(table.c.id == row_id)
                .values(attempts=table.c.attempts + 1, last_error=error[:2000])
            )


def outbox_counts(db: Database) -> OutboxCounts:
    """Counts for ``status`` / ``chain info`` (one pass over the outbox tables)."""
    with db.read() as conn:
        by_state: dict[str, int] = dict(
            conn.execute(
                select(anchor_batches.c.state, func.count()).group_by(anchor_batches.c.state)
            ).all()
        )
        audit_by_state: dict[str, int] = dict(
            conn.execute(
                select(audit_anchors.c.state, func.count()).group_by(audit_anchors.c.state)
            ).all()
        )
        anchored_to = conn.execute(
            select(func.coalesce(func.max(audit_anchors.c.to_seq), 0)).where(
                audit_anchors.c.state == ANCHORED
            )
        ).scalar_one()
        unbatched = conn.execute(
            select(func.count())
            .select_from(instances)
            .where(~exists().where(anchor_batch_members.c.instance_id == instances.c.id))
        ).scalar_one()
        head = conn.execute(select(audit_head.c.seq)).scalar()
        last_error = conn.execute(
            select(anchor_batches.c.last_error)
            .where(anchor_batches.c.state == PENDING, anchor_batches.c.last_error.is_not(None))
            .order_by(anchor_batches.c.id)
            .limit(1)
        ).scalar()
    return OutboxCounts(
        batches_pending=int(by_state.get(PENDING, 0)),
        batches_anchored=int(by_state.get(ANCHORED, 0)),
        batches_conflict=int(by_state.get(CONFLICT, 0)),
        unbatched_instances=int(unbatched),
        audit_pending=int(audit_by_state.get(PENDING, 0)),
        audit_anchored_to=int(anchored_to),
        audit_conflict=int(audit_by_state.get(CONFLICT, 0)),
        audit_head=int(head or 0),
        last_error=last_error,
    )


def oldest_pending(db: Database) -> str | None:
    """When the oldest batch still waiting to be anchored was sealed (ISO time), or None."""
    with db.read() as conn:
        return conn.execute(
            select(anchor_batches.c.created_at)
            .where(anchor_batches.c.state == PENDING)
            .order_by(anchor_batches.c.id)
            .limit(1)
        ).scalar()
