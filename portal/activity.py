"""The Activity page's content: decide (``Action.READ_ACTIVITY``), then the caller's own
audit events and registry events (``gateway.accounts.activity``).

The chain's events are read through this process's one ledger session; when the ledger is
off or another process holds it the page says so and still shows the audit events.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway.access import Action, Role
from gateway.accounts.activity import (
    AuditActivity,
    ChainActivity,
    Page,
    audit_activity,
    chain_activity,
)
from gateway.accounts.facts import visible_studies
from gateway.errors import ZtbridgeError
from gateway.ledger.ledger import LedgerEvent
from gateway.service import Gateway
from portal.authz import authorize
from portal.deps import Caller

log = logging.getLogger("ztbridge.portal")
PAGE_SIZE = 50


@dataclass(frozen=True)
class ActivityView:
    """What the Activity page shows."""

    events: list[AuditActivity]
    page: Page
    chain: list[ChainActivity]
    chain_page: Page
    chain_note: str  # why the chain's events are missing, or ""


def _chain_events(gw: Gateway) -> tuple[list[LedgerEvent], str]:
    anchoring = gw.anchoring
    if anchoring is None:
        return [], "the ledger is off (ledger.enabled = false)"
    try:
        return anchoring.run_on_ledger(
            lambda s: s.ledger.events_since(s.deployment.deploy_block)
        ), ""
    except ZtbridgeError as e:
        log.warning("activity: the chain's events are not available: %s", e)
        return [], "the chain's events are not available right now"


def activity(gw: Gateway, caller: Caller, offset: int, chain_offset: int) -> ActivityView:
    """The caller's own activity (a patient's studies, a doctor's requests), newest first."""
    authorize(gw, caller, Action.READ_ACTIVITY)
    role = caller.principal.role
    own = visible_studies(gw.db, caller.view, gw.clock.now()) if role is Role.PATIENT else []
    events, page = audit_activity(gw.db, caller.username, role, own, offset, PAGE_SIZE)
    raw, note = _chain_events(gw)
    account = gw.users.get(caller.username)
    ids: dict[bytes, str] = {}
    if gw.anchoring is not None:
        mine = own if role is Role.PATIENT else visible_studies(gw.db, caller.view, gw.clock.now())
        ids = {gw.anchoring.study_id(uid): uid for uid in mine}
    names = {a.address.lower(): a.username for a in gw.users.all()}
    chain, chain_page = chain_activity(
        raw, account.address, role, ids, names, chain_offset, PAGE_SIZE
    )
    return ActivityView(events, page, chain, chain_page, note)
