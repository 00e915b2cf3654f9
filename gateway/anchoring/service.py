"""Anchoring as the rest of the gateway sees it: "these studies are complete", seal, send.

The DICOM edge tells it when an association ended (``association_ended``), ``ztbridge import``
seals what it imported, and the worker (``worker.py``) calls ``seal_due`` and
``send_pending`` in its own thread. Nothing here runs on the ingest path: the only thing ingest
leaves behind is its committed instance rows, which a cheap sweep (instance ids above a
watermark that have no batch) finds again, so an instance can never miss its batch even if
every notification is lost (crash, a future ingest path that forgets to notify).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import select

from gateway.anchoring.batches import BatchSealer, RecordOwner, SealedBatch
from gateway.anchoring.manifest import study_id
from gateway.anchoring.outbox import ANCHORED, Outbox
from gateway.anchoring.policy import audit_range_due, due_studies
from gateway.audit import AuditLog
from gateway.clock import Clock
from gateway.errors import AuditError, StorageError
from gateway.index.database import Database
from gateway.index.models import anchor_batches, audit_anchors, study_owners
from gateway.keys import CustodianPublic
from gateway.ledger.accounts import GatewayAccounts
from gateway.ledger.errors import LedgerError, LedgerUnavailableError
from gateway.ledger.lock import LedgerLock
from gateway.settings import Settings
from gateway.store.base import ContentStore

if TYPE_CHECKING:
    from gateway.anchoring.session import Session

T = TypeVar("T")

log = logging.getLogger("ztbridge.anchoring")

#: Instance ids re-scanned below the watermark: on PostgreSQL ids are handed out at INSERT
#: but become visible at COMMIT, so a slow transaction can commit a lower id after a sweep.
SWEEP_OVERLAP = 1024
#: Most audit entries one anchor covers (a long backlog is anchored in steps).
MAX_AUDIT_RANGE = 50_000


@dataclass(frozen=True)
class SendReport:
    """What one ``send_pending`` pass anchored."""

    batches: int
    audit_ranges: int


class Anchoring:
    """Seals study batches and sends the outbox; shared by ``up``, ``import`` and the CLI."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        store: ContentStore,
        custodian: CustodianPublic,
        audit: AuditLog,
        clock: Clock,
        accounts: GatewayAccounts,
        *,
        horizon: Callable[[], int | None] = lambda: None,
    ) -> None:
        """``horizon``: the lowest instance id whose ciphertext may still be flushing
        (``gateway.settling``); sealing stays below it. The default: nothing is flushing."""
        self.settings = settings
        self.db = db
        self.audit = audit
        self.clock = clock
        self.custodian = custodian
        self.accounts = accounts
        self.sealer = BatchSealer(
            db, store, custodian, accounts.record_secret, clock, horizon=horizon
        )
        self.outbox = Outbox(db, clock)
        self.lock = LedgerLock(settings.home / "ledger" / "LOCK")
        self._released: set[str] = set()
        self._guard = threading.Lock()
        self._low = 0
        self._last_max_id: int | None = None
        # Start "busy": right after a start is when queued modalities push, and connecting
        # (imports, journal replay, first deployment) must not compete with that first burst.
        self._moved_at = clock.monotonic()
        #: Whether new instances arrived within the last poll period (ingest is busy).
        self.ingest_moving = False
        self._last_audit = clock.monotonic()
        self.on_work: Callable[[], None] = lambda: None
        #: This process's one writable session and the lock every user of it holds: the
        #: worker's sends and the portal's grants share it (two sessions on one embedded
        #: journal would fork it, and two signers would race for nonces).
        self.session_guard = threading.RLock()
        self.live_session: Session | None = None

    # -- sealing ----------------------------------------------------------------------------

    def custodian_owner(self) -> RecordOwner:
        """The custodian as a record owner (studies whose patient has no account yet)."""
        return RecordOwner(
            self.accounts.custodian_address, self.custodian.public, self.custodian.kem
        )

    def owner_of(self, study_uid: str) -> RecordOwner:
        """Whom a study's new records belong to on-chain.

        The patient the study was transferred to (``study_owners``, written by
        ``gateway.anchoring.transfer``): later batches are sealed and anchored to the patient
        directly. Else the patient account linked to the study's Patient ID, once the
        registry knows it as an active patient (``gateway.accounts.links``). Otherwise the
        custodian.
        """
        with self.db.read() as conn:
            row = conn.execute(
                select(study_owners).where(study_owners.c.study_uid == study_uid)
            ).first()
        if row is not None:
            return RecordOwner(row.owner, bytes(row.public_key), row.kem, row.recipient)
        from gateway.accounts.links import linked_owner

        with self.db.read() as conn:  # a study that arrived after its patient was linked
            linked = linked_owner(conn, study_uid)
        if linked is None:
            return self.custodian_owner()
        return RecordOwner(linked.address, linked.public, linked.kem, linked.recipient)

    def study_id(self, study_uid: str) -> bytes:
        """The study's opaque on-chain id (grants and ownership are per study)."""
        return study_id(self.accounts.record_secret, study_uid)

    def association_ended(self, studies: Iterable[str]) -> None:
        """An association that brought these studies was released or aborted: seal them soon.

        Called on the association's thread after its last response went out; it only records
        the studies and wakes the worker, so it never delays a C-STORE response.
        """
        new = set(studies)
        if not new:
            return
        with self._guard:
            self._released |= new
        self.on_work()

    def seal_due(self, *, force: bool = False) -> list[SealedBatch]:
        """Seal studies that are due (ended association or idle); ``force``: every study."""
        scan = self.sealer.scan(self._low)
        with self._guard:
            released, self._released = self._released, set()
        if force:
            due = sorted(scan.last_arrival, key=lambda s: (scan.last_arrival[s], s))
        else:
            due = due_studies(
                scan.last_arrival,
                released,
                self.clock.now(),
                self.settings.ledger.anchor_idle_seconds,
            )
        sealed = self.sealer.seal_many(due, self.owner_of, self.custodian_owner())
        now = self.clock.monotonic()
        if self._last_max_id is not None and scan.max_id != self._last_max_id:
            self._moved_at = now
        self._last_max_id = scan.max_id
        self.ingest_moving = now - self._moved_at < self.settings.ledger.poll_seconds
        nxt = scan.first_unbatched - 1 if scan.first_unbatched is not None else scan.max_id
        self._low = max(0, min(nxt, scan.max_id - SWEEP_OVERLAP))
        if sealed:
            self.on_work()
        return sealed

    def seal_studies(self, studies: Iterable[str]) -> list[SealedBatch]:
        """Seal these studies now (``ztbridge import`` after its last file)."""
        return self.sealer.seal_many(sorted(set(studies)), self.owner_of, self.custodian_owner())

    # -- sending ----------------------------------------------------------------------------

    def connect(
        self,
        *,
        read_only: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        full_replay: bool = False,
    ) -> Session:
        """The registry the settings name (see ``session.connect``)."""
        from gateway.anchoring.session import connect  # web3 and py-evm load only here

        session = connect(
            self.settings,
            self.db,
            self.audit,
            self.clock,
            self.accounts,
            self.custodian,
            read_only=read_only,
            sleep=sleep,
            full_replay=full_replay,
        )
        if not read_only:  # audit rows queued for another chain will never be sent
            try:
                self.outbox.supersede_audit(session.deployment.id)
            except BaseException:
                session.close()
                raise
        return session

    def run_on_ledger(self, fn: Callable[[Session], T]) -> T:
        """``fn`` with this process's writable session (the worker's, or one connected now
        and kept for it), under ``session_guard``. LedgerUnavailableError when another
        process holds the ledger."""
        with self.session_guard:
            if self.live_session is None:
                if not self.lock.acquire():
                    raise LedgerUnavailableError(
                        f"another ztbridge process (pid {self.lock.holder() or '?'}) holds the"
                        f" ledger ({self.lock.path}); try again when it is done"
                    )
                self.live_session = self.connect()
            return fn(self.live_session)

    def close_session(self) -> None:
        """Close the shared session, if one is open (``Gateway.close``)."""
        with self.session_guard:
            if self.live_session is not None:
                self.live_session.close()
                self.live_session = None

    def send_pending(
        self,
        session: Session,
        *,
        force_audit: bool = False,
        stopping: Callable[[], bool] = lambda: False,
    ) -> SendReport:
        """Anchor every pending batch, oldest first, then the audit log if a range is due.

        Stops at the first chain error, which propagates (the caller backs off); the row
        keeps its attempt count and the reason.
        """
        from gateway.accounts.onchain import sync_users

        # Accounts first: a record can be anchored to a patient only once registered.
        sync_users(self.db, session.ledger, self.accounts.admin, self.audit)
        sender = self.accounts.sender
        deployment = session.deployment.id
        batches = 0
        while not stopping():
            rows = self.outbox.pending_batches()
            if not rows:
                break
            for row in rows:
                if stopping():
                    break
                try:
                    state = self.outbox.send_batch(
                        session.ledger, sender, deployment, row, self.study_id(row.study_uid)
                    )
                except LedgerError as e:
                    self.outbox.note_failure(anchor_batches, row.id, str(e))
                    raise
                batches += state == ANCHORED
        audit_ranges = 0 if stopping() else self._send_audit(session, force_audit)
        return SendReport(batches, audit_ranges)

    def _send_audit(self, session: Session, force: bool) -> int:
        ls = self.settings.ledger
        deployment = session.deployment.id
        sent = 0
        while True:
            pending, last, blocked = self.outbox.audit_state(deployment)
            if blocked:
                return sent
            if pending is None:
                since = math.inf if force else self.clock.monotonic() - self._last_audit
                every = 1 if force else ls.audit_every_events
                span = audit_range_due(
                    last,
                    self.outbox.audit_head(),
                    every,
                    since,
                    ls.audit_every_seconds,
                    MAX_AUDIT_RANGE,
                )
                if span is None:
                    return sent
                try:
                    pending = self.outbox.queue_audit(deployment, *span)
                except (StorageError, AuditError) as e:
                    log.error("cannot anchor the audit log: %s", e)
                    return sent
            try:
                state = self.outbox.send_audit(session.ledger, self.accounts.sender, pending)
            except LedgerError as e:
                self.outbox.note_failure(audit_anchors, pending.id, str(e))
                raise
            if state != ANCHORED:
                return sent
            sent += 1
            self._last_audit = self.clock.monotonic()
            if not force:
                return sent
