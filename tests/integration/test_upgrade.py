"""A home written by the code before migrations (commit e35439c) opens under this code.

The old home is built by running the old code itself: ``git archive e35439c`` into a temporary
folder, its ``ztbridge`` CLI run with PYTHONPATH pointing there (same virtualenv), files
imported with ``ztbridge import``. Then this code opens it: the index is stamped at revision 1
and upgraded (levels filled, values sealed), and the studies are still exportable, intact.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import create_engine, inspect, text

from gateway.dataset import split_part10
from gateway.index import migrate
from gateway.ingest import Incoming, Origin, Outcome
from gateway.search import Search, StudyQuery
from gateway.service import open_gateway
from gateway.settings import load_settings
from tests.support.dicomgen import make_ct_series
from tests.support.gateway_proc import PASSPHRASE, ZTBRIDGE

pytestmark = pytest.mark.integration

OLD_COMMIT = "e35439c"
REPO = Path(__file__).resolve().parents[2]


def _old_code(dest: Path) -> Path:
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", OLD_COMMIT],
            check=True,
            capture_output=True,
            timeout=120,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", b"") or b""
        pytest.fail(
            f"the upgrade test needs the git history of commit {OLD_COMMIT} (the code before"
            f" migrations) to build an old home, and 'git archive' failed: {e}"
            f" {detail.decode(errors='replace')}"
        )
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([ZTBRIDGE, *args], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def test_an_old_home_upgrades_and_its_studies_export(tmp_path: Path) -> None:
    old = _old_code(tmp_path / "old")
    home = tmp_path / "home"
    base = {
        **os.environ,
        "ZTBRIDGE_HOME": str(home),
        "ZTBRIDGE_CUSTODIAN_PASSPHRASE": PASSPHRASE,
        "ZTBRIDGE_LEDGER__ENABLED": "false",
    }
    base.pop("ZTBRIDGE_CONFIG", None)
    old_env = {**base, "PYTHONPATH": str(old)}
    new_env = {**base, "PYTHONPATH": str(REPO)}

    ct = make_ct_series(tmp_path / "ct", 3, rows=16, columns=16, patient_id="UPGRADE-PID-1")
    mr = make_ct_series(tmp_path / "mr", 2, rows=16, columns=16, patient_id="UPGRADE-PID-2")
    _run(old_env, "import", str(tmp_path / "ct"))
    _run(old_env, "import", str(tmp_path / "mr"))
    # Written by the old code: tables, no alembic_version, Patient IDs in clear.
    engine = create_engine(f"sqlite:///{home / 'index.sqlite3'}")
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        assert "instances" in tables and "alembic_version" not in tables
        clear = conn.execute(text("SELECT patient_id FROM instances")).scalars().all()
        assert sorted(set(clear)) == ["UPGRADE-PID-1", "UPGRADE-PID-2"]
    engine.dispose()

    ct_study = str(dcmread(ct.files[0]).StudyInstanceUID)
    out = tmp_path / "export"
    _run(new_env, "export", "--study", ct_study, "--out", str(out))  # opens, upgrades
    exported = {
        str(dcmread(p).SOPInstanceUID): split_part10(p.read_bytes()).dataset
        for p in out.rglob("*.dcm")
    }
    sent = {str(dcmread(f).SOPInstanceUID): split_part10(f.read_bytes()).dataset for f in ct.files}
    assert exported == sent
    assert "verified" in _run(new_env, "store", "verify").stdout

    engine = create_engine(f"sqlite:///{home / 'index.sqlite3'}")
    with engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.head()
        columns = {c["name"] for c in inspect(conn).get_columns("instances")}
        assert "patient_id" not in columns and "metadata_json" not in columns
    engine.dispose()
    raw = b"".join(p.read_bytes() for p in home.glob("index.sqlite3*"))
    assert b"UPGRADE-PID" not in raw and b"TEST^SYNTHETIC" not in raw

    gw = open_gateway(load_settings(home=home, custodian_passphrase=PASSPHRASE))
    try:
        assert gw.db.cipher is not None
        search = Search(gw.db, gw.db.cipher)
        found = search.studies(StudyQuery(patient_id="UPGRADE-PID-1"))
        assert [(s.study_uid, s.num_series, s.num_instances, s.modalities) for s in found] == [
            (ct_study, 1, 3, ("CT",))
        ]
        assert found[0].patient_name == "TEST^SYNTHETIC"
        mr_study = str(dcmread(mr.files[0]).StudyInstanceUID)
        assert [s.study_uid for s in search.studies(StudyQuery(patient_name="test*"))] != []
        assert search.study_detail(mr_study).study.num_instances == 2
        # Ingest keeps working on the upgraded index, and still checks the study's patient.
        again = make_ct_series(tmp_path / "more", 1, rows=16, columns=16, study_uid=ct_study,
                               patient_id="SOMEONE-ELSE").files[0]  # fmt: skip
        part = split_part10(again.read_bytes())
        receipt = gw.ingestor.ingest(
            Incoming(part.dataset, part.transfer_syntax, part.sop_class, part.sop_instance),
            Origin(kind="import", actor="test"),
        )
        assert receipt.outcome is Outcome.REFUSED and "differs" in (receipt.reason or "")
    finally:
        gw.close()
