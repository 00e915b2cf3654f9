"""The ingest pipeline in process: outcomes, statuses, and nothing half-written on failure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from gateway import crypto
from gateway.dataset import split_part10
from gateway.errors import StorageError
from gateway.index.models import audit_events, instances, study_keys
from gateway.ingest import Incoming, Origin, Outcome
from gateway.keys import study_key_info, unlock_custodian
from gateway.service import Gateway, open_gateway
from gateway.settings import load_settings
from tests.support.dicomgen import make_ct_series

ORIGIN = Origin(kind="import", actor="test")
PASSPHRASE = "unit-test-passphrase"


@pytest.fixture(params=["sqlite", "postgresql"])
def gw(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Gateway]:
    """The gateway on each index backend: embedded SQLite and an external PostgreSQL."""
    index = {}
    if request.param == "postgresql":
        index = {"url": request.getfixturevalue("postgres_url")}
    g = open_gateway(
        load_settings(home=tmp_path / "home", custodian_passphrase=PASSPHRASE, index=index)
    )
    yield g
    g.close()


def incoming(path: Path) -> Incoming:
    part = split_part10(path.read_bytes())
    return Incoming(part.dataset, part.transfer_syntax, part.sop_class, part.sop_instance)


def rows(gw: Gateway, table: object) -> int:
    with gw.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_store_then_duplicate_then_new_version(gw: Gateway, tmp_path: Path) -> None:
    f = make_ct_series(tmp_path / "ct", 1).files[0]
    first = gw.ingestor.ingest(incoming(f), ORIGIN)
    assert (first.outcome, first.status, first.version) == (Outcome.STORED, 0, 1)
    again = gw.ingestor.ingest(incoming(f), ORIGIN)
    assert (again.outcome, again.status, again.cid) == (Outcome.DUPLICATE, 0, first.cid)
    ds = dcmread(f)
    ds.PatientName = "OTHER^NAME"
    changed = tmp_path / "changed.dcm"
    ds.save_as(changed)
    new = gw.ingestor.ingest(incoming(changed), ORIGIN)
    assert (new.outcome, new.status, new.version) == (Outcome.NEW_VERSION, 0, 2)
    assert rows(gw, instances) == 2
    kinds = [e.kind for e in gw.audit.entries()]
    assert kinds == ["instance.stored", "instance.duplicate", "instance.stored"]


def test_ciphertext_decrypts_only_with_custodian(gw: Gateway, tmp_path: Path) -> None:
    f = make_ct_series(tmp_path / "ct", 1).files[0]
    receipt = gw.ingestor.ingest(incoming(f), ORIGIN)
    assert receipt.cid is not None
    envelope = gw.store.get(receipt.cid)
    with gw.db.read() as conn:
        key_row = conn.execute(select(study_keys)).one()
    custodian = unlock_custodian(gw.keys_dir, PASSPHRASE)
    key = crypto.unwrap(custodian, key_row.custodian_wrap, study_key_info(key_row.key_id))
    plain = crypto.open_sealed(key, envelope)
    assert split_part10(plain).dataset == split_part10(f.read_bytes()).dataset
    assert dcmread(f).PatientName.original_string not in envelope


class FailingFlush:
    """A pending object whose flush fails (the disk reported an I/O error on fdatasync)."""

    cid = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"

    def wait(self) -> None:
        raise StorageError("flushing pack-000001.dat: [Errno 5] Input/output error")


class FailingStore:
    """A store whose disk is full (put fails) or fails its flush (wait fails)."""

    def __init__(self, real: object, at: str) -> None:
        self.real = real
        self.at = at

    def put_nowait(self, data: bytes) -> FailingFlush:
        if self.at == "put":
            raise StorageError("writing pack: [Errno 28] No space left on device")
        return FailingFlush()

    def put_many_nowait(self, objects: list[bytes]) -> list[FailingFlush]:
        return [self.put_nowait(o) for o in objects]

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


@pytest.mark.parametrize(
    ("at", "words"), [("put", "No space left"), ("flush", "Input/output error")]
)
def test_storage_failure_is_out_of_resources_and_leaves_nothing(
    gw: Gateway, tmp_path: Path, at: str, words: str
) -> None:
    """Whether the write or the flush fails, 0xA700 answers and no row is left behind.

    A failed write never reaches the index. A failed flush does: the row commits while the
    flush runs (gateway/settling.py), so it is withdrawn, with its new study key, and the
    audit log says so between the store and the refusal.
    """
    f = make_ct_series(tmp_path / "ct", 1).files[0]
    gw.ingestor._store = FailingStore(gw.store, at)  # type: ignore[assignment]
    receipt = gw.ingestor.ingest(incoming(f), ORIGIN)
    assert (receipt.outcome, receipt.status) == (Outcome.REFUSED, 0xA700)
    assert words in (receipt.reason or "")
    assert rows(gw, instances) == 0 and rows(gw, study_keys) == 0
    expected = {
        "put": ["instance.refused"],
        "flush": ["instance.stored", "instance.withdrawn", "instance.refused"],
    }[at]
    assert [e.kind for e in gw.audit.entries()] == expected
    assert gw.ingestor.settling.horizon() is None  # nothing left holding anchoring back


def test_oversized_instance_refused(tmp_path: Path) -> None:
    g = open_gateway(
        load_settings(
            home=tmp_path / "h", custodian_passphrase=PASSPHRASE, ingest={"max_instance_mb": 1}
        )
    )
    try:
        big = Incoming(b"\0" * (2 << 20), "1.2.840.10008.1.2.1")
        receipt = g.ingestor.ingest(big, ORIGIN)
        assert (receipt.outcome, receipt.status) == (Outcome.REFUSED, 0xA700)
        assert "exceeds the limit" in (receipt.reason or "")
    finally:
        g.close()


def test_refusals_are_audited_with_status(gw: Gateway) -> None:
    receipt = gw.ingestor.ingest(Incoming(b"\x08\x00", "1.2.840.10008.1.2.1"), ORIGIN)
    assert (receipt.outcome, receipt.status) == (Outcome.REFUSED, 0xC000)
    with gw.db.read() as conn:
        detail = conn.execute(select(audit_events.c.detail)).scalar_one()
    assert '"status":"0xC000"' in detail
    assert gw.audit.verify() is None


def test_new_key_after_idle(gw: Gateway, tmp_path: Path) -> None:
    series = make_ct_series(tmp_path / "ct", 2)
    gw.ingestor.ingest(incoming(series.files[0]), ORIGIN)
    gw.keys._idle = -1.0  # everything is idle now
    gw.keys.forget_idle()
    gw.ingestor.ingest(incoming(series.files[1]), ORIGIN)
    with gw.db.read() as conn:
        key_ids = {r.key_id for r in conn.execute(select(instances.c.key_id))}
    assert len(key_ids) == 2 and rows(gw, study_keys) == 2


def test_second_patient_in_a_study_is_refused(gw: Gateway, tmp_path: Path) -> None:
    series = make_ct_series(tmp_path / "ct", 2)
    assert gw.ingestor.ingest(incoming(series.files[0]), ORIGIN).status == 0
    ds = dcmread(series.files[1])
    ds.PatientID = "SOMEONE-ELSE"
    other = tmp_path / "other.dcm"
    ds.save_as(other)
    receipt = gw.ingestor.ingest(incoming(other), ORIGIN)
    assert (receipt.outcome, receipt.status) == (Outcome.REFUSED, 0xA900)
    assert "differs from the patient" in (receipt.reason or "")
    assert rows(gw, instances) == 1


def test_unexpected_error_is_answered_and_audited(gw: Gateway, tmp_path: Path) -> None:
    f = make_ct_series(tmp_path / "ct", 1).files[0]

    def boom(*_a: object) -> None:
        raise RuntimeError("bug")

    gw.ingestor._check_patient = boom  # type: ignore[method-assign]
    receipt = gw.ingestor.ingest(incoming(f), ORIGIN)
    assert (receipt.outcome, receipt.status) == (Outcome.REFUSED, 0xC000)
    assert [e.kind for e in gw.audit.entries()] == ["instance.refused"]


def test_hostile_values_in_indexed_attributes_do_not_crash(gw: Gateway, tmp_path: Path) -> None:
    f = make_ct_series(tmp_path / "ct", 1).files[0]
    odd = tmp_path / "odd.dcm"
    odd.write_bytes(f.read_bytes())
    # pydicom will not write an IS of 1e999, so splice it into the bytes (no group lengths).
    raw = odd.read_bytes()
    element = b"\x20\x00\x11\x00IS\x02\x001 "
    assert element in raw
    odd.write_bytes(raw.replace(element, b"\x20\x00\x11\x00IS\x06\x001e999 "))
    receipt = gw.ingestor.ingest(incoming(odd), ORIGIN)
    assert receipt.status == 0, receipt.reason
