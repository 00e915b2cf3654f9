"""A user's activity page: who accessed my studies and when, and what the chain says.

Two sources, each newest first and paged:

* the audit log (hash-chained, anchored): for a patient, every decision (``access.allowed``
  / ``access.denied``), download, share and revoke about a study the patient owns, and what
  happened to the account itself (recovery, password or TOTP change, suspension, logins);
  for a doctor, what the doctor did, and the account's own events;
* the registry contract's events about the user: records anchored to or transferred to the
  patient, grants and revokes the patient signed (or, for a doctor, received).

The set of studies is the caller's own (``facts.visible_studies``) and the events are chosen
by it and by the caller's own name and address only, so nobody sees another patient's
activity. Pure selection here; the portal passes in what it read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select

from gateway.access import Action, Role
from gateway.index.database import Database
from gateway.index.models import audit_events
from gateway.ledger.ledger import LedgerEvent

#: Audit events about a study (their subject is the Study Instance UID).
STUDY_KINDS = ("access.allowed", "access.denied", "study.download", "study.shared", "study.revoked")
#: Audit events about the account itself (their subject is the username).
ACCOUNT_KINDS = (
    "login.ok",
    "login.failed",
    "user.enrolled",
    "user.recovered",
    "user.password-changed",
    "user.totp-changed",
    "user.suspended",
    "user.reinstated",
    "patient.linked",
)
#: Registry events a patient sees (the record's owner is the patient).
PATIENT_CHAIN = {"RecordAnchored", "RecordTransferred", "AccessGranted", "AccessRevoked"}
#: Registry events about the account itself.
ACCOUNT_CHAIN = {"UserAdded", "UserKeyUpdated", "UserSuspended", "UserReinstated"}
#: Detail fields worth showing (never a secret: the audit log holds none).
SHOWN_DETAIL = ("action", "rule", "reason", "via", "doctor", "expires", "factor", "files", "why")


@dataclass(frozen=True)
class AuditActivity:
    """One audit event as the activity page shows it."""

    seq: int
    ts: str
    kind: str
    actor: str
    subject: str
    outcome: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class ChainActivity:
    """One registry event about the user."""

    name: str
    block_number: int
    tx_hash: str
    study: str  # the Study UID when it is the user's, else the opaque on-chain id
    counterpart: str  # the doctor (for a patient) or the patient (for a doctor), if any


@dataclass(frozen=True)
class Page:
    """A page of a newest-first list."""

    offset: int
    limit: int
    more: bool


def _detail(text: str) -> dict[str, Any]:
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(found, dict):
        return {}
    return {k: found[k] for k in SHOWN_DETAIL if k in found}


def audit_activity(
    db: Database,
    username: str,
    role: Role,
    own_studies: Sequence[str],
    offset: int,
    limit: int,
) -> tuple[list[AuditActivity], Page]:
    """The audit events of the user's activity page, newest first."""
    own_account = and_(audit_events.c.subject == username, audit_events.c.kind.in_(ACCOUNT_KINDS))
    if role is Role.PATIENT:
        about_studies = and_(
            audit_events.c.kind.in_(STUDY_KINDS), audit_events.c.subject.in_(list(own_studies))
        )
    else:  # a doctor's own requests about studies (not the decisions about a role's pages)
        about_studies = and_(
            audit_events.c.kind.in_(STUDY_KINDS),
            audit_events.c.actor == username,
            audit_events.c.subject.not_in([a.value for a in Action]),
        )
    offset, limit = max(0, offset), max(1, limit)
    query = (
        select(audit_events)
        .where(or_(own_account, about_studies))
        .order_by(audit_events.c.seq.desc())
        .offset(offset)
        .limit(limit + 1)
    )
    with db.read() as conn:
        rows = conn.execute(query).all()
    found = [
        AuditActivity(r.seq, r.ts, r.kind, r.actor, r.subject, r.outcome, _detail(r.detail))
        for r in rows[:limit]
    ]
    return found, Page(offset, limit, len(rows) > limit)


def _lower(value: Any) -> str:
    return str(value).lower() if value is not None else ""


def chain_activity(
    events: Sequence[LedgerEvent],
    address: str,
    role: Role,
    study_ids: dict[bytes, str],
    names: dict[str, str],
    offset: int,
    limit: int,
) -> tuple[list[ChainActivity], Page]:
    """The registry events about ``address``, newest first: for a patient its records and the
    grants it signed, for a doctor the grants it received; the account events for both.
    ``study_ids``: on-chain id -> Study UID of the user's own studies; ``names``: lower-case
    address -> username."""
    me = address.lower()
    chosen: list[ChainActivity] = []
    for e in events:
        a = e.args
        if e.name in ACCOUNT_CHAIN:
            mine = _lower(a.get("account")) == me
            other = ""
        elif role is Role.PATIENT and e.name in PATIENT_CHAIN:
            mine = _lower(a.get("patient")) == me
            other = names.get(_lower(a.get("doctor")), _lower(a.get("doctor")))
        elif role is Role.DOCTOR and e.name in ("AccessGranted", "AccessRevoked"):
            mine = _lower(a.get("doctor")) == me
            other = names.get(_lower(a.get("patient")), _lower(a.get("patient")))
        else:
            mine = False
        if not mine:
            continue
        raw = a.get("studyId")
        study = ""
        if isinstance(raw, bytes):
            study = study_ids.get(raw, "0x" + raw.hex())
        chosen.append(ChainActivity(e.name, e.block_number, "0x" + e.tx_hash.hex(), study, other))
    chosen.reverse()  # the chain gives them oldest first
    offset, limit = max(0, offset), max(1, limit)
    return chosen[offset : offset + limit], Page(offset, limit, len(chosen) > offset + limit)
