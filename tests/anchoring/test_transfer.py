"""A study changes hands and is shared per study, through the real gateway and embedded chain.

Ingest → seal → anchor (custodian-owned) → the patient registers → ``transfer_study`` moves the
record to the patient (capsule re-sealed, opened here with the patient's own key) → the patient
grants the whole study to a doctor → more images of the study arrive, a new batch is sealed and
anchored after the grant → the doctor has access to the new record too; revoking ends both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import select

from gateway import crypto
from gateway.anchoring.manifest import Capsule, Manifest, capsule_info
from gateway.anchoring.outbox import ANCHORED
from gateway.anchoring.service import Anchoring
from gateway.anchoring.session import Session
from gateway.anchoring.transfer import transfer_now, transfer_study
from gateway.clock import FixedClock
from gateway.errors import InvalidInputError, NotFoundError
from gateway.importer import import_file
from gateway.index.models import anchor_batches
from gateway.keys import unlock_custodian
from gateway.keywraps import KeyHolder, Recipient, add_recipient, user_recipient
from gateway.ledger import Role
from gateway.ledger.embedded import EmbeddedChain
from gateway.ledger.errors import LedgerUnavailableError
from gateway.ledger.lock import LedgerLock
from gateway.service import Gateway, open_gateway
from gateway.settings import load_settings
from gateway.verify import Verifier
from tests.support.dicomgen import make_ct_series

PASSPHRASE = "transfer-test-passphrase"
ETH = 10**18


def account(label: str) -> LocalAccount:
    acct: LocalAccount = Account.from_key(hashlib.sha256(b"key:" + label.encode()).digest())
    return acct


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))


def open_gw(home: Path, clock: FixedClock) -> Gateway:
    settings = load_settings(home=home, custodian_passphrase=PASSPHRASE)
    return open_gateway(settings, clock=clock)


@pytest.fixture
def gw(tmp_path: Path, clock: FixedClock) -> Iterator[Gateway]:
    g = open_gw(tmp_path / "home", clock)
    yield g
    g.close()


def anchoring_of(gw: Gateway) -> Anchoring:
    assert gw.anchoring is not None
    return gw.anchoring


def ingest(gw: Gateway, folder: Path, count: int, study: str | None = None, seed: int = 0) -> str:
    series = make_ct_series(
        folder, count, rows=16, columns=16, patient_id="PAT-7", study_uid=study, seed=seed
    )
    for f in series.files:
        assert import_file(gw.ingestor, f, "test").ok
    return series.study_uid


def batches(gw: Gateway) -> list[Any]:
    with gw.db.read() as conn:
        return list(conn.execute(select(anchor_batches).order_by(anchor_batches.c.id)).all())


class People:
    """A patient and a doctor registered on the gateway's registry, with their own keys."""

    def __init__(self, anchoring: Anchoring, session: Session) -> None:
        self.patient, self.doctor = account("patient"), account("doctor")
        self.patient_pair = crypto.generate_keypair("x25519")
        self.doctor_pair = crypto.generate_keypair("x25519")
        chain = session.chain
        assert isinstance(chain, EmbeddedChain)
        chain.fund(self.patient.address, 10 * ETH)  # the patient signs its own grants
        admin = anchoring.accounts.admin
        ledger = session.ledger
        ledger.register_user(admin, self.patient.address, Role.PATIENT, self.patient_pair.public)
        ledger.register_user(admin, self.doctor.address, Role.DOCTOR, self.doctor_pair.public)


def test_transfer_then_grant_covers_a_batch_anchored_after_it(gw: Gateway, tmp_path: Path) -> None:
    anchoring = anchoring_of(gw)
    custodian = unlock_custodian(gw.keys_dir, PASSPHRASE)
    study = ingest(gw, tmp_path / "a", 3)
    anchoring.seal_studies({study})
    session = anchoring.connect()
    try:
        assert anchoring.send_pending(session).batches == 1
        (first,) = batches(gw)
        rid1 = bytes.fromhex(first.record_id)
        ledger = session.ledger
        sid = anchoring.study_id(study)
        custodian_address = anchoring.accounts.custodian_address
        assert ledger.study_owner(sid) == custodian_address
        people = People(anchoring, session)

        report = transfer_study(
            anchoring, session, custodian, study, people.patient.address, "x25519", "admin"
        )
        assert (report.transferred, report.resealed, report.wraps_added) == (1, 0, 1)
        record = ledger.record_by_id(rid1)
        assert record is not None and record.patient == people.patient.address
        assert ledger.study_owner(sid) == people.patient.address
        # The patient reads its record from the chain and the store with its own key alone.
        capsule = Capsule.from_bytes(
            crypto.unwrap(people.patient_pair, record.sealed_capsule, capsule_info(rid1))
        )
        keys = dict(capsule.open_study_keys(people.patient_pair))
        manifest = Manifest.from_bytes(
            crypto.open_sealed(capsule.manifest_key, gw.store.get(record.manifest_cid))
        )
        for entry in manifest.entries:
            plain = crypto.open_sealed(keys[bytes.fromhex(entry.key_id)], gw.store.get(entry.cid))
            assert len(plain) == entry.size
        (row,) = batches(gw)
        assert (row.owner, bytes(row.capsule)) == (people.patient.address, record.sealed_capsule)
        # Running it again moves nothing twice.
        again = transfer_study(
            anchoring, session, custodian, study, people.patient.address, "x25519", "admin"
        )
        assert (again.transferred, again.wraps_added) == (0, 0)

        # The patient shares the whole study: wraps for the doctor, one grant on-chain.
        doctor = Recipient(
            user_recipient(people.doctor.address), "x25519", people.doctor_pair.public
        )
        holder = KeyHolder(user_recipient(people.patient.address), people.patient_pair)
        assert add_recipient(gw.db, study, doctor, holder, gw.clock) == 1
        grant_capsule = crypto.wrap(
            people.doctor_pair.public, "x25519", capsule.manifest_key, b"test-grant"
        )
        ledger.grant_study(people.patient, sid, people.doctor.address, grant_capsule)
        assert ledger.has_access(rid1, people.doctor.address)

        # More images of the study arrive after the grant: a new batch, anchored later.
        ingest(gw, tmp_path / "a2", 2, study=study, seed=1)
        (second,) = anchoring.seal_studies({study})
        assert anchoring.send_pending(session).batches == 1
        rows = batches(gw)
        assert [r.state for r in rows] == [ANCHORED, ANCHORED]
        rid2 = second.record_id
        later = ledger.record_by_id(rid2)
        assert later is not None
        assert later.patient == people.patient.address  # the patient owns it directly
        assert rows[1].owner == people.patient.address
        assert ledger.has_access(rid2, people.doctor.address)  # the grant covers it
        assert ledger.has_access(rid2, people.patient.address)
        assert not ledger.has_access(rid2, custodian_address)

        ledger.revoke_study(people.patient, sid, people.doctor.address)
        assert not ledger.has_access(rid1, people.doctor.address)
        assert not ledger.has_access(rid2, people.doctor.address)
        # The custodian still verifies the study end to end, capsules sealed to the patient.
        verifier = Verifier(gw, custodian, lambda _deployment: ledger)
        verifier.check_studies(study)
        assert verifier.report.problems == [] and verifier.report.batches == 2
    finally:
        session.close()
    kinds = [e.kind for e in gw.audit.entries()]
    assert kinds.count("study.transferred") == 2


def test_batch_without_a_patient_wrap_goes_to_the_custodian_and_transfers_later(
    tmp_path: Path, clock: FixedClock
) -> None:
    """After a restart the study gets a new key nobody wrapped to the patient (no directory
    links the Patient ID): the batch is sealed to the custodian, the chain takes it into the
    patient's study, the grant already covers it, and a second transfer moves it."""
    home = tmp_path / "home"
    gw = open_gw(home, clock)
    try:
        anchoring = anchoring_of(gw)
        custodian = unlock_custodian(gw.keys_dir, PASSPHRASE)
        study = ingest(gw, tmp_path / "a", 2)
        anchoring.seal_studies({study})
        session = anchoring.connect()
        try:
            anchoring.send_pending(session)
            people = People(anchoring, session)
            transfer_study(
                anchoring, session, custodian, study, people.patient.address, "x25519", "admin"
            )
            sid = anchoring.study_id(study)
            session.ledger.grant_study(people.patient, sid, people.doctor.address, b"cap" * 40)
        finally:
            session.close()
        gw.close()
        gw = open_gw(home, clock)  # the study key left with the process
        anchoring = anchoring_of(gw)
        ingest(gw, tmp_path / "a2", 1, study=study, seed=1)
        (late,) = anchoring.seal_studies({study})
        assert batches(gw)[1].owner == anchoring.accounts.custodian_address
        session = anchoring.connect()
        try:
            assert anchoring.send_pending(session).batches == 1
            ledger = session.ledger
            assert ledger.has_access(late.record_id, people.doctor.address)
            report = transfer_study(
                anchoring, session, custodian, study, people.patient.address, "x25519", "admin"
            )
            assert (report.transferred, report.wraps_added) == (1, 1)
            record = ledger.record_by_id(late.record_id)
            assert record is not None and record.patient == people.patient.address
            with pytest.raises(InvalidInputError):
                transfer_study(
                    anchoring, session, custodian, study, people.doctor.address, "x25519", "x"
                )
        finally:
            session.close()
    finally:
        gw.close()


def test_transfer_now_takes_the_ledger_lock(gw: Gateway, tmp_path: Path) -> None:
    """What the command and an admin page call: refuses an unknown study, waits for nobody
    (another signer holds the lock: a clear error), and otherwise transfers."""
    anchoring = anchoring_of(gw)
    custodian = unlock_custodian(gw.keys_dir, PASSPHRASE)
    study = ingest(gw, tmp_path / "a", 1)
    anchoring.seal_studies({study})
    session = anchoring.connect()
    try:
        anchoring.send_pending(session)
        people = People(anchoring, session)
    finally:
        session.close()
    patient = people.patient.address
    with pytest.raises(NotFoundError):
        transfer_now(anchoring, custodian, "1.2.3.4", patient, "x25519", "admin")
    other = LedgerLock(anchoring.lock.path)  # another process's hold, as flock sees it
    assert other.acquire()
    try:
        with pytest.raises(LedgerUnavailableError, match="holds the ledger"):
            transfer_now(anchoring, custodian, study, patient, "x25519", "admin")
    finally:
        other.release()
    report = transfer_now(anchoring, custodian, study, patient, "x25519", "admin")
    assert report.transferred == 1
    assert batches(gw)[0].owner == patient
