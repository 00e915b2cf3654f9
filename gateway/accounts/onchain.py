"""The registry mirrors the accounts: addUser, suspendUser and reinstateUser.

Account changes are made in the index first (``chain_state = "pending"``) and carried to the
chain by ``sync_users``, which the anchoring worker runs before each send (so a ``ztbridge
user add`` made while ``up`` runs reaches the chain within a poll period) and a command runs
at once when it can take the ledger itself. Idempotent: each pending account is compared
with what ``getUser`` says and only the difference is sent, so a sync interrupted by a chain
outage is finished by the next one. Registering before anchoring matters: a record can be
anchored to a patient only once the registry knows them as an active PATIENT.

On the embedded chain, a new account is given test ether at registration, so it can sign its
own ``grant`` and ``revoke`` later (the gateway relays them). On an RPC chain the operator
funds accounts as that chain requires.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from gateway.access import Role
from gateway.audit import AuditEvent, AuditLog
from gateway.index.database import Database
from gateway.index.models import users
from gateway.ledger.errors import LedgerRevertError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from gateway.anchoring.service import Anchoring
    from gateway.ledger.ledger import Ledger

log = logging.getLogger("ztbridge.accounts")

#: What the embedded chain gives each new account (test ether, for its own grants).
USER_FUNDING = 10 * 10**18


def _ledger_role(role: Role) -> object:
    from gateway.ledger.ledger import Role as LedgerRole

    return {
        Role.ADMIN: LedgerRole.ADMIN,
        Role.PATIENT: LedgerRole.PATIENT,
        Role.DOCTOR: LedgerRole.DOCTOR,
        Role.AUDITOR: LedgerRole.AUDITOR,
    }[role]


def sync_users(db: Database, ledger: Ledger, admin: LocalAccount, audit: AuditLog) -> int:
    """Send every pending account change to the registry; how many accounts were synced.

    An account the registry refuses is logged and left pending (anchoring goes on); any
    other ledger error is raised (the caller backs off and retries); what was synced stays.
    """
    with db.read() as conn:
        rows = conn.execute(
            select(users).where(users.c.chain_state == "pending").order_by(users.c.id)
        ).all()
    done = 0
    for row in rows:
        try:
            _sync_one(db, ledger, admin, audit, row)
        except LedgerRevertError as e:  # this account only: anchoring must go on
            log.error("registry refused account %s: %s (left pending)", row.username, e)
            continue
        done += 1
    if done:
        log.info("registry: %d account change(s) synced", done)
    return done


def _sync_one(db: Database, ledger: Ledger, admin: LocalAccount, audit: AuditLog, row: Any) -> None:
    """Make the registry agree with one account row, then mark it synced."""
    from gateway.ledger.embedded import EmbeddedChain

    address = row.eth_address
    on_chain = ledger.user(address)
    if on_chain.role is None:
        if isinstance(ledger.chain, EmbeddedChain):
            ledger.chain.fund(address, USER_FUNDING)
        ledger.register_user(
            admin,
            address,
            _ledger_role(Role(row.role)),  # type: ignore[arg-type]
            bytes(row.hpke_public),
        )
        audit.record(
            AuditEvent(
                "user.registered",
                "ztbridge",
                row.username,
                "ok",
                {"address": address, "role": row.role},
            )
        )
        on_chain = ledger.user(address)
    if bool(row.suspended) and not on_chain.suspended:
        ledger.suspend_user(admin, address)
    elif not row.suspended and on_chain.suspended:
        ledger.reinstate_user(admin, address)
    with db.write() as conn:  # only if nothing changed it meanwhile
        conn.execute(
            update(users)
            .where(users.c.id == row.id, users.c.suspended == row.suspended)
            .values(chain_state="synced")
        )


def sync_now(anchoring: Anchoring) -> bool:
    """Sync accounts from a command: True if done, False if another process (a running
    ``ztbridge up``) holds the ledger, which then syncs them itself within seconds."""
    lock = anchoring.lock
    ours = not lock.held
    if ours and not lock.acquire():
        return False
    try:
        session = anchoring.connect()
        try:
            sync_users(anchoring.db, session.ledger, anchoring.accounts.admin, anchoring.audit)
        finally:
            session.close()
    finally:
        if ours:
            lock.release()
    return True
