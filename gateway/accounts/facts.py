"""The facts ``gateway.access.decide`` is given, read from the index on every request.

``Principal`` comes from a session or token the server checked, with the account's role and
suspension read again; ``StudyFacts`` from the index's mirror of the registry: the study's
owner (``study_owners`` after a transfer, else the owner its anchored records carry, else the
patient account linked to its Patient ID, to whom it is being anchored) and the live shares
(``shares``, written when a grant is mined and deleted at its revoke). Nothing is cached: a
grant or a revoke counts from the very next request.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from gateway.access import Action, Facts, Grant, Principal, Role, StudyFacts
from gateway.accounts.links import linked_owner
from gateway.accounts.sessions import SessionView
from gateway.anchoring.outbox import ANCHORED
from gateway.index.database import Database
from gateway.index.models import anchor_batches, shares, studies, study_owners, users


def principal(db: Database, view: SessionView) -> Principal:
    """The principal behind a checked session or token (role and suspension re-read)."""
    with db.read() as conn:
        row = conn.execute(
            select(users.c.role, users.c.suspended).where(users.c.id == view.user_id)
        ).first()
    if row is None:
        return Principal(view.user_id, Role(view.role), active=False, second_factor=False)
    return Principal(view.user_id, Role(row.role), not row.suspended, view.complete)


def _user_id_of(conn: Any, address: str) -> int | None:
    row = conn.execute(
        select(users.c.id).where(func.lower(users.c.eth_address) == address.lower())
    ).first()
    return None if row is None else int(row.id)


def study_facts(db: Database, study_uid: str) -> StudyFacts | None:
    """What the index knows of ``study_uid``'s owner and shares; None: no such study."""
    with db.read() as conn:
        if (
            conn.execute(
                select(studies.c.study_uid).where(studies.c.study_uid == study_uid)
            ).first()
            is None
        ):
            return None
        owner = conn.execute(
            select(study_owners.c.owner).where(study_owners.c.study_uid == study_uid)
        ).scalar()
        if owner is None:
            owner = conn.execute(
                select(anchor_batches.c.owner)
                .where(anchor_batches.c.study_uid == study_uid, anchor_batches.c.state == ANCHORED)
                .order_by(anchor_batches.c.id.desc())
                .limit(1)
            ).scalar()
        owner_id = _user_id_of(conn, owner) if owner else None
        if owner_id is None:
            linked = linked_owner(conn, study_uid, registered=False)
            owner_id = linked.user_id if linked is not None else None
        grants = tuple(
            Grant(
                int(r.doctor_id),
                None if r.expires_at is None else datetime.fromisoformat(r.expires_at),
            )
            for r in conn.execute(select(shares).where(shares.c.study_uid == study_uid))
        )
    return StudyFacts(owner_id, grants)


def facts_for(
    db: Database, view: SessionView | None, action: Action, study_uid: str | None, now: datetime
) -> Facts:
    """Facts for ``decide``: who (None: not logged in), what, when, and which study."""
    who = principal(db, view) if view is not None else None
    study = study_facts(db, study_uid) if study_uid is not None else None
    return Facts(who, action, now, study)


def visible_studies(db: Database, view: SessionView, now: datetime) -> list[str]:
    """The Study UIDs a search may show the principal: a patient's own (transferred to,
    anchored to, or linked by Patient ID), a doctor's live shares; nobody else sees any.

    The same rule as ``decide`` for READ_METADATA, as a few set queries rather than one
    decision per study, so a list of a thousand studies costs the same as one.
    """
    from gateway.index.models import patient_links, patients

    who = principal(db, view)
    if not who.active or not who.second_factor:
        return []
    with db.read() as conn:
        if who.role is Role.DOCTOR:
            rows = conn.execute(
                select(shares.c.study_uid).where(
                    shares.c.doctor_id == who.account_id,
                    (shares.c.expires_at.is_(None)) | (shares.c.expires_at > now.isoformat()),
                )
            )
            return sorted(r.study_uid for r in rows)
        if who.role is not Role.PATIENT:
            return []
        address = conn.execute(
            select(users.c.eth_address).where(users.c.id == who.account_id)
        ).scalar_one()
        found = {
            r.study_uid
            for r in conn.execute(
                select(study_owners.c.study_uid).where(
                    func.lower(study_owners.c.owner) == address.lower()
                )
            )
        }
        found |= {
            r.study_uid
            for r in conn.execute(
                select(anchor_batches.c.study_uid).where(
                    func.lower(anchor_batches.c.owner) == address.lower(),
                    anchor_batches.c.state == ANCHORED,
                )
            )
        }
        keys = [
            r.match_key
            for r in conn.execute(
                select(patient_links.c.match_key).where(patient_links.c.user_id == who.account_id)
            )
        ]
        pids = [k[4:] for k in keys if k.startswith("pid:")]
        pkeys = [k[5:] for k in keys if k.startswith("pkey:")]
        if pids:
            found |= {
                r.study_uid
                for r in conn.execute(
                    select(studies.c.study_uid).where(studies.c.pid_blind.in_(pids))
                )
            }
        if pkeys:
            found |= {
                r.study_uid
                for r in conn.execute(
                    select(studies.c.study_uid)
                    .join(patients, patients.c.id == studies.c.patient_ref)
                    .where(patients.c.patient_key.in_(pkeys))
                )
            }
    return sorted(found)
