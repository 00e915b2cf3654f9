"""Patient links: a patient account tied to a DICOM Patient ID (with an issuer, or any).

One account may hold several links (IDs from several issuers and sites), each its own
command; one identity belongs to one account. The Patient ID is stored sealed under the
index key; matching uses the index's blind indexes, exactly as ingest writes them:

* with an issuer: ``"pkey:" + patients.patient_key`` (Patient ID + issuer);
* without: ``"pid:" + the Patient ID blind`` (that ID whatever the issuer).

From the link on:

* ``LinkedRecipients`` (the ``keywraps.RecipientDirectory`` ingest is given) makes every new
  study key of that patient wrapped to the patient's HPKE key as well as the custodian's;
* ``linked_owner`` makes the study's records anchored to the patient's account (once the
  registry knows it as an active patient; until then the custodian's, transferred later).

``link_patient`` is the admin ceremony: studies that arrived before the link are handed over
with ``gateway.anchoring.transfer.transfer_study`` (the study keys re-wrapped to the patient
with the custodian's unlocked key, the custodian-owned records moved on-chain), audited.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, or_, select

from gateway import crypto
from gateway.access import Role
from gateway.accounts.errors import AccountExistsError
from gateway.audit import AuditEvent, AuditLog
from gateway.clock import Clock
from gateway.errors import ConfigError, InvalidInputError
from gateway.index.database import Database
from gateway.index.models import patient_links, patients, shares, studies, users
from gateway.index.sealing import IndexCipher
from gateway.keywraps import CUSTODIAN, KeyHolder, Recipient, add_recipient, user_recipient

if TYPE_CHECKING:
    from gateway.accounts.users import Account
    from gateway.anchoring.service import Anchoring
    from gateway.anchoring.session import Session


def match_keys(cipher: IndexCipher, patient_id: str, issuer: str) -> list[str]:
    """The link keys a study of (``patient_id``, ``issuer``) is matched by."""
    return [
        "pid:" + cipher.patient_id_blind(patient_id),
        "pkey:" + cipher.patient_key(patient_id, issuer, ""),
    ]


@dataclass(frozen=True)
class LinkedOwner:
    """The patient account a study's records go to."""

    user_id: int
    address: str
    kem: crypto.KemName
    public: bytes

    @property
    def recipient(self) -> str:
        """Its name in ``key_wraps``."""
        return user_recipient(self.address)


class LinkedRecipients:
    """The ingest hook: the linked patient of a Patient ID gets a wrap of each new key, and
    so does every doctor the study is shared with (a live, unexpired share).

    A study gets a new study key when instances arrive after its key went idle
    (``ingest.study_key_idle_seconds``); without a wrap of that key the doctor it was shared
    with could read only the instances sent before. The on-chain grant already covers every
    record of the study, those anchored later included, so the wrap is all that is needed.

    A few indexed reads per new study key (not per instance), never a write; reads the index
    each time, so a link or share made by another process (the CLI) counts from its commit on.
    """

    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        if db.cipher is None:
            raise ConfigError("patient links need the index opened with its index key")
        self._db = db
        self._cipher = db.cipher
        self._clock = clock

    def recipients_for(
        self, patient_id: str, issuer: str = "", study_uid: str = ""
    ) -> Sequence[Recipient]:
        """The linked patient account(s) of this Patient ID (and issuer), then the doctors
        ``study_uid`` is shared with."""
        found: list[Recipient] = []
        with self._db.read() as conn:
            if patient_id:
                rows = conn.execute(
                    select(users.c.eth_address, users.c.hpke_kem, users.c.hpke_public)
                    .join(patient_links, patient_links.c.user_id == users.c.id)
                    .where(
                        patient_links.c.match_key.in_(match_keys(self._cipher, patient_id, issuer))
                    )
                ).all()
                found += [
                    Recipient(user_recipient(r.eth_address), r.hpke_kem, bytes(r.hpke_public))
                    for r in rows
                ]
            if study_uid:
                found += _share_recipients(conn, study_uid, self._clock)
        return found


def _share_recipients(conn: Any, study_uid: str, clock: Clock | None) -> list[Recipient]:
    """The doctors with a live share of ``study_uid`` (not expired, not suspended)."""
    query = (
        select(users.c.eth_address, users.c.hpke_kem, users.c.hpke_public)
        .join(shares, shares.c.doctor_id == users.c.id)
        .where(
            shares.c.study_uid == study_uid,
            users.c.role == Role.DOCTOR.value,
            users.c.suspended.is_(False),
        )
    )
    if clock is not None:
        now = clock.now().isoformat()
        query = query.where(shares.c.expires_at.is_(None) | (shares.c.expires_at > now))
    return [
        Recipient(user_recipient(r.eth_address), r.hpke_kem, bytes(r.hpke_public))
        for r in conn.execute(query).all()
    ]


def linked_owner(conn: Any, study_uid: str, *, registered: bool = True) -> LinkedOwner | None:
    """The active patient account linked to ``study_uid``'s patient, if any; ``registered``
    (for anchoring): only once the registry knows it (``chain_state`` synced)."""
    found = conn.execute(
        select(studies.c.pid_blind, patients.c.patient_key)
        .join(patients, patients.c.id == studies.c.patient_ref)
        .where(studies.c.study_uid == study_uid)
    ).first()
    if found is None:
        return None
    row = conn.execute(
        select(users.c.id, users.c.eth_address, users.c.hpke_kem, users.c.hpke_public)
        .join(patient_links, patient_links.c.user_id == users.c.id)
        .where(
            patient_links.c.match_key.in_(["pid:" + found.pid_blind, "pkey:" + found.patient_key]),
            users.c.role == Role.PATIENT.value,
            users.c.suspended.is_(False),
            users.c.chain_state.in_(["synced"] if registered else ["synced", "pending"]),
        )
        .order_by(patient_links.c.id)
    ).first()
    if row is None:
        return None
    return LinkedOwner(int(row.id), row.eth_address, row.hpke_kem, bytes(row.hpke_public))


@dataclass(frozen=True)
class PatientLink:
    """One link, with its Patient ID opened (for the account's owner and admins)."""

    id: int
    user_id: int
    patient_id: str
    issuer: str | None
    created_at: str


@dataclass(frozen=True)
class LinkReport:
    """What one ``link_patient`` did."""

    link: PatientLink
    studies: list[str]
    records_moved: int
    wraps_added: int


class PatientLinks:
    """Links in the index."""

    def __init__(self, db: Database, audit: AuditLog, clock: Clock) -> None:
        if db.cipher is None:
            raise ConfigError("patient links need the index opened with its index key")
        self._db = db
        self._cipher = db.cipher
        self._audit = audit
        self._clock = clock

    def _key(self, patient_id: str, issuer: str | None) -> str:
        if issuer:
            return "pkey:" + str(self._cipher.patient_key(patient_id, issuer, ""))
        return "pid:" + str(self._cipher.patient_id_blind(patient_id))

    def check(self, account: Account, patient_id: str, issuer: str | None) -> None:
        """Refuse a link that cannot be made (InvalidInputError / AccountExistsError)."""
        if account.role is not Role.PATIENT:
            raise InvalidInputError(
                f"{account.username!r} is a {account.role.value} account; only patient"
                " accounts are linked to a Patient ID"
            )
        if not patient_id.strip():
            raise InvalidInputError("the Patient ID is empty")
        pid_blind = self._cipher.patient_id_blind(patient_id)
        key = self._key(patient_id, issuer)
        with self._db.read() as conn:
            rows = conn.execute(
                select(patient_links.c.user_id, patient_links.c.match_key).where(
                    or_(patient_links.c.pid_blind == pid_blind, patient_links.c.match_key == key)
                )
            ).all()
        for r in rows:
            if r.match_key == key and r.user_id == account.id:
                raise AccountExistsError(f"{account.username!r} is already linked to this ID")
            overlaps = r.match_key == key or r.match_key.startswith("pid:") or not issuer
            if r.user_id != account.id and overlaps:
                raise AccountExistsError(
                    "this Patient ID (with this issuer) is already linked to another account"
                )

    def add(self, account: Account, patient_id: str, issuer: str | None) -> PatientLink:
        """Store the link (``check`` first)."""
        self.check(account, patient_id, issuer)
        now = self._clock.now().isoformat()
        key = self._key(patient_id, issuer)
        with self._db.write() as conn:
            result = conn.execute(
                insert(patient_links).values(
                    user_id=account.id,
                    match_key=key,
                    pid_blind=self._cipher.patient_id_blind(patient_id),
                    patient_id_sealed=self._cipher.seal(
                        "patient_links", "patient_id", key, patient_id.encode()
                    ),
                    issuer_sealed=None
                    if not issuer
                    else self._cipher.seal("patient_links", "issuer", key, issuer.encode()),
                    created_at=now,
                )
            )
            pk = result.inserted_primary_key
            assert pk is not None
        return PatientLink(int(pk[0]), account.id, patient_id, issuer or None, now)

    def of(self, user_id: int) -> list[PatientLink]:
        """The account's links, oldest first."""
        with self._db.read() as conn:
            rows = conn.execute(
                select(patient_links)
                .where(patient_links.c.user_id == user_id)
                .order_by(patient_links.c.id)
            ).all()
        out = []
        for r in rows:
            pid = self._cipher.open("patient_links", "patient_id", r.match_key, r.patient_id_sealed)
            issuer = (
                None
                if r.issuer_sealed is None
                else self._cipher.open("patient_links", "issuer", r.match_key, r.issuer_sealed)
            )
            out.append(
                PatientLink(
                    int(r.id),
                    int(r.user_id),
                    pid.decode(),
                    None if issuer is None else issuer.decode(),
                    r.created_at,
                )
            )
        return out

    def studies_of(self, patient_id: str, issuer: str | None) -> list[str]:
        """Study UIDs in the index for this Patient ID (and issuer), oldest first."""
        query = select(studies.c.study_uid).order_by(studies.c.created_at, studies.c.study_uid)
        if issuer:
            query = query.join(patients, patients.c.id == studies.c.patient_ref).where(
                patients.c.patient_key == self._cipher.patient_key(patient_id, issuer, "")
            )
        else:
            query = query.where(studies.c.pid_blind == self._cipher.patient_id_blind(patient_id))
        with self._db.read() as conn:
            return [r.study_uid for r in conn.execute(query)]


def link_patient(
    links: PatientLinks,
    account: Account,
    patient_id: str,
    issuer: str | None,
    anchoring: Anchoring | None,
    custodian: crypto.KeyPair | None,
    actor: str,
    audit: AuditLog,
    session: Session | None = None,
) -> LinkReport:
    """The link ceremony: link, then hand every earlier study of that patient over.

    Checks everything that can be refused before writing anything: the link itself, the
    custodian key when earlier studies exist, and the ledger (held by a running ``up``:
    LedgerUnavailableError, stop it for the ceremony). ``session``: the ledger session of
    the process that holds the ledger already (the portal, through ``run_on_ledger``).
    """
    from gateway.anchoring.transfer import transfer_study
    from gateway.ledger.errors import LedgerUnavailableError

    links.check(account, patient_id, issuer)
    earlier = links.studies_of(patient_id, issuer)
    if account.suspended:
        raise InvalidInputError(f"{account.username!r} is suspended; reinstate it first")
    if earlier and custodian is None:
        raise ConfigError(
            f"{len(earlier)} study(ies) of this patient arrived before the link and must be"
            " re-sealed to the patient: set ZTBRIDGE_CUSTODIAN_PASSPHRASE for this command"
        )
    lock = anchoring.lock if anchoring is not None and session is None else None
    ours = lock is not None and not lock.held
    if lock is not None and ours and earlier and not lock.acquire():
        raise LedgerUnavailableError(
            f"another ztbridge process (pid {lock.holder() or '?'}) holds the ledger; stop"
            " 'ztbridge up' for the link ceremony (earlier studies move on-chain)"
        )
    try:
        link = links.add(account, patient_id, issuer)
        moved = added = 0
        if earlier and custodian is not None:
            if anchoring is None:
                recipient = Recipient(account.recipient, account.kem, account.hpke_public)
                holder = KeyHolder(CUSTODIAN, custodian)
                for uid in earlier:
                    added += add_recipient(links._db, uid, recipient, holder, links._clock)
            else:
                from gateway.accounts.onchain import sync_users

                live = session if session is not None else anchoring.connect()
                try:
                    sync_users(anchoring.db, live.ledger, anchoring.accounts.admin, audit)
                    for uid in earlier:
                        report = transfer_study(
                            anchoring,
                            live,
                            custodian,
                            uid,
                            account.address,
                            account.kem,
                            actor,
                        )
                        moved += report.transferred
                        added += report.wraps_added
                finally:
                    if session is None:
                        live.close()
    finally:
        if lock is not None and ours:
            lock.release()
    audit.record(
        AuditEvent(
            "patient.linked",
            actor,
            account.username,
            "ok",
            {"link": link.id, "studies": len(earlier), "records_moved": moved},
        )
    )
    return LinkReport(link, earlier, moved, added)
