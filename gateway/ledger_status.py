"""The ledger as an operator sees it: ``chain info``'s figures and the registries ``verify``
reads, as services (the CLI only prints them; an admin page can show the same).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from gateway.anchoring.outbox import outbox_counts
from gateway.anchoring.service import Anchoring
from gateway.ledger.errors import LedgerError
from gateway.service import Gateway

if TYPE_CHECKING:
    from gateway.anchoring.session import Session
    from gateway.ledger.ledger import Ledger


def chain_info(gw: Gateway, anchoring: Anchoring) -> dict[str, Any]:
    """Backend, accounts, outbox counts, deployments and, if reachable, the chain's view
    (registry, block height, balances, records): what ``chain info`` prints as a table or
    JSON. A chain that cannot be reached is reported in ``chain``, not raised."""
    counts = outbox_counts(gw.db)
    from gateway.ledger.deployment import list_deployments

    s = gw.settings.ledger
    info: dict[str, Any] = {
        "backend": s.backend,
        "sender": anchoring.accounts.sender_address,
        "admin": anchoring.accounts.admin_address,
        "custodian_account": anchoring.accounts.custodian_address,
        "batches_pending": counts.batches_pending,
        "batches_anchored": counts.batches_anchored,
        "batches_conflict": counts.batches_conflict,
        "instances_unbatched": counts.unbatched_instances,
        "audit_pending": counts.audit_pending,
        "audit_anchored_to": counts.audit_anchored_to,
        "audit_head": counts.audit_head,
        "last_error": counts.last_error,
        "deployments": [
            {"id": d.id, "backend": d.backend, "chain_id": d.chain_id, "address": d.address}
            | ({"url": d.rpc_url} if d.rpc_url else {})
            for d in list_deployments(gw.db)
        ],
    }
    try:
        session = anchoring.connect(read_only=True)
    except LedgerError as e:
        info["chain"] = f"unavailable: {e}"
        return info
    try:
        ledger, chain = session.ledger, session.chain
        info |= {
            "chain": "reachable",
            "address": ledger.address,
            "chain_id": chain.chain_id,
            "block_height": chain.block_height(),
            "sender_balance_wei": chain.balance(anchoring.accounts.sender_address),
            "admin_balance_wei": chain.balance(anchoring.accounts.admin_address),
            "records_on_chain": ledger.record_count(anchoring.accounts.custodian_address),
            "audit_on_chain_to": ledger.last_audit_seq(),
        }
    except LedgerError as e:
        info["chain"] = f"unavailable: {e}"
    finally:
        session.close()
    return info


@contextmanager
def open_ledgers(
    gw: Gateway, anchoring: Anchoring, *, full_replay: bool = False
) -> Iterator[tuple[Session | None, Any]]:
    """The active registry (or None if unreachable) and a deployment-id -> Ledger lookup.

    ``verify`` checks batches anchored on earlier deployments too; each is opened once, on
    first use, and all are closed on exit.
    """
    from gateway.anchoring.session import open_deployment
    from gateway.ledger.deployment import list_deployments

    sessions: dict[int, Session] = {}
    active: Session | None = None
    error: str | None = None
    try:
        active = anchoring.connect(read_only=True, full_replay=full_replay)
        sessions[active.deployment.id] = active
    except LedgerError as e:
        error = str(e)
    deployments = {d.id: d for d in list_deployments(gw.db)}

    def ledger_for(deployment_id: int) -> Ledger:
        if deployment_id not in sessions:
            if deployment_id not in deployments:
                raise LedgerError(f"unknown deployment {deployment_id}")
            if active is None and error is not None:
                raise LedgerError(error)
            sessions[deployment_id] = open_deployment(
                gw.settings, deployments[deployment_id], full_replay=full_replay
            )
        return sessions[deployment_id].ledger

    try:
        yield active, ledger_for
    finally:
        for session in sessions.values():
            session.close()
