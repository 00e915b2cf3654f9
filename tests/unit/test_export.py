"""Export core: per-study layout, never overwrite, one bad instance does not stop the rest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.dataset import split_part10
from gateway.errors import InvalidInputError
from gateway.export import export_car_file, export_study
from gateway.ingest import Incoming, Origin
from gateway.retrieve import find_instance
from gateway.service import Gateway, open_gateway
from gateway.settings import load_settings
from gateway.store.car import read_car
from tests.support.dicomgen import Series, make_ct_series
from tests.unit.test_retrieve import flip_in_packs

PASSPHRASE = "unit-test-passphrase"


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    g = open_gateway(load_settings(home=tmp_path / "home", custodian_passphrase=PASSPHRASE))
    yield g
    g.close()


@pytest.fixture
def series(gw: Gateway, tmp_path: Path) -> Series:
    s = make_ct_series(tmp_path / "ct", 4, rows=128, columns=128)
    for f in s.files:
        part = split_part10(f.read_bytes())
        r = gw.ingestor.ingest(
            Incoming(part.dataset, part.transfer_syntax, part.sop_class, part.sop_instance),
            Origin(kind="import", actor="test"),
        )
        assert r.ok
    return s


def sops(s: Series) -> list[str]:
    return [str(split_part10(f.read_bytes()).sop_instance) for f in s.files]


def test_layout_per_study_and_series(gw: Gateway, series: Series, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = export_study(gw, series.study_uid, out, PASSPHRASE)
    assert report.ok and len(report) == 4
    expected = {out / series.study_uid / series.series_uid / f"{sop}.dcm" for sop in sops(series)}
    assert {f.path for f in report.written} == expected
    by_sop = {split_part10(p.read_bytes()).sop_instance: p for p in expected}
    for f in series.files:
        part = split_part10(f.read_bytes())
        assert split_part10(by_sop[part.sop_instance].read_bytes()).dataset == part.dataset
    assert not list(out.rglob("*.part"))


def test_never_overwrites(gw: Gateway, series: Series, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = sops(series)[0]
    existing = out / series.study_uid / series.series_uid / f"{first}.dcm"
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"mine")
    report = export_study(gw, series.study_uid, out, PASSPHRASE)
    assert existing.read_bytes() == b"mine"
    assert [f.sop_instance_uid for f in report.failed] == [first]
    assert "not overwritten" in report.failed[0].reason
    assert len(report.written) == 3
    again = export_study(gw, series.study_uid, out, PASSPHRASE)
    assert not again.written and len(again.failed) == 4


def test_one_damaged_instance_does_not_stop_the_rest(
    gw: Gateway, series: Series, tmp_path: Path
) -> None:
    bad = sops(series)[2]
    ref = find_instance(gw.db, bad)
    flip_in_packs(gw, gw.store.get(ref.cid)[5000:5064])
    out = tmp_path / "out"
    report = export_study(gw, series.study_uid, out, PASSPHRASE)
    assert [f.sop_instance_uid for f in report.failed] == [bad]
    assert "is damaged" in report.failed[0].reason and ref.cid in report.failed[0].reason
    assert not report.ok and len(report.written) == 3
    assert not (out / series.study_uid / series.series_uid / f"{bad}.dcm").exists()
    assert not list(out.rglob("*.part")) and not list(out.rglob(".*"))


def test_export_car_file_refuses_an_existing_file(
    gw: Gateway, series: Series, tmp_path: Path
) -> None:
    car = tmp_path / "study.car"
    objects, blocks = export_car_file(gw, series.study_uid, car)
    assert objects == 4 and blocks >= 4
    with car.open("rb") as f:
        assert len(read_car(f).roots) == 4
    before = car.read_bytes()
    with pytest.raises(InvalidInputError, match="exists"):
        export_car_file(gw, series.study_uid, car)
    assert car.read_bytes() == before
    with pytest.raises(InvalidInputError, match="does not exist"):
        export_car_file(gw, series.study_uid, tmp_path / "nowhere" / "x.car")
