"""``ztbridge studies`` and ``ztbridge db`` (standalone sub-apps, run through typer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom import dcmread
from typer.testing import CliRunner

from gateway.dataset import split_part10
from gateway.ingest import Incoming, Origin
from gateway.service import open_gateway
from gateway.settings import load_settings
from tests.support.dicomgen import make_ct_series
from ztbridge.cli.db import db_app
from ztbridge.cli.studies import studies_app


def test_studies_list_show_and_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("ZTBRIDGE_HOME", str(home))
    monkeypatch.delenv("ZTBRIDGE_CONFIG", raising=False)
    runner = CliRunner()
    assert runner.invoke(studies_app, []).exit_code == 1  # no index yet: refused, not created
    assert not (home / "index.sqlite3").exists()
    gw = open_gateway(load_settings(home=home, custodian_passphrase="p" * 12))
    try:
        for f in make_ct_series(tmp_path / "ct", 2, rows=8, columns=8, patient_id="CLI-1").files:
            part = split_part10(f.read_bytes())
            incoming = Incoming(
                part.dataset, part.transfer_syntax, part.sop_class, part.sop_instance
            )
            assert gw.ingestor.ingest(incoming, Origin(kind="import", actor="t")).ok
    finally:
        gw.close()
    study_uid = str(dcmread(next((tmp_path / "ct").glob("*.dcm"))).StudyInstanceUID)
    listed = runner.invoke(studies_app, ["--patient", "CLI-1", "--modality", "ct", "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)["studies"]
    assert (row["study_uid"], row["num_instances"], row["anchored"]) == (study_uid, 2, "pending")
    none = runner.invoke(studies_app, ["--from", "2027-01-01", "--json"])
    assert json.loads(none.output)["studies"] == []
    assert runner.invoke(studies_app, ["--from", "tomorrow"]).exit_code == 1
    table = runner.invoke(studies_app, [])
    assert table.exit_code == 0 and "CLI-1" in table.output
    shown = runner.invoke(studies_app, ["show", study_uid, "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["series"][0]["num_instances"] == 2
    assert runner.invoke(studies_app, ["show", "1.2.3.4"]).exit_code == 1
    current = runner.invoke(db_app, ["current"])
    assert current.exit_code == 0 and "up to date" in current.output
    assert "already at revision" in runner.invoke(db_app, ["upgrade"]).output
