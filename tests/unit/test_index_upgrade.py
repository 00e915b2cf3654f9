"""An index written before ``instances.header_cid`` existed opens and takes new instances."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, inspect, text

from gateway.dataset import split_part10
from gateway.index.database import Database
from gateway.ingest import Incoming, Origin
from gateway.service import open_gateway
from gateway.settings import load_settings
from tests.support.dicomgen import make_ct_series


def test_old_index_gains_header_cid_and_ingest_works(tmp_path: Path) -> None:
    home = tmp_path / "home"
    gw = open_gateway(load_settings(home=home, custodian_passphrase="unit-test-passphrase"))
    url = str(gw.db.engine.url)
    gw.close()
    # Make it look like an index of the previous version: no header_cid column.
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE instances DROP COLUMN header_cid")
    assert "header_cid" not in {c["name"] for c in inspect(engine).get_columns("instances")}
    engine.dispose()

    Database(url).close()
    engine = create_engine(url)
    assert "header_cid" in {c["name"] for c in inspect(engine).get_columns("instances")}
    engine.dispose()

    series = make_ct_series(tmp_path / "ct", 1, rows=32, columns=32)
    gw = open_gateway(load_settings(home=home, custodian_passphrase="unit-test-passphrase"))
    try:
        part = split_part10(series.files[0].read_bytes())
        receipt = gw.ingestor.ingest(
            Incoming(part.dataset, part.transfer_syntax), Origin(kind="import", actor="t")
        )
        assert receipt.ok, receipt.reason
        with gw.db.read() as conn:
            n = conn.execute(text("SELECT count(*) FROM instances WHERE header_cid IS NOT NULL"))
            assert n.scalar() == 1
    finally:
        gw.close()
