"""The portal in-process (FastAPI's TestClient over HTTPS URLs) around a real gateway: an
index, a store, the embedded chain, accounts made by the account service, and two patients'
CT series imported and anchored to them. One world per module (it costs a few seconds);
each test logs in afresh (the clock moves a TOTP step on after every login, since a code
is accepted only once)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from gateway.accounts import totp
from gateway.accounts.links import link_patient
from gateway.accounts.onchain import sync_users
from gateway.anchoring.session import Session
from gateway.clock import FixedClock
from gateway.importer import import_file
from gateway.service import Gateway, open_gateway
from gateway.settings import load_settings
from portal.app import create_app
from portal.csrf import COOKIE
from tests.support.dicomgen import Series, make_ct_series

CHEAP = {"argon2_memory_kib": 8, "argon2_time_cost": 1, "argon2_parallelism": 1}
PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = _CSRF.search(html)
    assert found, "the page has no CSRF token"
    return found.group(1)


@dataclass
class Portal:
    gw: Gateway
    clock: FixedClock
    app_client: TestClient
    secrets: dict[str, str] = field(default_factory=dict)
    series: dict[str, Series] = field(default_factory=dict)

    def client(self) -> TestClient:
        """A new browser (its own cookie jar, a browser's Accept) on the same app."""
        return TestClient(
            self.app_client.app,
            base_url="https://testserver",
            headers={"accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
        )

    def code(self, username: str) -> str:
        """The user's current TOTP code; the clock then moves a step on (no replay)."""
        code = totp.code_at(self.secrets[username], self.clock.now())
        return code

    def login(self, username: str, client: TestClient | None = None) -> TestClient:
        """A browser logged in as ``username`` (password, then TOTP)."""
        c = client or self.client()
        token = csrf_of(c.get("/login").text)
        r = c.post(
            "/login",
            data={"username": username, "password": PASSWORD, "csrf_token": token},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        token = csrf_of(c.get("/login/totp").text)
        r = c.post(
            "/login/totp",
            data={"code": self.code(username), "csrf_token": token},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        self.clock.advance(31)
        return c

    def token(self, username: str) -> dict[str, str]:
        """A bearer token pair from ``POST /api/token``."""
        r = self.client().post(
            "/api/token",
            json={"username": username, "password": PASSWORD, "totp": self.code(username)},
        )
        assert r.status_code == 200, r.text
        self.clock.advance(31)
        return dict(r.json())

    def csrf(self, c: TestClient, page: str = "/studies") -> str:
        """The CSRF token of ``c``'s session, from one of its pages."""
        return csrf_of(c.get(page).text)

    def session_id(self, c: TestClient) -> str | None:
        return c.cookies.get(COOKIE)


def anchor(gw: Gateway, studies: set[str]) -> None:
    """Register pending accounts, then seal and anchor ``studies`` on the embedded chain."""
    anchoring = gw.anchoring
    assert anchoring is not None

    def run(s: Session) -> None:
        sync_users(gw.db, s.ledger, anchoring.accounts.admin, gw.audit)
        anchoring.seal_studies(studies)
        anchoring.send_pending(s)

    anchoring.run_on_ledger(run)


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    tmp = tmp_path_factory.mktemp("portal")
    settings = load_settings(home=tmp / "home", custodian_passphrase="p" * 20, accounts=CHEAP)
    clock = FixedClock(datetime(2026, 12, 2, 12, tzinfo=UTC))
    gw = open_gateway(settings, clock=clock)
    anchoring = gw.anchoring
    assert anchoring is not None
    p = Portal(gw, clock, TestClient(create_app(gw), base_url="https://testserver"))
    for name, role, display in (
        ("ann", "patient", "Ann Patient"),
        ("bob", "patient", "Bob Other"),
        ("cyd", "patient", "Cyd Third"),
        ("drlee", "doctor", "Dr Grace Lee"),
        ("root", "admin", "Root Admin"),
    ):
        p.secrets[name] = gw.users.provision(name, role, display, PASSWORD, "test").totp_secret
    for name, pid in (("ann", "PID-ANN"), ("bob", "PID-BOB")):
        link_patient(
            gw.patient_links, gw.users.get(name), pid, None, anchoring, None, "test", gw.audit
        )
        s = make_ct_series(tmp / name, 3, rows=16, columns=16, patient_id=pid, seed=len(name))
        for f in s.files:
            assert import_file(gw.ingestor, f, "test").ok
        p.series[name] = s
    anchor(gw, {s.study_uid for s in p.series.values()})
    try:
        yield p
    finally:
        gw.close()
