"""The admin pages: users (recover with the custodian passphrase), devices and posture,
Patient ID links (add, with the earlier study handed over), pending anchors, the audit log
and its verification. Authorization by the one decision (a patient or doctor gets 403, an
auditor reads the audit log only, every denial audited), CSRF on every form, and an admin
still reads no study."""

from __future__ import annotations

import re

import pyotp
import pytest
from sqlalchemy import update

from gateway.importer import import_file
from gateway.index.models import audit_events
from tests.portal.conftest import PASSWORD, Portal, anchor, csrf_of
from tests.support.dicomgen import make_ct_series

PASSPHRASE = "p" * 20  # the world's custodian passphrase
PAGES = ("/admin", "/admin/devices", "/admin/links", "/admin/anchors", "/admin/audit")
_LINK = re.compile(r'id="enroll-link">([^<]+)<')


@pytest.fixture(scope="module", autouse=True)
def auditor(portal: Portal) -> str:
    """An auditor account in this module's world."""
    done = portal.gw.users.provision("audrey", "auditor", "Audrey Auditor", PASSWORD, "test")
    portal.secrets["audrey"] = done.totp_secret
    return "audrey"


def test_patients_and_doctors_get_no_admin_page(portal: Portal) -> None:
    for who in ("ann", "drlee"):
        c = portal.login(who)
        before = sum(1 for e in portal.gw.audit.entries() if e.kind == "access.denied")
        for page in PAGES:
            r = c.get(page)
            assert r.status_code == 403, (who, page)
        r = c.post(
            "/admin/users", data={"username": "x1", "role": "admin", "csrf_token": portal.csrf(c)}
        )
        assert r.status_code == 403 and "x1" not in {a.username for a in portal.gw.users.all()}
        after = [e for e in portal.gw.audit.entries() if e.kind == "access.denied"]
        assert len(after) - before == len(PAGES) + 1
        assert after[-1].actor == who


def test_auditor_reads_the_audit_log_only(portal: Portal) -> None:
    c = portal.login("audrey")
    r = c.get("/admin/audit")
    assert r.status_code == 200 and 'id="audit-state"' in r.text and "intact" in r.text
    for page in ("/admin", "/admin/devices", "/admin/links", "/admin/anchors"):
        assert c.get(page).status_code == 403, page
    token = portal.csrf(c, "/account")
    assert c.post("/admin/users/ann/suspend", data={"csrf_token": token}).status_code == 403
    assert not portal.gw.users.get("ann").suspended
    # logging in lands on the audit page
    fresh = portal.client()
    fresh.post(
        "/login",
        data={
            "username": "audrey",
            "password": PASSWORD,
            "csrf_token": portal.csrf(fresh, "/login"),
        },
    )
    r = fresh.post(
        "/login/totp",
        data={"code": portal.code("audrey"), "csrf_token": portal.csrf(fresh, "/login/totp")},
        follow_redirects=False,
    )
    portal.clock.advance(31)
    assert r.headers["location"] == "/admin/audit"


def test_admin_pages_render(portal: Portal) -> None:
    gw = portal.gw
    gw.posture.add_device("CT_ROOM2", ["10.1.2.0/24"], "CT room 2", "test", "none", None)
    c = portal.login("root")
    for page in PAGES:
        r = c.get(page)
        assert r.status_code == 200, page
        assert "<script" not in r.text and "style=" not in r.text
    devices = c.get("/admin/devices").text
    assert "CT_ROOM2" in devices and "10.1.2.0/24" in devices and "not required" in devices
    assert "admission now" in devices  # the posture check the DICOM edge runs
    anchors = c.get("/admin/anchors").text
    pending = re.search(r'id="batches-pending">(\d+)<', anchors)
    assert pending and pending.group(1) == "0"
    assert "nothing waits" in anchors and "block" in anchors.split('id="last-anchor"')[1][:80]
    # an admin still reads no study
    uid = portal.series["ann"].study_uid
    assert c.get(f"/api/studies/{uid}/archive").status_code == 404
    assert c.get(f"/studies/{uid}").status_code == 404


def test_every_admin_form_needs_its_csrf_token(portal: Portal) -> None:
    c = portal.login("root")
    forms = {
        "/admin/users": {"username": "mallory", "role": "admin"},
        "/admin/users/ann/suspend": {},
        "/admin/users/ann/reinstate": {},
        "/admin/users/ann/recover": {"passphrase": PASSPHRASE},
        "/admin/links": {"username": "cyd", "patient_id": "PID-X", "passphrase": PASSPHRASE},
        "/account/password": {"current_password": PASSWORD, "code": "1", "new_password": "x"},
        "/account/totp": {"password": PASSWORD, "code": "1"},
        "/account/totp/confirm": {"ticket": "x", "code": "1"},
    }
    for path, data in forms.items():
        for token in (None, "0" * 64):
            sent = data if token is None else {**data, "csrf_token": token}
            r = c.post(path, data=sent)
            assert r.status_code == 403, (path, token)
    assert "mallory" not in {a.username for a in portal.gw.users.all()}
    assert not portal.gw.users.get("ann").suspended and portal.gw.users.get("ann").enrolled


def test_link_hands_over_an_earlier_study(
    portal: Portal, tmp_path_factory: pytest.TempPathFactory
) -> None:
    gw = portal.gw
    s = make_ct_series(tmp_path_factory.mktemp("cyd"), 2, rows=16, columns=16, patient_id="PID-CYD")
    for f in s.files:
        assert import_file(gw.ingestor, f, "test").ok
    anchor(gw, {s.study_uid})  # anchored to the custodian: nobody is linked yet
    portal.series["cyd"] = s
    cyd = portal.login("cyd")
    assert cyd.get("/api/studies").json() == []
    c = portal.login("root")
    page = c.get("/admin/links")
    form = {"username": "cyd", "patient_id": "PID-CYD", "csrf_token": csrf_of(page.text)}
    r = c.post("/admin/links", data=form)  # an earlier study: the passphrase is needed
    assert r.status_code == 400 and "passphrase" in r.text
    r = c.post("/admin/links", data={**form, "passphrase": "not the passphrase"})
    assert r.status_code == 400 and "wrong" in r.text
    assert not gw.patient_links.of(gw.users.get("cyd").id)
    r = c.post("/admin/links", data={**form, "passphrase": PASSPHRASE})
    assert r.status_code == 200, r.text
    assert "1 earlier study(ies) handed over, 1 record(s) moved" in r.text
    assert "PID-CYD" in r.text.split('id="links"', 1)[1]
    # the patient now sees and decrypts it with their own key
    assert [x["study_uid"] for x in cyd.get("/api/studies").json()] == [s.study_uid]
    assert cyd.get(f"/api/studies/{s.study_uid}/archive").status_code == 200
    # a link that exists already is refused, clearly
    r = c.post("/admin/links", data={**form, "passphrase": PASSPHRASE})
    assert r.status_code == 400


def test_recover_shows_a_new_link_and_ends_the_sessions(portal: Portal) -> None:
    gw = portal.gw
    victim = portal.login("cyd")
    c = portal.login("root")
    page = c.get("/admin")
    assert 'action="/admin/users/cyd/recover"' in page.text
    token = csrf_of(page.text)
    r = c.post("/admin/users/cyd/recover", data={"passphrase": "wrong", "csrf_token": token})
    assert r.status_code == 400 and "wrong" in r.text and gw.users.get("cyd").enrolled
    assert victim.get("/api/studies").status_code == 200
    r = c.post("/admin/users/cyd/recover", data={"passphrase": PASSPHRASE, "csrf_token": token})
    assert r.status_code == 200 and "recovered" in r.text
    link = _LINK.search(r.text)
    assert link and PASSPHRASE not in r.text
    assert victim.get("/api/studies").status_code == 401  # the old session ended
    assert not gw.users.get("cyd").enrolled
    # the user enrolls anew from the link and still reads the study (keys from the escrow)
    path = "/enroll/" + link.group(1).rsplit("/enroll/", 1)[1]
    newcomer = portal.client()
    enroll = newcomer.get(path)
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', enroll.text)
    assert secret
    r = newcomer.post(
        path,
        data={
            "password": PASSWORD,
            "password_again": PASSWORD,
            "code": pyotp.TOTP(secret.group(1)).at(portal.clock.now()),
            "csrf_token": csrf_of(enroll.text),
        },
    )
    assert r.status_code == 200, r.text
    portal.secrets["cyd"] = secret.group(1)
    portal.clock.advance(31)
    again = portal.login("cyd")
    assert again.get(f"/api/studies/{portal.series['cyd'].study_uid}/archive").status_code == 200
    recovered = [e for e in gw.audit.entries() if e.kind == "user.recovered"]
    assert recovered and recovered[-1].subject == "cyd" and PASSPHRASE not in recovered[-1].detail
    # and cyd sees the recovery on the Activity page, and the record handed over on-chain
    activity = again.get("/activity").text
    assert "user.recovered" in activity and "patient.linked" in activity
    chain = activity.split('id="chain-activity"', 1)[1].split("</table>", 1)[0]
    assert "RecordTransferred" in chain and portal.series["cyd"].study_uid in chain


def test_audit_page_pages_and_shows_a_broken_chain(portal: Portal) -> None:
    c = portal.login("audrey")
    first = c.get("/admin/audit").text
    seqs = [int(x) for x in re.findall(r'<td data-label="#">(\d+)</td>', first)]
    assert len(seqs) == 50 and seqs == sorted(seqs, reverse=True)
    head = portal.gw.audit.head()
    assert head and seqs[0] >= head[0] - 1
    assert f"before={seqs[-1]}" in first
    second = c.get(f"/admin/audit?before={seqs[-1]}").text
    older = [int(x) for x in re.findall(r'<td data-label="#">(\d+)</td>', second)]
    assert older and older[0] == seqs[-1] - 1 and "Newest" in second
    assert c.get("/admin/audit?before=0").status_code == 400
    # someone edits an entry in the index: the page says where the chain breaks
    with portal.gw.db.write() as conn:
        conn.execute(update(audit_events).where(audit_events.c.seq == 3).values(actor="nobody"))
    r = c.get("/admin/audit")
    assert r.status_code == 200 and "BROKEN at entry 3" in r.text
