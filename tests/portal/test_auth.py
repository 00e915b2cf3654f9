"""Login, sessions, tokens and CSRF through the portal's HTTP edge."""

from __future__ import annotations

from tests.portal.conftest import PASSWORD, Portal, csrf_of

HEADERS = (
    "content-security-policy",
    "x-content-type-options",
    "referrer-policy",
    "x-frame-options",
)


def _problem(r: object) -> dict[str, object]:
    resp = r  # a httpx.Response
    assert resp.headers["content-type"].startswith("application/problem+json")  # type: ignore[attr-defined]
    return dict(resp.json())  # type: ignore[attr-defined]


def test_health_and_headers_everywhere(portal: Portal) -> None:
    c = portal.client()
    for path in ("/health", "/login", "/api/studies", "/studies", "/static/portal.css", "/nope"):
        r = c.get(path, follow_redirects=False)
        for h in HEADERS:
            assert h in r.headers, (path, h)
        assert "unsafe-inline" not in r.headers["content-security-policy"]
    assert c.get("/health").json() == {"status": "ok"}
    assert c.get("/studies", follow_redirects=False).headers["location"] == "/login"


def test_cookie_attributes_and_session_fixation(portal: Portal) -> None:
    c = portal.client()
    r = c.get("/login")
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("__Host-ztb_session=")
    for attr in ("Secure", "HttpOnly", "SameSite=strict", "Path=/"):
        assert attr.lower() in cookie.lower()
    planted = portal.session_id(c)
    token = csrf_of(r.text)
    r = c.post(
        "/login",
        data={"username": "ann", "password": PASSWORD, "csrf_token": token},
        follow_redirects=False,
    )
    pending = portal.session_id(c)
    assert pending and pending != planted
    # a pending session is not a login
    assert c.get("/api/studies").status_code == 401
    token = csrf_of(c.get("/login/totp").text)
    r = c.post(
        "/login/totp",
        data={"code": portal.code("ann"), "csrf_token": token},
        follow_redirects=False,
    )
    portal.clock.advance(31)
    assert r.status_code == 303 and r.headers["location"] == "/studies"
    full = portal.session_id(c)
    assert full and full not in (planted, pending)
    assert c.get("/api/studies").status_code == 200
    for old in (planted, pending):  # neither id from before the login is worth anything
        other = portal.client()
        other.cookies.set("__Host-ztb_session", old or "")
        assert other.get("/api/studies").status_code == 401


def test_csrf_required_on_state_changes(portal: Portal) -> None:
    c = portal.login("ann")
    r = c.post("/logout", follow_redirects=False)
    assert r.status_code == 403 and _problem(r)["type"] == "/problems/csrf-failed"
    uid = portal.series["ann"].study_uid
    r = c.put(f"/api/studies/{uid}/shares/drlee")
    assert r.status_code == 403 and _problem(r)["type"] == "/problems/csrf-failed"
    r = c.delete(f"/api/studies/{uid}/shares/drlee", headers={"X-CSRF-Token": "0" * 64})
    assert r.status_code == 403
    # the login form itself needs its token (login CSRF)
    fresh = portal.client()
    fresh.get("/login")
    r = fresh.post("/login", data={"username": "ann", "password": PASSWORD})
    assert r.status_code == 403
    assert c.get("/api/studies").status_code == 200  # nothing above ended the session


def test_logout_ends_the_session_on_the_server(portal: Portal) -> None:
    c = portal.login("ann")
    sid = portal.session_id(c)
    token = portal.csrf(c)
    r = c.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    replay = portal.client()
    replay.cookies.set("__Host-ztb_session", sid or "")
    assert replay.get("/api/studies").status_code == 401


def test_unknown_user_answers_like_a_wrong_password(portal: Portal) -> None:
    answers = []
    for name, password in (("ann", "wrong password here!"), ("nobody-at-all", PASSWORD)):
        r = portal.client().post(
            "/api/token", json={"username": name, "password": password, "totp": "123456"}
        )
        body = _problem(r)
        body.pop("instance")
        answers.append((r.status_code, body))
        c = portal.client()
        token = csrf_of(c.get("/login").text)
        page = c.post("/login", data={"username": name, "password": password, "csrf_token": token})
        answers.append((page.status_code, page.text.replace(token, "")))
    assert answers[0] == answers[2] and answers[1] == answers[3]
    assert answers[0][0] == 401


def test_bearer_tokens_refresh_and_logout(portal: Portal) -> None:
    pair = portal.token("ann")
    assert pair["token_type"] == "Bearer" and int(pair["expires_in"]) > 0
    c = portal.client()
    auth = {"Authorization": f"Bearer {pair['access_token']}"}
    assert c.get("/api/studies", headers=auth).status_code == 200
    r = c.post("/api/token/refresh", json={"refresh_token": pair["refresh_token"]})
    assert r.status_code == 200
    new = r.json()
    again = c.post("/api/token/refresh", json={"refresh_token": pair["refresh_token"]})
    assert again.status_code == 401  # reuse revokes the family
    new_auth = {"Authorization": f"Bearer {new['access_token']}"}
    assert c.get("/api/studies", headers=new_auth).status_code == 401

    pair = portal.token("ann")
    auth = {"Authorization": f"Bearer {pair['access_token']}"}
    assert c.post("/api/logout", headers=auth).status_code == 204
    assert c.get("/api/studies", headers=auth).status_code == 401
    r = c.post("/api/token/refresh", json={"refresh_token": pair["refresh_token"]})
    assert r.status_code == 401


def test_suspension_stops_session_and_token_at_once(portal: Portal) -> None:
    c = portal.login("cyd")
    pair = portal.token("cyd")
    auth = {"Authorization": f"Bearer {pair['access_token']}"}
    assert c.get("/api/studies").status_code == 200
    assert c.get("/api/studies", headers=auth).status_code == 200
    portal.gw.users.suspend("cyd", "test")
    try:
        assert c.get("/api/studies").status_code == 401
        assert c.get("/api/studies", headers=auth).status_code == 401
        assert c.get("/studies", follow_redirects=False).headers["location"] == "/login"
    finally:
        portal.gw.users.reinstate("cyd", "test")


def test_templates_carry_no_inline_script_or_style() -> None:
    """The CSP forbids inline script and style: no template may need them."""
    import re
    from pathlib import Path

    import portal

    folder = Path(portal.__file__).parent / "templates"
    templates = sorted(folder.glob("*.html"))
    assert len(templates) >= 8
    for t in templates:
        text = t.read_text()
        assert "<script" not in text and "<style" not in text, t.name
        assert not re.search(r"\sstyle=|\son[a-z]+=", text), t.name


def test_failures_are_throttled_never_locked_out(portal: Portal) -> None:
    """Repeated wrong passwords from one address wait (429, Retry-After), then pass again."""
    from fastapi.testclient import TestClient

    attacker = TestClient(
        portal.app_client.app, base_url="https://testserver", client=("192.0.2.50", 4444)
    )
    statuses = []
    for _ in range(6):
        r = attacker.post(
            "/api/token", json={"username": "cyd", "password": "not it at all!", "totp": "000000"}
        )
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["type"] == "/problems/throttled"
    assert statuses[0] == 401 and 429 in statuses
    portal.clock.advance(600)  # the delay is finite: the rightful user gets back in
    r = attacker.post(
        "/api/token",
        json={"username": "cyd", "password": PASSWORD, "totp": portal.code("cyd")},
    )
    portal.clock.advance(31)
    assert r.status_code == 200, r.text
