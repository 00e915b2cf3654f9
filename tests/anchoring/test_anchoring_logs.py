"""The anchoring log names the study each batch belongs to (what an operator searches by)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.anchoring.drain import drain
from gateway.clock import FixedClock
from gateway.importer import import_file
from gateway.service import open_gateway
from gateway.settings import load_settings
from tests.support.dicomgen import make_ct_series


def test_sealed_and_anchored_lines_name_the_study(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gw = open_gateway(
        load_settings(home=tmp_path / "home", custodian_passphrase="p"),
        clock=FixedClock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC)),
    )
    try:
        series = make_ct_series(tmp_path / "ct", 2, rows=32, columns=32)
        for f in series.files:
            assert import_file(gw.ingestor, f, "test").ok
        assert gw.anchoring is not None
        with caplog.at_level(logging.INFO, logger="ztbridge.anchoring"):
            gw.anchoring.seal_studies({series.study_uid})
            result = drain(gw.anchoring, seal_all=False)
        assert result.error is None
    finally:
        gw.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "ztbridge.anchoring"]
    sealed = [line for line in lines if "sealed" in line]
    anchored = [line for line in lines if "anchored: record" in line]
    assert sealed and anchored, lines
    assert all(series.study_uid in line for line in sealed + anchored), lines
