"""The export commands (``ztbridge/cli/import_export.py``, ``store.py``), in process.

Each is mounted on a throwaway typer app.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from gateway.dataset import split_part10
from gateway.ingest import Incoming, Origin
from gateway.retrieve import find_instance
from gateway.service import open_gateway
from gateway.settings import load_settings
from tests.support.dicomgen import Series, make_ct_series
from tests.unit.test_retrieve import flip_in_packs
from ztbridge.cli.import_export import export_cmd
from ztbridge.cli.store import store_export_car

PASSPHRASE = "unit-test-passphrase"


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("export")(export_cmd)
    app.command("export-car")(store_export_car)
    return app


@pytest.fixture
def home(tmp_path: Path) -> tuple[Path, Series, str]:
    """A data folder with a 3-instance study, one of them damaged in the store."""
    home = tmp_path / "home"
    series = make_ct_series(tmp_path / "ct", 3, rows=64, columns=64)
    gw = open_gateway(load_settings(home=home, custodian_passphrase=PASSPHRASE))
    try:
        for f in series.files:
            part = split_part10(f.read_bytes())
            gw.ingestor.ingest(
                Incoming(part.dataset, part.transfer_syntax), Origin(kind="import", actor="t")
            )
        bad = str(split_part10(series.files[1].read_bytes()).sop_instance)
        flip_in_packs(gw, gw.store.get(find_instance(gw.db, bad).cid)[100:164])
    finally:
        gw.close()
    return home, series, bad


def _env(home: Path) -> dict[str, str]:
    return {"ZTBRIDGE_HOME": str(home), "ZTBRIDGE_CUSTODIAN_PASSPHRASE": PASSPHRASE}


def test_export_names_the_bad_instance_and_exits_2(
    home: tuple[Path, Series, str], tmp_path: Path
) -> None:
    data, series, bad = home
    out = tmp_path / "out"
    runner = CliRunner()
    args = ["export", "--study", series.study_uid, "--out", str(out)]
    result = runner.invoke(_app(), args, env=_env(data))
    assert result.exit_code == 2, result.output
    assert "2 files written" in result.output
    assert f"FAILED instance {bad}" in result.output
    assert len(list(out.rglob("*.dcm"))) == 2
    again = runner.invoke(_app(), args, env=_env(data))
    assert again.exit_code == 2 and "0 files written" in again.output
    assert again.output.count("not overwritten") == 2


def test_export_car_refuses_an_existing_file(
    home: tuple[Path, Series, str], tmp_path: Path
) -> None:
    data, series, _ = home
    car = tmp_path / "s.car"
    car.write_bytes(b"keep me")
    runner = CliRunner()
    args = ["export-car", "--study", series.study_uid, "--out", str(car)]
    result = runner.invoke(_app(), args, env=_env(data))
    assert result.exit_code == 1 and "exists" in result.output
    assert car.read_bytes() == b"keep me"
