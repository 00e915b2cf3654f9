"""The studies API and pages: what each caller sees, the ZIP download with the caller's own
key, share and revoke, IDOR (another patient's study is a 404 exactly like an unknown UID,
everywhere), every decision audited."""

from __future__ import annotations

import io
import zipfile
from typing import Any

from gateway.dataset import split_part10
from tests.portal.conftest import Portal, csrf_of

UNKNOWN = "1.2.3.4.5.6.7.8.9"


def _files(portal: Portal, who: str) -> dict[str, bytes]:
    """SOP Instance UID -> the data set as sent."""
    out = {}
    for f in portal.series[who].files:
        parts = split_part10(f.read_bytes())
        out[parts.sop_instance] = bytes(parts.dataset)
    return out


def _same_zip(portal: Portal, who: str, body: bytes) -> None:
    sent = _files(portal, who)
    with zipfile.ZipFile(io.BytesIO(body)) as z:
        names = z.namelist()
        assert len(names) == len(sent)
        for name in names:
            parts = split_part10(z.read(name))
            assert bytes(parts.dataset) == sent[parts.sop_instance]  # byte for byte
            assert name.endswith(f"{parts.sop_instance}.dcm")


def test_patient_sees_only_own_studies_and_downloads(portal: Portal) -> None:
    c = portal.login("ann")
    listed = c.get("/api/studies").json()
    assert [s["study_uid"] for s in listed] == [portal.series["ann"].study_uid]
    assert listed[0]["num_instances"] == 3 and listed[0]["modalities"] == ["CT"]
    uid = portal.series["ann"].study_uid
    detail = c.get(f"/api/studies/{uid}").json()
    assert detail["shares"] == [] and detail["series"][0]["num_instances"] == 3
    r = c.get(f"/api/studies/{uid}/archive")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert uid in r.headers["content-disposition"]
    _same_zip(portal, "ann", r.content)
    page = c.get("/studies")
    assert page.status_code == 200 and f"/api/studies/{uid}/archive" in page.text
    assert "<script" not in page.text and "style=" not in page.text
    assert c.get(f"/studies/{uid}").status_code == 200
    shown = c.get(f"/api/studies/{uid}/preview")
    assert shown.headers["content-type"] == "image/png" and shown.content.startswith(b"\x89PNG")
    assert f"/api/studies/{uid}/preview" in page.text


def test_admin_reads_no_study(portal: Portal) -> None:
    c = portal.login("root")
    assert c.get("/api/studies").status_code == 403
    uid = portal.series["ann"].study_uid
    assert c.get(f"/api/studies/{uid}").status_code == 404
    assert c.get(f"/api/studies/{uid}/archive").status_code == 404


def _comparable(r: Any) -> tuple[int, dict[str, Any]]:
    body = dict(r.json())
    body.pop("instance", None)  # the path the caller sent
    return r.status_code, body


def test_idor_another_patients_study_is_not_found_everywhere(portal: Portal) -> None:
    c = portal.login("ann")
    token = portal.csrf(c)
    bob = portal.series["bob"].study_uid
    hdr = {"X-CSRF-Token": token}
    for method, suffix in (
        ("GET", ""),
        ("GET", "/archive"),
        ("GET", "/preview"),
        ("PUT", "/shares/drlee"),
        ("DELETE", "/shares/drlee"),
    ):
        theirs = c.request(method, f"/api/studies/{bob}{suffix}", headers=hdr)
        unknown = c.request(method, f"/api/studies/{UNKNOWN}{suffix}", headers=hdr)
        assert _comparable(theirs) == _comparable(unknown), (method, suffix)
        assert theirs.status_code == 404
        assert "Bob" not in theirs.text and "PID-BOB" not in theirs.text
    theirs_page = c.get(f"/studies/{bob}")
    unknown_page = c.get(f"/studies/{UNKNOWN}")
    assert theirs_page.status_code == unknown_page.status_code == 404
    assert theirs_page.text == unknown_page.text
    as_program = c.get(f"/studies/{bob}", headers={"accept": "*/*"})
    assert as_program.headers["content-type"] == "application/problem+json"
    r = c.post(f"/studies/{bob}/shares", data={"doctor": "drlee", "csrf_token": token})
    assert r.status_code == 404
    denied = [
        e
        for e in portal.gw.audit.entries()
        if e.kind == "access.denied" and e.subject == bob and e.actor == "ann"
    ]
    assert len(denied) >= 5
    assert any(e.kind == "access.allowed" for e in portal.gw.audit.entries())


def test_share_then_revoke(portal: Portal) -> None:
    ann = portal.login("ann")
    doc = portal.login("drlee")
    uid = portal.series["ann"].study_uid
    assert doc.get("/api/studies").json() == []
    assert doc.get(f"/api/studies/{uid}").status_code == 404
    hdr = {"X-CSRF-Token": portal.csrf(ann)}
    r = ann.put(f"/api/studies/{uid}/shares/drlee", json={"expires": "2027-01-31"}, headers=hdr)
    assert r.status_code == 200, r.text
    assert r.json()["expires_at"].startswith("2027-02-01") and r.json()["tx"].startswith("0x")
    assert [s["study_uid"] for s in doc.get("/api/studies").json()] == [uid]
    _same_zip(portal, "ann", doc.get(f"/api/studies/{uid}/archive").content)
    assert "shares" not in doc.get(f"/api/studies/{uid}").json()  # a doctor sees no shares
    doc_hdr = {"X-CSRF-Token": portal.csrf(doc)}
    r = doc.put(f"/api/studies/{uid}/shares/drlee", headers=doc_hdr)
    assert r.status_code == 403  # a doctor cannot share on
    shares = ann.get(f"/api/studies/{uid}").json()["shares"]
    assert [s["doctor"] for s in shares] == ["drlee"]
    page = ann.get(f"/studies/{uid}?q=grace")
    assert "Share with Dr Grace Lee" in page.text and "Revoke" in page.text

    r = ann.delete(f"/api/studies/{uid}/shares/drlee", headers=hdr)
    assert r.status_code == 200 and r.json()["revoked_on_chain"] is True
    assert doc.get("/api/studies").json() == []
    assert doc.get(f"/api/studies/{uid}").status_code == 404
    assert doc.get(f"/api/studies/{uid}/archive").status_code == 404
    # the page forms do the same
    token = csrf_of(ann.get(f"/studies/{uid}").text)
    r = ann.post(
        f"/studies/{uid}/shares",
        data={"doctor": "drlee", "expires": "", "csrf_token": token},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert doc.get(f"/api/studies/{uid}").status_code == 200
    r = ann.post(
        f"/studies/{uid}/shares/drlee/revoke", data={"csrf_token": token}, follow_redirects=False
    )
    assert r.status_code == 303
    assert doc.get(f"/api/studies/{uid}").status_code == 404
    assert ann.put(f"/api/studies/{uid}/shares/bob", headers=hdr).status_code == 404  # no doctor
    past = ann.put(f"/api/studies/{uid}/shares/drlee", json={"expires": "2020-01-01"}, headers=hdr)
    assert past.status_code == 400 and "past" in past.json()["detail"]
    bad = ann.put(f"/api/studies/{uid}/shares/drlee", json={"expires": "soon"}, headers=hdr)
    assert bad.status_code == 400


def test_admin_adds_a_user_who_enrolls(portal: Portal) -> None:
    import re

    import pyotp

    admin = portal.login("root")
    page = admin.get("/admin")
    assert page.status_code == 200 and "drlee" in page.text and "PID-ANN" in page.text
    r = admin.post(
        "/admin/users",
        data={
            "username": "eve",
            "role": "doctor",
            "name": "Dr Eve",
            "csrf_token": csrf_of(page.text),
        },
    )
    assert r.status_code == 200
    link = re.search(r'id="enroll-link">([^<]+)<', r.text)
    assert link
    path = "/enroll/" + link.group(1).rsplit("/enroll/", 1)[1]
    newcomer = portal.client()
    page = newcomer.get(path)
    assert page.status_code == 200 and "<svg" in page.text
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
    assert secret
    code = pyotp.TOTP(secret.group(1)).at(portal.clock.now())
    r = newcomer.post(
        path,
        data={
            "password": "eve keeps a quiet garden",
            "password_again": "eve keeps a quiet garden",
            "code": code,
            "csrf_token": csrf_of(page.text),
        },
    )
    assert r.status_code == 200, r.text
    assert len(re.findall(r"<li><code>", r.text)) == 10
    assert newcomer.get(path).status_code == 404  # single use
    assert portal.gw.users.get("eve").enrolled
    r = admin.post(
        "/admin/users/eve/suspend",
        data={"csrf_token": portal.csrf(admin, "/admin")},
        follow_redirects=False,
    )
    assert r.status_code == 303 and portal.gw.users.get("eve").suspended
