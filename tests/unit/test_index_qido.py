"""The QIDO-shaped index: level rows written by ingest, PHI sealed at rest, and search."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import select, update

from gateway.dataset import split_part10
from gateway.errors import ConfigError, InvalidEnvelopeError
from gateway.index.models import patients, series, studies
from gateway.index.sealing import default_key_path, load_index_key
from gateway.ingest import Incoming, Origin, Outcome
from gateway.search import Search, StudyQuery, Visible
from gateway.service import Gateway, open_gateway
from gateway.settings import load_settings
from gateway.status import gather
from tests.support.dicomgen import make_ct_series

ORIGIN = Origin(kind="import", actor="test")


@pytest.fixture(params=["sqlite", "postgresql"])
def gw(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Gateway]:
    index = {}
    if request.param == "postgresql":
        index = {"url": request.getfixturevalue("postgres_url")}
    g = open_gateway(
        load_settings(home=tmp_path / "home", custodian_passphrase="x" * 12, index=index)
    )
    yield g
    g.close()


def _in(path: Path) -> Incoming:
    part = split_part10(path.read_bytes())
    return Incoming(part.dataset, part.transfer_syntax, part.sop_class, part.sop_instance)


def _edited(src: Path, out: Path, **attrs: object) -> Path:
    ds = dcmread(src)
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(out)
    return out


def _search(gw: Gateway) -> Search:
    assert gw.db.cipher is not None
    return Search(gw.db, gw.db.cipher)


def test_levels_and_counts_are_maintained(gw: Gateway, tmp_path: Path) -> None:
    ct = make_ct_series(tmp_path / "ct", 3, rows=8, columns=8, patient_id="PAT-42")
    for f in ct.files:
        assert gw.ingestor.ingest(_in(f), ORIGIN).outcome is Outcome.STORED
    # A second series (MR) in the same study, and a new version that must not be counted.
    mr = _edited(ct.files[0], tmp_path / "mr.dcm", Modality="MR", SeriesInstanceUID=generate_uid(),
                 SOPInstanceUID=generate_uid(), SeriesDescription="T1 AX")  # fmt: skip
    assert gw.ingestor.ingest(_in(mr), ORIGIN).outcome is Outcome.STORED
    v2 = _edited(ct.files[1], tmp_path / "v2.dcm", PatientName="TEST^SYNTHETIC^V2")
    assert gw.ingestor.ingest(_in(v2), ORIGIN).outcome is Outcome.NEW_VERSION
    study_uid = dcmread(ct.files[0]).StudyInstanceUID
    found = _search(gw).studies(StudyQuery(patient_id="PAT-42"))
    assert [s.study_uid for s in found] == [study_uid]
    s = found[0]
    assert (s.num_series, s.num_instances, s.modalities) == (2, 4, ("CT", "MR"))
    assert (s.patient_name, s.birth_date, s.study_date) == (
        "TEST^SYNTHETIC",
        "19700101",
        "20260101",
    )
    assert s.accession == "ACC" + "PAT-42"[-6:] and s.reconcile is None
    detail = _search(gw).study_detail(study_uid)
    assert {(x.modality, x.num_instances) for x in detail.series} == {("CT", 3), ("MR", 1)}
    mr_series = next(x for x in detail.series if x.modality == "MR")
    assert mr_series.description == "T1 AX"
    listed = _search(gw).instances(study_uid, dcmread(ct.files[0]).SeriesInstanceUID)
    assert [i.instance_number for i in listed] == [1, 2, 3]
    assert listed[1].version == 2
    assert listed[1].metadata["00100010"]["Value"] == [{"Alphabetic": "TEST^SYNTHETIC^V2"}]


def test_searches_by_each_filter(gw: Gateway, tmp_path: Path) -> None:
    made = []
    for i, (pid, date, mod, name) in enumerate(
        [("P1", "20250101", "CT", "DOE^JOHN"), ("P2", "20250601", "MR", "ROE^JANE"),
         ("P3", "20260101", "CT", "DOE^JANE")]
    ):  # fmt: skip
        f = make_ct_series(tmp_path / f"s{i}", 1, rows=8, columns=8, patient_id=pid).files[0]
        f = _edited(f, tmp_path / f"e{i}.dcm", StudyDate=date, Modality=mod, PatientName=name,
                    AccessionNumber=f"A{i}")  # fmt: skip
        assert gw.ingestor.ingest(_in(f), ORIGIN).ok
        made.append(dcmread(f).StudyInstanceUID)
    s = _search(gw)

    def uids(**kw: object) -> set[str]:
        return {r.study_uid for r in s.studies(StudyQuery(**kw))}  # type: ignore[arg-type]

    assert uids() == set(made)
    assert uids(patient_id="P2") == {made[1]}
    assert uids(patient_id="P2", issuer="") == {made[1]}
    assert uids(patient_id="P2", issuer="OTHER") == set()
    assert uids(accession="A2") == {made[2]}
    assert uids(modality="CT") == {made[0], made[2]}
    assert uids(date_from="20250301", date_to="20251231") == {made[1]}
    assert uids(patient_name="doe*") == {made[0], made[2]}
    assert uids(patient_name="?OE^JAN?") == {made[1], made[2]}
    assert uids(patient_name="DOE") == set()
    assert uids(study_uid=made[0]) == {made[0]}
    assert [r.study_date for r in s.studies(StudyQuery(limit=2))] == ["20260101", "20250601"]
    assert [r.study_date for r in s.studies(StudyQuery(limit=1, offset=2))] == ["20250101"]
    assert [r.study_uid for r in s.studies(StudyQuery(patient_name="DOE*", limit=1, offset=1))] == [
        made[0]
    ]
    # The access restriction: nothing outside the visible set is returned.
    only = Visible(study_uids=frozenset({made[1]}))
    assert {r.study_uid for r in s.studies(StudyQuery(), only)} == {made[1]}
    assert s.studies(StudyQuery(patient_name="DOE*"), only) == []
    assert s.studies(StudyQuery(), Visible()) == []
    assert gw.db.cipher is not None
    p3 = Visible(patient_keys=frozenset({gw.db.cipher.patient_key("P3", "", "")}))
    assert {r.study_uid for r in s.studies(StudyQuery(), p3)} == {made[2]}


def test_no_identifying_value_is_in_clear_in_the_index(tmp_path: Path) -> None:
    g = open_gateway(load_settings(home=tmp_path / "home", custodian_passphrase="x" * 12))
    try:
        f = make_ct_series(tmp_path / "ct", 1, rows=8, columns=8, patient_id="SECRETPID77").files[0]
        f = _edited(f, tmp_path / "e.dcm", PatientName="SECRETNAME^ALICE",
                    AccessionNumber="SECRETACC9", StudyDescription="SECRETDESC",
                    ReferringPhysicianName="SECRETREF^DR",
                    IssuerOfPatientID="SECRETISSUER", PatientBirthDate="19111111")  # fmt: skip
        assert g.ingestor.ingest(_in(f), ORIGIN).ok
        assert _search(g).studies(StudyQuery(patient_id="SECRETPID77"))[0].patient_name == (
            "SECRETNAME^ALICE"
        )
    finally:
        g.close()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "home").glob("index.sqlite3*"))
    assert raw, "the index files exist"
    for secret in (b"SECRETPID77", b"SECRETNAME", b"SECRETACC9", b"SECRETDESC", b"SECRETREF",
                   b"SECRETISSUER", b"19111111"):  # fmt: skip
        assert secret not in raw, secret


def test_a_sealed_value_moved_to_another_row_fails(gw: Gateway, tmp_path: Path) -> None:
    for i, name in enumerate(["ONE^A", "TWO^B"]):
        f = make_ct_series(tmp_path / f"s{i}", 1, rows=8, columns=8, patient_id=f"M{i}").files[0]
        assert gw.ingestor.ingest(
            _in(_edited(f, tmp_path / f"{i}.dcm", PatientName=name)), ORIGIN
        ).ok
    with gw.db.read() as conn:
        rows = conn.execute(
            select(patients.c.id, patients.c.name_sealed).order_by(patients.c.id)
        ).all()
    with gw.db.write() as conn:
        conn.execute(
            update(patients)
            .where(patients.c.id == rows[1].id)
            .values(name_sealed=rows[0].name_sealed)
        )
    with pytest.raises(InvalidEnvelopeError):
        _search(gw).studies(StudyQuery(patient_id="M1"))


def test_missing_patient_id_is_stored_and_listed_for_reconciliation(
    gw: Gateway, tmp_path: Path
) -> None:
    f = make_ct_series(tmp_path / "ct", 2, rows=8, columns=8).files
    anonymous = [_edited(x, tmp_path / f"a{i}.dcm", PatientID="") for i, x in enumerate(f)]
    receipts = [gw.ingestor.ingest(_in(a), ORIGIN) for a in anonymous]
    assert [r.outcome for r in receipts] == [Outcome.STORED, Outcome.STORED]
    listed = _search(gw).to_reconcile()
    assert [(r.study_uid, r.reconcile, r.patient_id) for r in listed] == [
        (receipts[0].study_uid, "patient-id-missing", "")
    ]
    with gw.db.read() as conn:
        assert conn.execute(select(patients.c.unidentified)).scalars().all() == [True]
        assert conn.execute(select(series.c.num_instances)).scalars().all() == [2]
        assert conn.execute(select(studies.c.num_instances)).scalars().all() == [2]
    # ``ztbridge status`` lists it (the same core figures an admin page shows).
    found = gather(gw)
    assert found.to_reconcile == ((receipts[0].study_uid, "patient-id-missing"),)
    assert dict(found.rows())["to reconcile"].startswith("1 studies: ")


def test_require_patient_id_refuses(tmp_path: Path) -> None:
    g = open_gateway(load_settings(home=tmp_path / "home", custodian_passphrase="x" * 12,
                                   ingest={"require_patient_id": True}))  # fmt: skip
    try:
        f = make_ct_series(tmp_path / "ct", 1, rows=8, columns=8).files[0]
        r = g.ingestor.ingest(_in(_edited(f, tmp_path / "a.dcm", PatientID="")), ORIGIN)
        assert (r.outcome, r.status) == (Outcome.REFUSED, 0xA900)
    finally:
        g.close()


def test_index_key_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    dev = load_settings(home=home)
    key = load_index_key(dev)
    assert default_key_path(home).is_file() and not str(default_key_path(home)).startswith(
        str(home) + "/"
    )
    assert load_index_key(dev) == key  # made once, then read
    with pytest.raises(ConfigError, match=r"index\.key"):
        load_index_key(
            load_settings(home=home, environment="production", custodian_passphrase="long-and-real")
        )
    monkeypatch.setenv("ZT_TEST_KEY", "ab" * 32)
    assert (
        load_index_key(load_settings(home=home, index={"key": "env:ZT_TEST_KEY"})) == b"\xab" * 32
    )
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "ik").write_text("cd" * 32 + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    assert load_index_key(load_settings(home=home, index={"key": "credential:ik"})) == b"\xcd" * 32
    home.mkdir()
    inside = home / "k"
    inside.write_text("ef" * 32)
    with pytest.raises(ConfigError, match="inside the data folder"):
        load_index_key(load_settings(home=home, index={"key": f"file:{inside}"}))
    monkeypatch.setenv("ZT_TEST_KEY", "short")
    with pytest.raises(ConfigError, match="64 hex digits"):
        load_index_key(load_settings(home=home, index={"key": "env:ZT_TEST_KEY"}))
