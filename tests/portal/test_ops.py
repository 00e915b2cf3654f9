"""The portal's operations parts, in-process around a real gateway (tests/portal/conftest.py):
the DICOMDIR download, /metrics off by default and counting retrieves and failed logins,
shares that expire (index at once, on-chain at the patient's next login) and study keys
that arrive after a share reaching the doctor."""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
from datetime import timedelta
from pathlib import Path

import pydicom
from pydicom.fileset import FileSet
from sqlalchemy import select

from gateway import metrics
from gateway.accounts.expiry import sweep
from gateway.dataset import split_part10
from gateway.importer import import_file
from gateway.index.models import key_wraps, shares
from gateway.keywraps import study_key_ids
from tests.portal.conftest import Portal, anchor
from tests.support.dicomgen import make_ct_series

UNKNOWN = "1.2.3.4.5.6.7.8.9"


def _sent(portal: Portal, who: str) -> dict[str, bytes]:
    out = {}
    for f in portal.series[who].files:
        parts = split_part10(f.read_bytes())
        out[parts.sop_instance] = bytes(parts.dataset)
    return out


def _sample(name: str, labels: dict[str, str] | None = None) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_dicomdir_archive_is_a_valid_file_set(portal: Portal, tmp_path: Path) -> None:
    c = portal.login("ann")
    uid = portal.series["ann"].study_uid
    r = c.get(f"/api/studies/{uid}/archive?dicomdir=1")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert "dicomdir" in r.headers["content-disposition"]
    plain = c.get(f"/api/studies/{uid}/archive").content
    with zipfile.ZipFile(io.BytesIO(plain)) as z:
        plain_files = {split_part10(z.read(n)).sop_instance: z.read(n) for n in z.namelist()}
    root = tmp_path / "media"
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        names = z.namelist()
        assert names[0] == "DICOMDIR" and len(names) == 1 + len(plain_files)
        z.extractall(root)
    fs = FileSet(pydicom.dcmread(root / "DICOMDIR"))
    assert len(fs) == len(plain_files)
    sent = _sent(portal, "ann")
    for instance in fs:
        path = Path(instance.path)
        assert path.is_file() and path.name.startswith("IM")
        data = path.read_bytes()
        assert data == plain_files[instance.SOPInstanceUID]  # the same bytes as the plain ZIP
        assert bytes(split_part10(data).dataset) == sent[instance.SOPInstanceUID]
        ds = instance.load()
        assert ds.pixel_array.shape == (16, 16)  # every referenced file decodes
    assert fs.find(PatientID="PID-ANN") and fs.find(StudyInstanceUID=uid)
    if shutil.which("dcmftest") and shutil.which("dcmdump"):
        files = [str(p) for p in root.rglob("*") if p.is_file()]
        tested = subprocess.run(["dcmftest", *files], capture_output=True, text=True)
        assert tested.returncode == 0 and "no:" not in tested.stdout, tested.stdout
        dumped = subprocess.run(
            ["dcmdump", "-q", str(root / "DICOMDIR")], capture_output=True, text=True
        )
        assert dumped.returncode == 0 and "DirectoryRecordSequence" in dumped.stdout
    downloads = [
        e
        for e in portal.gw.audit.entries()
        if e.kind == "study.download" and e.subject == uid and '"dicomdir"' in e.detail
    ]
    assert downloads, "the DICOMDIR download is audited like the plain one"


def test_dicomdir_of_another_patients_study_is_not_found(portal: Portal) -> None:
    c = portal.login("ann")
    bob = portal.series["bob"].study_uid
    theirs = c.get(f"/api/studies/{bob}/archive?dicomdir=1")
    unknown = c.get(f"/api/studies/{UNKNOWN}/archive?dicomdir=1")
    assert theirs.status_code == unknown.status_code == 404
    body, same = theirs.json(), unknown.json()
    assert body.pop("instance").replace(bob, UNKNOWN) == same.pop("instance")
    assert body == same


def test_metrics_are_off_by_default(portal: Portal) -> None:
    c = portal.client()
    off = c.get("/metrics")
    assert off.status_code == 404
    body, unknown = off.json(), c.get("/no-such-path").json()
    assert (body.pop("instance"), unknown.pop("instance")) == ("/metrics", "/no-such-path")
    assert body == unknown  # nothing to discover


def test_retrieves_and_failed_logins_are_counted(portal: Portal) -> None:
    before_bytes = _sample("ztbridge_retrieve_bytes_total")
    before_reads = _sample("ztbridge_retrieve_seconds_count")
    before_failed = _sample("ztbridge_login_failures_total", {"reason": "password"})
    before_ok = _sample("ztbridge_logins_total")
    c = portal.login("ann")
    body = c.get(f"/api/studies/{portal.series['ann'].study_uid}/archive").content
    assert _sample("ztbridge_retrieve_seconds_count") == before_reads + 3
    with zipfile.ZipFile(io.BytesIO(body)) as z:
        served = sum(i.file_size for i in z.infolist())
    assert _sample("ztbridge_retrieve_bytes_total") - before_bytes == served
    assert _sample("ztbridge_logins_total") == before_ok + 1
    r = portal.client().post(
        "/api/token", json={"username": "ann", "password": "wrong" * 4, "totp": "000000"}
    )
    assert r.status_code == 401
    assert _sample("ztbridge_login_failures_total", {"reason": "password"}) == before_failed + 1
    text = metrics.exposition(portal.gw.db, portal.gw.clock).decode()
    assert 'ztbridge_anchor_backlog{what="batches"}' in text
    assert "ztbridge_anchor_lag_seconds" in text
    assert '"ann"' not in text and "PID-ANN" not in text  # names nobody


def _wraps(portal: Portal, uid: str, username: str) -> int:
    recipient = portal.gw.users.get(username).recipient
    with portal.gw.db.read() as conn:
        ids = study_key_ids(conn, uid)
        rows = conn.execute(
            select(key_wraps.c.key_id).where(
                key_wraps.c.recipient == recipient, key_wraps.c.key_id.in_(ids)
            )
        ).all()
    return len(rows)


def _grant_active(portal: Portal, uid: str, doctor: str) -> bool:
    anchoring = portal.gw.anchoring
    assert anchoring is not None
    address = portal.gw.users.get(doctor).address
    return anchoring.run_on_ledger(
        lambda s: s.ledger.study_grant(anchoring.study_id(uid), address)[0]
    )


def _sweep(portal: Portal):  # type: ignore[no-untyped-def]
    gw = portal.gw
    return sweep(gw.db, gw.users, gw.users.sessions, gw.anchoring, gw.clock, gw.audit)


def test_a_new_study_key_after_the_share_reaches_the_doctor(portal: Portal, tmp_path: Path) -> None:
    ann, doc = portal.login("ann"), portal.login("drlee")
    uid = portal.series["ann"].study_uid
    hdr = {"X-CSRF-Token": portal.csrf(ann)}
    assert ann.put(f"/api/studies/{uid}/shares/drlee", headers=hdr).status_code == 200
    with portal.gw.db.read() as conn:
        keys_before = len(study_key_ids(conn, uid))
    # Later instances of the same study, after its key went idle: a new study key.
    idle = portal.gw.settings.ingest.study_key_idle_seconds
    portal.clock.advance(idle + 1)
    portal.gw.keys.forget_idle()
    later = make_ct_series(tmp_path, 2, rows=16, columns=16, patient_id="PID-ANN", study_uid=uid)
    for f in later.files:
        assert import_file(portal.gw.ingestor, f, "test").ok
    with portal.gw.db.read() as conn:
        assert len(study_key_ids(conn, uid)) == keys_before + 1
    assert _wraps(portal, uid, "drlee") == keys_before + 1  # wrapped to the doctor at ingest
    anchor(portal.gw, {uid})
    doc = portal.login("drlee")
    r = doc.get(f"/api/studies/{uid}/archive")
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        got = {split_part10(z.read(n)).sop_instance for n in z.namelist()}
    new = {split_part10(f.read_bytes()).sop_instance for f in later.files}
    assert new <= got and len(got) == 3 + 2
    ann = portal.login("ann")
    hdr = {"X-CSRF-Token": portal.csrf(ann)}
    assert ann.delete(f"/api/studies/{uid}/shares/drlee", headers=hdr).status_code == 200
    assert _wraps(portal, uid, "drlee") == 0


def test_an_expired_share_ends_in_the_index_then_on_chain(portal: Portal) -> None:
    uid = portal.series["ann"].study_uid
    ann = portal.login("ann")
    hdr = {"X-CSRF-Token": portal.csrf(ann)}
    today = portal.clock.now().date().isoformat()
    r = ann.put(f"/api/studies/{uid}/shares/drlee", json={"expires": today}, headers=hdr)
    assert r.status_code == 200, r.text
    doc = portal.login("drlee")
    assert doc.get(f"/api/studies/{uid}").status_code == 200
    assert _wraps(portal, uid, "drlee") > 0 and _grant_active(portal, uid, "drlee")
    assert _sweep(portal).revoked == 0  # not expired yet: nothing to do

    portal.clock.advance(timedelta(days=1).total_seconds())  # past the expiry
    done = _sweep(portal)
    assert (done.wraps_removed, done.revoked, done.waiting) == (1, 0, 1)
    assert _wraps(portal, uid, "drlee") == 0  # nothing the doctor holds opens it now
    assert _grant_active(portal, uid, "drlee")  # the patient's key is not here to sign
    doc = portal.login("drlee")
    assert doc.get(f"/api/studies/{uid}").status_code == 404
    assert doc.get(f"/api/studies/{uid}/archive").status_code == 404
    assert doc.get("/api/studies").json() == []

    portal.login("ann")  # the patient's keys are unlocked again: the revoke can be signed
    done = _sweep(portal)
    assert (done.wraps_removed, done.revoked, done.waiting) == (0, 1, 0)
    assert not _grant_active(portal, uid, "drlee")  # chain and index agree
    with portal.gw.db.read() as conn:
        assert conn.execute(select(shares).where(shares.c.study_uid == uid)).first() is None
    kinds = [e.kind for e in portal.gw.audit.entries() if e.subject == uid]
    assert "study.share_expired" in kinds and kinds[-1] == "study.revoked"
    assert _sweep(portal) == type(done)(0, 0, 0)
