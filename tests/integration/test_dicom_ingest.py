"""A modality (DCMTK storescu) pushes to a real ztbridge process; everything comes back intact."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE
from sqlalchemy import func, select

from gateway.dataset import split_part10
from gateway.index.database import Database
from gateway.index.models import audit_events, instances, studies
from tests.support.capture_scp import capture_scp
from tests.support.dicomgen import (
    STORESCU_OPTION,
    make_compressed,
    make_ct_series,
    make_multiframe,
)
from tests.support.gateway_proc import (
    ZTBRIDGE,
    GatewayProcess,
    dcmtk,
    make_gateway,
    running,
    storescu,
)

pytestmark = pytest.mark.integration


def index(gw: GatewayProcess) -> Database:
    return Database(f"sqlite:///{gw.home / 'index.sqlite3'}")


def count_instances(gw: GatewayProcess) -> int:
    db = index(gw)
    try:
        with db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(instances)).scalar_one())
    finally:
        db.close()


def audit_kinds(gw: GatewayProcess) -> list[tuple[str, str, str]]:
    db = index(gw)
    try:
        with db.read() as conn:
            rows = conn.execute(
                select(audit_events.c.kind, audit_events.c.outcome, audit_events.c.detail).order_by(
                    audit_events.c.seq
                )
            ).all()
        return [(r.kind, r.outcome, r.detail) for r in rows]
    finally:
        db.close()


def exported_datasets(gw: GatewayProcess, study_uid: str, out: Path) -> dict[str, bytes]:
    """SOP Instance UID -> data set bytes of each file ``ztbridge export`` writes."""
    gw.cli("export", "--study", study_uid, "--out", str(out))
    found = {}
    for path in sorted(out.rglob("*.dcm")):
        part = split_part10(path.read_bytes())
        assert part.sop_instance is not None
        found[part.sop_instance] = part.dataset
    return found


def sent_datasets(files: list[Path]) -> dict[str, bytes]:
    out = {}
    for f in files:
        part = split_part10(f.read_bytes())
        assert part.sop_instance is not None
        out[part.sop_instance] = part.dataset
    return out


def test_echo(gateway: GatewayProcess) -> None:
    result = dcmtk(
        "echoscu", "-aet", "STORESCU", "-aec", "ZTBRIDGE", "127.0.0.1", str(gateway.port)
    )
    assert result.returncode == 0, result.stderr


def test_ct_series_round_trip_byte_identical(gateway: GatewayProcess, tmp_path: Path) -> None:
    series = make_ct_series(tmp_path / "ct", 200)
    result = storescu(gateway.port, [tmp_path / "ct"], "STORESCU", "ZTBRIDGE", "+sd")
    assert result.returncode == 0, result.stderr
    assert count_instances(gateway) == 200
    exported = exported_datasets(gateway, series.study_uid, tmp_path / "out")
    assert exported == sent_datasets(series.files)
    # Nothing in clear at rest: the patient ID never appears in the store's files.
    for pack in (gateway.home / "store").rglob("*"):
        if pack.is_file():
            assert series.patient_id.encode() not in pack.read_bytes()


def test_multiframe_and_compressed_round_trip(gateway: GatewayProcess, tmp_path: Path) -> None:
    mf = make_multiframe(tmp_path / "mf")
    result = storescu(gateway.port, mf.files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert exported_datasets(gateway, mf.study_uid, tmp_path / "out-mf") == sent_datasets(mf.files)
    compressed = make_compressed(tmp_path / "compressed")
    with capture_scp() as wire:
        for f in compressed.files:
            # DCMTK proposes a compressed syntax only when told which: one push per file,
            # first to a recorder (what storescu puts on the wire), then to ztbridge.
            ts = str(dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
            for port in (wire.port, gateway.port):
                result = storescu(port, [f], "STORESCU", "ZTBRIDGE", STORESCU_OPTION[ts], "-v")
                assert "Received Store Response (Success)" in result.stderr, (f, result.stderr)
            sop = str(dcmread(f, stop_before_pixels=True).SOPInstanceUID)
            assert wire.received[sop][0] == ts, f"storescu transcoded {f.name}"
    exported = exported_datasets(gateway, compressed.study_uid, tmp_path / "out-c")
    assert set(exported) == set(wire.received)
    for uid, (_ts, data) in wire.received.items():
        assert exported[uid] == data, uid
    stored_ts = {
        str(dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        for p in (tmp_path / "out-c").rglob("*.dcm")
    }
    assert {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2",
    } <= stored_ts


@pytest.mark.parametrize(
    ("calling", "called", "expected", "check"),
    [
        ("NOBODY", "ZTBRIDGE", "Calling AE Title Not Recognized", "registered-device"),
        ("STORESCU", "SOMEPACS", "Called AE Title Not Recognized", "called-ae"),
        ("FARAWAY", "ZTBRIDGE", "Reason: No Reason", "source-address"),
    ],
)
def test_refused_associations(
    gateway: GatewayProcess, calling: str, called: str, expected: str, check: str
) -> None:
    gateway.cli(
        "device", "add", "--ae", "FARAWAY", "--ip", "10.99.0.0/16", "--posture-policy", "none"
    )
    result = dcmtk("echoscu", "-aet", calling, "-aec", called, "127.0.0.1", str(gateway.port))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Association Rejected" in output, output
    assert "Rejected Permanent" in output, output
    assert expected in output, output
    refusals = [d for k, o, d in audit_kinds(gateway) if k == "association.refused"]
    assert refusals and f'"check":"{check}"' in refusals[-1]


def _send_raw(port: int, path: Path) -> int:
    """Send a file's data set bytes exactly as they are in the file, corrupt or not."""
    from pynetdicom import _config

    _config.STORE_SEND_CHUNKED_DATASET = True  # send the file's bytes, do not re-encode
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="ZTBRIDGE")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(path)
        return int(status.Status)
    finally:
        assoc.release()


def test_corrupt_dataset_refused_nothing_stored(gateway: GatewayProcess, tmp_path: Path) -> None:
    good = make_ct_series(tmp_path / "ct", 1).files[0]
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(good.read_bytes()[:-1000])
    assert _send_raw(gateway.port, truncated) == 0xC000
    assert count_instances(gateway) == 0
    refused = [d for k, o, d in audit_kinds(gateway) if k == "instance.refused"]
    assert len(refused) == 1
    assert "truncated" in refused[0]
    assert _send_raw(gateway.port, good) == 0x0000
    assert count_instances(gateway) == 1


def _without_patient_id(good: Path, out: Path) -> Path:
    ds = dcmread(good)
    del ds.PatientID
    ds.save_as(out)
    return out


def test_missing_patient_id_is_stored_and_flagged(gateway: GatewayProcess, tmp_path: Path) -> None:
    """Patient ID is Type 2: storescu's instance without one is kept, its study flagged."""
    no_patient = _without_patient_id(
        make_ct_series(tmp_path / "ct", 1).files[0], tmp_path / "n.dcm"
    )
    result = storescu(gateway.port, [no_patient])
    assert result.returncode == 0, result.stdout + result.stderr
    assert count_instances(gateway) == 1
    db = index(gateway)
    try:
        with db.read() as conn:
            flagged = conn.execute(select(studies.c.study_uid, studies.c.reconcile)).all()
    finally:
        db.close()
    assert flagged == [(dcmread(no_patient).StudyInstanceUID, "patient-id-missing")]


def test_require_patient_id_restores_the_refusal(tmp_path: Path, dcmtk: None) -> None:
    gw = make_gateway(tmp_path, ZTBRIDGE_INGEST__REQUIRE_PATIENT_ID="true")
    gw.cli(
        "device", "add", "--ae", "STORESCU", "--ip", "127.0.0.1", "--name", "m",
        "--posture-policy", "none",
    )  # fmt: skip
    no_patient = _without_patient_id(
        make_ct_series(tmp_path / "ct", 1).files[0], tmp_path / "n.dcm"
    )
    with running(gw):
        result = storescu(gw.port, [no_patient])
        assert "0xa900" in (result.stdout + result.stderr).lower() or result.returncode != 0
        assert count_instances(gw) == 0
        refused = [d for k, o, d in audit_kinds(gw) if k == "instance.refused"]
    assert len(refused) == 1 and "PatientID" in refused[0]


def test_same_uid_new_content_is_new_version(gateway: GatewayProcess, tmp_path: Path) -> None:
    series = make_ct_series(tmp_path / "ct", 1)
    first = series.files[0]
    assert storescu(gateway.port, [first]).returncode == 0
    assert storescu(gateway.port, [first]).returncode == 0  # duplicate: success, not stored
    assert count_instances(gateway) == 1
    changed = tmp_path / "changed.dcm"
    ds = dcmread(first)
    ds.PatientName = "CHANGED^NAME"
    ds.save_as(changed)
    assert storescu(gateway.port, [changed]).returncode == 0
    assert count_instances(gateway) == 2
    db = index(gateway)
    with db.read() as conn:
        rows = conn.execute(
            select(instances.c.version, instances.c.flag).order_by(instances.c.version)
        ).all()
    db.close()
    assert [(r.version, r.flag) for r in rows] == [(1, None), (2, "new-version")]
    exported_datasets(gateway, series.study_uid, tmp_path / "out")
    # Both versions share one SOP Instance UID, so compare every file's data set, not a
    # dict keyed by UID (which would keep only one of them).
    written = sorted(
        split_part10(p.read_bytes()).dataset for p in (tmp_path / "out").rglob("*.dcm")
    )
    sent = sorted(split_part10(f.read_bytes()).dataset for f in (first, changed))
    assert sent[0] != sent[1]
    assert written == sent


def test_import_export_car_and_verify(tmp_path: Path, dcmtk: None) -> None:
    gw = make_gateway(tmp_path)
    series = make_ct_series(tmp_path / "ct", 5)
    junk = tmp_path / "ct" / "junk.dcm"
    junk.write_bytes(b"not dicom at all" * 20)  # not DICOM: skipped, not refused
    broken = tmp_path / "ct" / "broken.dcm"
    broken.write_bytes(series.files[0].read_bytes()[:300])  # DICOM, cut short: refused
    result = gw.cli("import", str(tmp_path / "ct"), check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "5 stored" in result.stdout and "1 refused" in result.stdout, result.stdout
    assert "1 skipped" in result.stdout
    assert "skipped" in result.stdout.split("junk.dcm")[0].splitlines()[-1]
    assert "refused" in result.stdout.split("broken.dcm")[0].splitlines()[-1]
    assert "force=True" not in result.stdout + result.stderr
    again = gw.cli("import", *[str(f) for f in series.files])
    assert "5 duplicates" in again.stdout
    car = tmp_path / "study.car"
    gw.cli("store", "export-car", "--study", series.study_uid, "--out", str(car))
    from gateway.store.car import read_car

    with car.open("rb") as f:
        parsed = read_car(f)
    db = index(gw)
    with db.read() as conn:
        cids = {r.cid for r in conn.execute(select(instances.c.cid))}
    db.close()
    from gateway.store.unixfs import cid_to_str

    assert {cid_to_str(r) for r in parsed.roots} == cids
    assert "store verified" in gw.cli("store", "verify").stdout
    assert "audit chain intact" in gw.cli("audit", "verify").stdout
    # Tamper with the audit log: verify names the entry.
    db = index(gw)
    from sqlalchemy import update

    with db.write() as conn:
        conn.execute(update(audit_events).where(audit_events.c.seq == 3).values(actor="mallory"))
    db.close()
    broken = gw.cli("audit", "verify", check=False)
    assert broken.returncode != 0
    assert re.search(r"entry 3\b", broken.stderr + broken.stdout)


def test_unknown_study_export_is_clear_error(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path)
    missing = gw.cli("status", check=False)
    assert missing.returncode == 1 and "no ztbridge data at" in missing.stderr
    assert not gw.home.exists()  # a read command never creates an empty data folder
    gw.cli("device", "add", "--ae", "CT01", "--ip", "10.0.0.0/24", "--posture-policy", "none")
    result = gw.cli("export", "--study", "1.2.3.4", "--out", str(tmp_path / "o"), check=False)
    assert result.returncode == 1
    assert "no study 1.2.3.4" in result.stderr
    bad = gw.cli("export", "--study", "../../etc", "--out", str(tmp_path / "o"), check=False)
    assert bad.returncode == 1 and "not a valid Study Instance UID" in bad.stderr


def test_bad_settings_name_the_key(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path, ZTBRIDGE_DICOM__PORT="seventy")
    result = gw.cli("status", check=False)
    assert result.returncode == 1
    assert "dicom.port" in result.stderr and "ZTBRIDGE_DICOM__PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_subprocess_helpers_exist() -> None:
    assert subprocess.run(["storescu", "--version"], capture_output=True).returncode == 0


def test_first_start_and_clean_stop(tmp_path: Path, dcmtk: None) -> None:
    """First start creates the custodian key, shows a generated passphrase once, says how to
    register a device; SIGTERM stops cleanly; a second start shows no passphrase."""
    gw = make_gateway(tmp_path)
    del gw.env["ZTBRIDGE_CUSTODIAN_PASSPHRASE"]
    gw.start()
    assert gw.stop() == 0
    first = gw.log()
    assert "ZTBRIDGE_CUSTODIAN_PASSPHRASE=" in first
    assert "ztbridge device add" in first
    assert "self-signed, made now" in first and "SHA-256 fingerprint" in first
    assert "ztbridge stopped" in first
    assert (gw.home / "keys" / "custodian.json").stat().st_mode & 0o777 == 0o600
    gw.start()
    assert gw.stop() == 0
    assert gw.log().count("ZTBRIDGE_CUSTODIAN_PASSPHRASE=") == 1


def test_port_in_use_is_a_clear_error(tmp_path: Path, gateway: GatewayProcess) -> None:
    other = make_gateway(tmp_path, "zt2")
    other.env["ZTBRIDGE_DICOM__PORT"] = str(gateway.port)
    done = subprocess.run(
        [ZTBRIDGE, "up"], env=other.env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{gateway.port}" in done.stderr
    assert "ZTBRIDGE_DICOM__PORT" in done.stderr


def test_status_while_running(gateway: GatewayProcess, tmp_path: Path) -> None:
    series = make_ct_series(tmp_path / "ct", 3)
    assert storescu(gateway.port, series.files).returncode == 0
    status = gateway.cli("status").stdout
    assert re.search(r"instances\s+3\b", status), status
    assert re.search(r"devices\s+1\b", status), status
