"""QIDO searches over a real index (gateway/qido_search.py), SQLite and PostgreSQL: totals
before the page, the visible set as a hard limit, the three levels, empty values."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.dataset import split_part10
from gateway.ingest import Incoming, Origin, Outcome
from gateway.matching import Term
from gateway.qido_search import QidoQuery, QidoSearch
from gateway.search import Visible
from gateway.service import Gateway, open_gateway
from gateway.settings import load_settings
from tests.dicomweb.world import SPECS, WrittenStudy, write_study

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


@pytest.fixture
def world(gw: Gateway, tmp_path: Path) -> dict[str, WrittenStudy]:
    """The DICOMweb world's studies, ingested directly (no network)."""
    out = {}
    for spec in SPECS:
        study = write_study(tmp_path / "dicom", spec)
        for f in study.files:
            part = split_part10(f.read_bytes())
            incoming = Incoming(
                part.dataset, part.transfer_syntax, part.sop_class, part.sop_instance
            )
            assert gw.ingestor.ingest(incoming, ORIGIN).outcome is Outcome.STORED
        out[spec.key] = study
    return out


def _q(**terms: str) -> dict[str, Term]:
    vrs = {"PatientName": "PN", "StudyDate": "DA", "PatientID": "LO", "Modality": "CS",
           "ModalitiesInStudy": "CS", "AccessionNumber": "SH", "NumberOfFrames": "IS"}  # fmt: skip
    return {k: Term.parse(k, vrs[k], v) for k, v in terms.items()}


def _uids(records: list[dict[str, list[object]]], key: str = "StudyInstanceUID") -> set[object]:
    return {r[key][0] for r in records}


def test_visible_set_total_and_paging(gw: Gateway, world: dict[str, WrittenStudy]) -> None:
    assert gw.db.cipher is not None
    qido = QidoSearch(gw.db, gw.db.cipher)
    ann = {s.uid for k, s in world.items() if k.startswith("ann_")}
    visible = Visible(study_uids=frozenset(ann))
    everything = qido.studies(QidoQuery(_q(PatientName="M*")), visible)
    assert _uids(everything.records) == ann and everything.total == 4  # bob's Müller: never
    page = qido.studies(QidoQuery(_q(PatientName="M*"), limit=3, offset=2), visible)
    assert page.total == 4 and len(page.records) == 2
    assert qido.studies(QidoQuery(limit=5, offset=4), visible).records == []
    nobody = qido.studies(QidoQuery(), Visible())
    assert nobody.total == 0  # an empty visible set sees nothing, not everything
    dated = qido.studies(QidoQuery(_q(StudyDate="-20241231")), visible)
    assert _uids(dated.records) == {world["ann_ct"].uid}  # the undated study is not in a range
    mr = qido.studies(QidoQuery(_q(ModalitiesInStudy="MR\\OT")), visible)
    assert _uids(mr.records) == {world["ann_mr"].uid, world["ann_mf"].uid}
    by_bob_id = qido.studies(QidoQuery(_q(PatientID="ZTQ-BOB-0002")), visible)
    assert by_bob_id.total == 0


def test_series_and_instance_levels(gw: Gateway, world: dict[str, WrittenStudy]) -> None:
    assert gw.db.cipher is not None
    qido = QidoSearch(gw.db, gw.db.cipher)
    visible = Visible(study_uids=frozenset(s.uid for s in world.values()))
    ct = world["ann_ct"]
    series = qido.series(QidoQuery(study_uid=ct.uid), visible)
    assert _uids(series.records, "SeriesInstanceUID") == {s.uid for s in ct.series}
    assert all(r["NumberOfStudyRelatedInstances"] == [5] for r in series.records)
    mr = qido.series(QidoQuery(_q(Modality="MR", PatientName="de*")), visible)
    assert _uids(mr.records, "SeriesInstanceUID") == {world["cyd_mr"].series[0].uid}
    frames = qido.instances(QidoQuery(_q(NumberOfFrames="8")), visible)
    assert _uids(frames.records, "SOPInstanceUID") == set(world["ann_mf"].series[0].sop_uids)
    one = qido.instances(QidoQuery(study_uid=ct.uid, series_uid=ct.series[1].uid), visible)
    assert one.total == 2 and all(r["SeriesDescription"] == ["CORONAL"] for r in one.records)
    hidden = Visible(study_uids=frozenset({world["bob_ct"].uid}))
    assert qido.instances(QidoQuery(study_uid=ct.uid), hidden).total == 0
