"""The Account page (change password, change TOTP), its API and the Activity page.

A password change re-seals the same keys under the new password (the study still decrypts
with them after a fresh login), ends every other session and token and keeps the asking one;
both changes ask for the password and a fresh code again (a replayed code is refused); a new
TOTP secret replaces the old one only once a code of it is confirmed. The Activity page shows
a patient who accessed their studies (the doctor's download, another patient's refused try,
the chain's grant) and never another patient's events.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from datetime import timedelta

import pyotp
from fastapi.testclient import TestClient
from sqlalchemy import select

from gateway.accounts import totp
from gateway.dataset import split_part10
from gateway.index.models import users
from tests.portal.conftest import PASSWORD, Portal, csrf_of

NEW_PASSWORD = "a brand new passphrase of mine"
_SECRET = re.compile(r'id="totp-secret">([A-Z2-7]+)<')
_TICKET = re.compile(r'name="ticket" value="([^"]+)"')


def _login(portal: Portal, username: str, password: str, c: TestClient | None = None) -> int:
    """Password then TOTP in a browser; the status of the last step (303: logged in)."""
    c = c or portal.client()
    r = c.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": portal.csrf(c, "/login")},
        follow_redirects=False,
    )
    if r.status_code != 303:
        return r.status_code
    r = c.post(
        "/login/totp",
        data={"code": portal.code(username), "csrf_token": portal.csrf(c, "/login/totp")},
        follow_redirects=False,
    )
    portal.clock.advance(31)
    return r.status_code


def _archive_matches(portal: Portal, c: TestClient, who: str) -> None:
    uid = portal.series[who].study_uid
    r = c.get(f"/api/studies/{uid}/archive")
    assert r.status_code == 200, r.text
    sent = {}
    for f in portal.series[who].files:
        parts = split_part10(f.read_bytes())
        sent[parts.sop_instance] = bytes(parts.dataset)
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        got = {(p := split_part10(z.read(n))).sop_instance: bytes(p.dataset) for n in z.namelist()}
    assert got == sent


def _key_columns(portal: Portal, username: str) -> tuple[bytes, bytes, str, bytes]:
    with portal.gw.db.read() as conn:
        row = conn.execute(select(users).where(users.c.username == username)).one()
    return bytes(row.keys_sealed), bytes(row.keys_escrow), row.eth_address, row.hpke_public


def test_account_page_for_every_role(portal: Portal) -> None:
    for who in ("ann", "drlee", "root"):
        c = portal.login(who)
        page = c.get("/account")
        assert page.status_code == 200 and 'action="/account/password"' in page.text
        assert 'action="/account/totp"' in page.text and who in page.text
        assert "<script" not in page.text and "style=" not in page.text


def test_password_change_rewraps_keys_and_ends_other_sessions(portal: Portal) -> None:
    asking, other = portal.login("bob"), portal.login("bob")
    tokens = portal.token("bob")
    sealed, escrow, address, public = _key_columns(portal, "bob")
    token = portal.csrf(asking, "/account")
    form = {
        "current_password": PASSWORD,
        "new_password": NEW_PASSWORD,
        "new_password_again": NEW_PASSWORD,
        "csrf_token": token,
    }
    # no CSRF token: refused before anything is checked
    no_csrf = {k: v for k, v in form.items() if k != "csrf_token"}
    r = asking.post("/account/password", data={**no_csrf, "code": portal.code("bob")})
    assert r.status_code == 403
    # a wrong current password: nothing changes
    r = asking.post(
        "/account/password",
        data={**form, "current_password": "not my password at all", "code": portal.code("bob")},
    )
    assert r.status_code == 401 and _key_columns(portal, "bob")[0] == sealed
    # a weak new password
    r = asking.post(
        "/account/password",
        data={**form, "new_password": "short", "new_password_again": "short", "code": "000000"},
    )
    assert r.status_code == 400
    # the code of bob's last login (its step was accepted, and is in the window): a replay
    replayed = totp.code_at(portal.secrets["bob"], portal.clock.now() - timedelta(seconds=31))
    window = portal.gw.settings.accounts.totp_valid_window
    assert totp.matching_step(portal.secrets["bob"], replayed, portal.clock.now(), window)
    r = asking.post("/account/password", data={**form, "code": replayed})
    assert r.status_code == 401 and _key_columns(portal, "bob")[0] == sealed
    r = asking.post("/account/password", data={**form, "code": portal.code("bob")})
    assert r.status_code == 200 and "Password changed" in r.text, r.text
    portal.clock.advance(31)
    # the keys are the same keys, sealed anew (new salt); the escrow is untouched
    after = _key_columns(portal, "bob")
    assert after[0] != sealed and after[1:] == (escrow, address, public)
    assert json.loads(after[0])["salt"] != json.loads(sealed)["salt"]
    # every other session and token ended; the asking session goes on (and still decrypts)
    assert other.get("/studies", follow_redirects=False).status_code == 303
    bearer = {"authorization": f"Bearer {tokens['access_token']}"}
    assert portal.client().get("/api/studies", headers=bearer).status_code == 401
    assert asking.get("/api/studies").status_code == 200
    _archive_matches(portal, asking, "bob")
    # the old password stops working, the new one works and the study still decrypts
    assert _login(portal, "bob", PASSWORD) == 401
    fresh = portal.client()
    assert _login(portal, "bob", NEW_PASSWORD, fresh) == 303
    _archive_matches(portal, fresh, "bob")
    events = [e for e in portal.gw.audit.entries() if e.kind == "user.password-changed"]
    assert events and events[-1].subject == "bob"
    assert json.loads(events[-1].detail)["sessions_ended"] >= 3  # other, and the token pair
    assert PASSWORD not in events[-1].detail and NEW_PASSWORD not in events[-1].detail


def test_password_change_by_api(portal: Portal) -> None:
    tokens = portal.token("drlee")
    bearer = {"authorization": f"Bearer {tokens['access_token']}"}
    c = portal.client()
    body = {"current_password": PASSWORD, "totp": portal.code("drlee"), "new_password": "weak"}
    r = c.post("/api/account/password", json=body, headers=bearer)
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    body["new_password"] = NEW_PASSWORD
    body["totp"] = "123456" if portal.code("drlee") != "123456" else "654321"
    r = c.post("/api/account/password", json=body, headers=bearer)
    assert r.status_code == 401
    portal.clock.advance(31)
    # a browser session must send the CSRF header
    browser = portal.login("drlee")
    body["totp"] = portal.code("drlee")
    assert browser.post("/api/account/password", json=body).status_code == 403
    r = browser.post(
        "/api/account/password",
        json=body,
        headers={"x-csrf-token": portal.csrf(browser, "/account")},
    )
    assert r.status_code == 200 and r.json()["sessions_ended"] >= 2
    portal.clock.advance(31)
    assert c.get("/api/studies", headers=bearer).status_code == 401  # the token ended
    assert _login(portal, "drlee", NEW_PASSWORD) == 303
    # and back by bearer token, for the tests after this one
    r = portal.client().post(
        "/api/token",
        json={"username": "drlee", "password": NEW_PASSWORD, "totp": portal.code("drlee")},
    )
    assert r.status_code == 200
    portal.clock.advance(31)
    r = portal.client().post(
        "/api/account/password",
        json={
            "current_password": NEW_PASSWORD,
            "totp": portal.code("drlee"),
            "new_password": PASSWORD,
        },
        headers={"authorization": f"Bearer {r.json()['access_token']}"},
    )
    assert r.status_code == 200
    portal.clock.advance(31)


def test_totp_change(portal: Portal) -> None:
    c = portal.login("cyd")
    elsewhere = portal.login("cyd")
    form = {"password": PASSWORD, "csrf_token": portal.csrf(c, "/account")}
    assert c.post("/account/totp", data={"password": PASSWORD}).status_code == 403  # no CSRF
    r = c.post("/account/totp", data={**form, "password": "wrong password here", "code": "1"})
    assert r.status_code == 401
    # the code cyd's last login used is refused: a replay, though inside the window
    replayed = totp.code_at(portal.secrets["cyd"], portal.clock.now() - timedelta(seconds=31))
    assert c.post("/account/totp", data={**form, "code": replayed}).status_code == 401
    r = c.post("/account/totp", data={**form, "code": portal.code("cyd")})
    assert r.status_code == 200, r.text
    new_secret, ticket = _SECRET.search(r.text), _TICKET.search(r.text)
    assert new_secret and ticket and "<svg" in r.text
    secret = new_secret.group(1)
    assert secret != portal.secrets["cyd"]
    confirm = {"ticket": ticket.group(1), "csrf_token": csrf_of(r.text)}
    now = portal.clock.now()
    # not confirmed yet: a code of the old secret, not of the new one, still logs in
    assert c.post("/account/totp/confirm", data={"ticket": ticket.group(1)}).status_code == 403
    wrong = pyotp.TOTP(portal.secrets["cyd"]).at(now)
    r = c.post("/account/totp/confirm", data={**confirm, "code": wrong})
    assert r.status_code == 400
    # the ticket is bound to the session that asked
    r = elsewhere.post(
        "/account/totp/confirm",
        data={
            "ticket": ticket.group(1),
            "code": pyotp.TOTP(secret).at(now),
            "csrf_token": portal.csrf(elsewhere, "/account"),
        },
    )
    assert r.status_code == 400
    r = c.post("/account/totp/confirm", data={**confirm, "code": pyotp.TOTP(secret).at(now)})
    assert r.status_code == 200 and "TOTP changed" in r.text
    old = portal.secrets["cyd"]
    portal.clock.advance(31)
    # the old secret's codes no longer log in; the new one's do
    assert _login(portal, "cyd", PASSWORD) == 401
    portal.secrets["cyd"] = secret
    portal.clock.advance(31)
    assert _login(portal, "cyd", PASSWORD) == 303
    assert old not in "".join(e.detail for e in portal.gw.audit.entries())
    assert any(e.kind == "user.totp-changed" for e in portal.gw.audit.entries())


def test_totp_offer_expires(portal: Portal) -> None:
    c = portal.login("ann")
    r = c.post(
        "/account/totp",
        data={
            "password": PASSWORD,
            "code": portal.code("ann"),
            "csrf_token": portal.csrf(c, "/account"),
        },
    )
    found = _SECRET.search(r.text)
    ticket = _TICKET.search(r.text)
    assert found and ticket
    portal.clock.advance(11 * 60)
    c.get("/account")  # keeps the session alive is not needed: idle is 15 minutes
    r = c.post(
        "/account/totp/confirm",
        data={
            "ticket": ticket.group(1),
            "code": pyotp.TOTP(found.group(1)).at(portal.clock.now()),
            "csrf_token": csrf_of(r.text),
        },
    )
    assert r.status_code == 400 and "expired" in r.text
    assert portal.gw.users.get("ann").enrolled  # still the old secret: the next login works
    assert _login(portal, "ann", PASSWORD) == 303


def test_activity_shows_who_accessed_my_study_and_nothing_else(portal: Portal) -> None:
    ann_uid, bob_uid = portal.series["ann"].study_uid, portal.series["bob"].study_uid
    ann = portal.login("ann")
    r = ann.put(
        f"/api/studies/{ann_uid}/shares/drlee",
        json={},
        headers={"x-csrf-token": portal.csrf(ann)},
    )
    assert r.status_code in (200, 201), r.text
    doctor = portal.login("drlee")
    assert doctor.get(f"/api/studies/{ann_uid}/archive").status_code == 200
    bob = portal.client()
    assert _login(portal, "bob", NEW_PASSWORD, bob) == 303  # bob changed it above
    assert bob.get(f"/api/studies/{ann_uid}").status_code == 404  # refused, audited
    assert bob.get(f"/api/studies/{bob_uid}/archive").status_code == 200

    page = ann.get("/activity")
    assert page.status_code == 200
    assert "<script" not in page.text and "style=" not in page.text
    table = page.text.split('id="audit-activity"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)
    assert any("drlee" in row and "access.allowed" in row and "(read)" in row for row in rows)
    assert any("bob" in row and "access.denied" in row for row in rows)
    assert bob_uid not in page.text  # bob's own study never shows on ann's page
    chain = page.text.split('id="chain-activity"', 1)[1].split("</table>", 1)[0]
    assert "AccessGranted" in chain and ann_uid in chain and "drlee" in chain
    assert "RecordAnchored" in chain

    bobs = bob.get("/activity").text
    assert ann_uid not in bobs and "drlee" not in bobs  # nothing of ann's
    assert bob_uid in bobs
    drs = doctor.get("/activity").text
    assert "access.allowed" in drs and ann_uid in drs  # the doctor's own requests
    assert bob_uid not in drs and "read-activity" not in drs and "/studies/search" not in drs
    # an admin has no activity page of this kind (the audit page is the admin's)
    assert portal.login("root").get("/activity").status_code == 403


def test_activity_pages(portal: Portal) -> None:
    c = portal.login("ann")
    for _ in range(60):
        c.get(f"/api/studies/{portal.series['ann'].study_uid}")
    first = c.get("/activity").text
    assert "offset=50" in first and "Older" in first
    second = c.get("/activity?offset=50")
    assert second.status_code == 200 and "Newer" in second.text
    newest = re.findall(r'<td data-label="When">([^<]+)</td>', first)
    older = re.findall(r'<td data-label="When">([^<]+)</td>', second.text)
    assert newest == sorted(newest, reverse=True) and newest[-1] >= older[0]
    assert c.get("/activity?offset=-1").status_code == 400
