"""Study key wraps per recipient: written in the ingest transaction, read through one function.

Real index, real HPKE: every wrap checked here is opened with the recipient's own private key.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from gateway import crypto
from gateway.errors import InvalidInputError
from gateway.importer import import_file
from gateway.index.models import key_wraps, study_keys
from gateway.keys import study_key_info, unlock_custodian
from gateway.keywraps import (
    CUSTODIAN,
    KeyHolder,
    MissingKeyWrapError,
    Recipient,
    add_recipient,
    recipient_address,
    study_key_ids,
    user_recipient,
    wraps_for,
)
from gateway.service import Gateway, open_gateway
from gateway.settings import load_settings
from tests.support.dicomgen import make_ct_series

PASSPHRASE = "keywraps-test-passphrase"
PATIENT_ADDRESS = "0x" + "ab" * 20
DOCTOR_ADDRESS = "0x" + "CD" * 20


class Directory:
    """A directory that links one Patient ID to one account (the portal's job later)."""

    def __init__(self, patient_id: str, recipient: Recipient) -> None:
        self.patient_id = patient_id
        self.recipient = recipient
        self.asked: list[str] = []

    def recipients_for(
        self, patient_id: str, issuer: str = "", study_uid: str = ""
    ) -> Sequence[Recipient]:
        self.asked.append(patient_id)
        return [self.recipient] if patient_id == self.patient_id else []


@pytest.fixture
def patient_pair() -> crypto.KeyPair:
    return crypto.generate_keypair("x25519")


@pytest.fixture(params=["sqlite", "postgresql"])
def index(request: pytest.FixtureRequest) -> dict[str, str]:
    """Each index backend: embedded SQLite and an external PostgreSQL."""
    if request.param == "postgresql":
        return {"url": request.getfixturevalue("postgres_url")}
    return {}


def open_gw(home: Path, index: dict[str, str], directory: Directory | None = None) -> Gateway:
    settings = load_settings(home=home, custodian_passphrase=PASSPHRASE, index=index)
    if directory is None:
        return open_gateway(settings)
    return open_gateway(settings, recipients=directory)


@pytest.fixture
def gw(tmp_path: Path, index: dict[str, str]) -> Iterator[Gateway]:
    g = open_gw(tmp_path / "home", index)
    yield g
    g.close()


def ingest(gw: Gateway, folder: Path, count: int = 2, patient: str = "PAT-1") -> str:
    series = make_ct_series(folder, count, rows=16, columns=16, patient_id=patient)
    for f in series.files:
        assert import_file(gw.ingestor, f, "test").ok
    return series.study_uid


def all_wraps(gw: Gateway) -> list[tuple[str, str]]:
    with gw.db.read() as conn:
        return sorted((r.key_id, r.recipient) for r in conn.execute(select(key_wraps)))


def test_recipient_names() -> None:
    assert user_recipient(DOCTOR_ADDRESS) == "user:0x" + "cd" * 20
    assert recipient_address(user_recipient(PATIENT_ADDRESS)) == PATIENT_ADDRESS
    assert recipient_address(CUSTODIAN) is None
    with pytest.raises(InvalidInputError):
        user_recipient("alice")


def test_custodian_wrap_written_once_per_key(gw: Gateway, tmp_path: Path) -> None:
    study = ingest(gw, tmp_path / "a", 3)
    with gw.db.read() as conn:
        (key_id,) = study_key_ids(conn, study)
        row = conn.execute(select(study_keys)).one()
        (wrap,) = wraps_for(conn, [key_id], CUSTODIAN).values()
    assert all_wraps(gw) == [(key_id, CUSTODIAN)]
    assert wrap.wrap == bytes(row.custodian_wrap)  # the same seal, not a second one
    pair = unlock_custodian(gw.keys_dir, PASSPHRASE)
    assert len(crypto.unwrap(pair, wrap.wrap, study_key_info(key_id))) == 32


def test_linked_patient_gets_a_wrap_in_the_ingest_transaction(
    tmp_path: Path, index: dict[str, str], patient_pair: crypto.KeyPair
) -> None:
    patient = Recipient(user_recipient(PATIENT_ADDRESS), patient_pair.kem, patient_pair.public)
    directory = Directory("PAT-1", patient)
    gw = open_gw(tmp_path / "home", index, directory)
    try:
        linked = ingest(gw, tmp_path / "a", 3, patient="PAT-1")
        unlinked = ingest(gw, tmp_path / "b", 1, patient="PAT-2")
        assert directory.asked == ["PAT-1", "PAT-2"]  # once per new study key, not per instance
        custodian = unlock_custodian(gw.keys_dir, PASSPHRASE)
        with gw.db.read() as conn:
            (k1,) = study_key_ids(conn, linked)
            (k2,) = study_key_ids(conn, unlinked)
            mine = wraps_for(conn, [k1, k2], patient.name)
            theirs = wraps_for(conn, [k1], CUSTODIAN)
        assert set(mine) == {k1}
        key = crypto.unwrap(patient_pair, mine[k1].wrap, study_key_info(k1))
        assert key == crypto.unwrap(custodian, theirs[k1].wrap, study_key_info(k1))
        assert all_wraps(gw) == sorted([(k1, CUSTODIAN), (k1, patient.name), (k2, CUSTODIAN)])
    finally:
        gw.close()


def test_old_rows_fall_back_to_study_keys(gw: Gateway, tmp_path: Path) -> None:
    """A home written before key_wraps existed: the custodian's wrap is still found."""
    study = ingest(gw, tmp_path / "a")
    with gw.db.write() as conn:
        conn.execute(delete(key_wraps))
    with gw.db.read() as conn:
        (key_id,) = study_key_ids(conn, study)
        found = wraps_for(conn, [key_id], CUSTODIAN)
        assert wraps_for(conn, [key_id], user_recipient(PATIENT_ADDRESS)) == {}
    pair = unlock_custodian(gw.keys_dir, PASSPHRASE)
    assert len(crypto.unwrap(pair, found[key_id].wrap, study_key_info(key_id))) == 32


def test_add_recipient_wraps_every_key_of_the_study(
    tmp_path: Path, index: dict[str, str], patient_pair: crypto.KeyPair
) -> None:
    first = open_gw(tmp_path / "home", index)
    study = ingest(first, tmp_path / "a")
    first.close()
    # The study resumes after a restart (its key left with the process): a second study key.
    gw = open_gw(tmp_path / "home", index)
    try:
        _share_twice(gw, tmp_path, study, patient_pair)
    finally:
        gw.close()


def _share_twice(gw: Gateway, tmp_path: Path, study: str, patient_pair: crypto.KeyPair) -> None:
    more = make_ct_series(
        tmp_path / "a2", 1, rows=16, columns=16, study_uid=study, patient_id="PAT-1", seed=1
    )
    assert import_file(gw.ingestor, more.files[0], "test").ok
    custodian = KeyHolder(CUSTODIAN, unlock_custodian(gw.keys_dir, PASSPHRASE))
    patient = Recipient(user_recipient(PATIENT_ADDRESS), patient_pair.kem, patient_pair.public)
    assert add_recipient(gw.db, study, patient, custodian, gw.clock) == 2
    assert add_recipient(gw.db, study, patient, custodian, gw.clock) == 0  # idempotent
    # The patient, holding its own wraps now, shares with a doctor.
    doctor_pair = crypto.generate_keypair("x25519")
    doctor = Recipient(user_recipient(DOCTOR_ADDRESS), doctor_pair.kem, doctor_pair.public)
    assert add_recipient(gw.db, study, doctor, KeyHolder(patient.name, patient_pair), gw.clock) == 2
    with gw.db.read() as conn:
        ids = study_key_ids(conn, study)
        theirs = wraps_for(conn, ids, doctor.name)
        ours = wraps_for(conn, ids, CUSTODIAN)
    assert len(ids) == 2
    for k in ids:
        assert crypto.unwrap(doctor_pair, theirs[k].wrap, study_key_info(k)) == crypto.unwrap(
            custodian.pair, ours[k].wrap, study_key_info(k)
        )


def test_add_recipient_refuses_a_holder_without_wraps(
    gw: Gateway, tmp_path: Path, patient_pair: crypto.KeyPair
) -> None:
    study = ingest(gw, tmp_path / "a")
    stranger = KeyHolder(user_recipient(DOCTOR_ADDRESS), crypto.generate_keypair("x25519"))
    patient = Recipient(user_recipient(PATIENT_ADDRESS), patient_pair.kem, patient_pair.public)
    with pytest.raises(MissingKeyWrapError):
        add_recipient(gw.db, study, patient, stranger, gw.clock)
    assert all(r == CUSTODIAN for _, r in all_wraps(gw))
