"""The shared DICOMweb test world: one ``ztbridge up`` and one Orthanc for the whole session.

``world`` (session scope, built on first use by any test under tests/dicomweb):

* a real ``ztbridge up`` (HTTPS portal with a self-signed certificate, embedded ledger) and
  Orthanc with its DICOMweb plugin, both fed the same files by the same ``storescu``;
* accounts provisioned with ``ztbridge user add --password-file --totp-secret-file`` (cheap
  argon2): patients ann, bob, cyd (linked to their Patient IDs before any push), doctor
  drlee, technologist tess (for STOW);
* the studies of ``tests/dicomweb/world.py`` (UTF-8 names with carets and spaces, CT, MR and
  a multi-frame instance, a study without StudyDate, one unlinked study nobody may see),
  ann and cyd sharing some with drlee through ``PUT /api/studies/{uid}/shares/drlee``.

Tokens: a TOTP code is accepted once per account (a later step each time), so each account's
first login spends the current TOTP code and every later one a recovery code (ten per
account, parsed from ``user add``); an access token is kept and refreshed with its refresh
token, never re-logged. ``world.client(user)`` is a ``dicomweb_client.DICOMwebClient`` on
ztbridge with that user's bearer token; ``world.orthanc_client()`` the same on Orthanc;
``world.cookie_session(user)`` a ``requests.Session`` logged in through the portal's forms.

The world's data must stay as it is for every module: a STOW test stores under its own
Patient ID (``world.stow_patient_id()`` gives a fresh one linked to nobody, or link one), and
never into the patients above, so QIDO's comparisons with Orthanc keep holding.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from tests.dicomweb.world import ACCOUNTS, PEOPLE, SPECS, WrittenStudy, write_study
from tests.support.gateway_proc import GatewayProcess, free_port, make_gateway, storescu
from tests.support.ledger import outbox
from tests.support.node import missing_peer
from tests.support.orthanc import AE_TITLE, Orthanc, running_orthanc
from tests.support.tls import self_signed

CHEAP_ENV = {
    "ZTBRIDGE_ACCOUNTS__ARGON2_MEMORY_KIB": "8",
    "ZTBRIDGE_ACCOUNTS__ARGON2_TIME_COST": "1",
    "ZTBRIDGE_ACCOUNTS__ARGON2_PARALLELISM": "1",
}
_CODE = re.compile(r"^\s+([A-Z2-7]{4}-[A-Z2-7]{4}-[A-Z2-7]{4}-[A-Z2-7]{4})\s*$", re.M)
_CSRF = re.compile(r'name="csrf_token"\s+value="([^"]+)"')


@dataclass
class Account:
    """A provisioned account's credentials (test-only secrets, in the test's tmp)."""

    username: str
    role: str
    password: str
    totp_secret: str
    recovery_codes: list[str]
    totp_spent: bool = False

    def second_factor(self) -> str:
        """A code not yet accepted: the current TOTP code once, then a recovery code."""
        if not self.totp_spent:
            self.totp_spent = True
            return pyotp.TOTP(self.totp_secret).now()
        if not self.recovery_codes:
            raise AssertionError(f"{self.username} has used all its recovery codes")
        return self.recovery_codes.pop()


@dataclass
class _Token:
    access: str
    refresh: str
    expires_at: float


@dataclass
class World:
    """Everything a DICOMweb test needs; see the module docstring."""

    gw: GatewayProcess
    orthanc: Orthanc
    base: str
    ca_bundle: Path
    accounts: dict[str, Account]
    studies: dict[str, WrittenStudy]
    tmp: Path
    _tokens: dict[str, _Token] = field(default_factory=dict)
    _stow_ids: int = 0

    @property
    def dicomweb_url(self) -> str:
        """ztbridge's DICOMweb root."""
        return f"{self.base}/dicom-web"

    # --- logins ------------------------------------------------------------------------------

    def session(self) -> requests.Session:
        """A ``requests.Session`` that trusts the portal's certificate and nothing from the
        environment (``REQUESTS_CA_BUNDLE`` would otherwise win over ``verify``, and a proxy
        variable would send loopback traffic away)."""
        s = requests.Session()
        s.trust_env = False
        s.verify = str(self.ca_bundle)
        return s

    def login(self, username: str) -> dict[str, Any]:
        """A fresh ``POST /api/token`` (spends a code): the token pair as JSON."""
        a = self.accounts[username]
        r = self.session().post(
            f"{self.base}/api/token",
            json={"username": username, "password": a.password, "totp": a.second_factor()},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        pair: dict[str, Any] = r.json()
        return pair

    def token(self, username: str) -> str:
        """``username``'s access token: one login per account, then refreshes."""
        t = self._tokens.get(username)
        if t is not None and time.monotonic() < t.expires_at:
            return t.access
        if t is None:
            pair = self.login(username)
        else:
            r = self.session().post(
                f"{self.base}/api/token/refresh", json={"refresh_token": t.refresh}, timeout=60
            )
            assert r.status_code == 200, r.text
            pair = r.json()
        self._tokens[username] = _Token(
            pair["access_token"],
            pair["refresh_token"],
            time.monotonic() + float(pair["expires_in"]) - 60,
        )
        return str(pair["access_token"])

    def headers(self, username: str) -> dict[str, str]:
        """The bearer header of ``username``."""
        return {"Authorization": f"Bearer {self.token(username)}"}

    def http(self, username: str | None = None) -> requests.Session:
        """A ``requests.Session`` trusting the portal's certificate, with ``username``'s
        bearer token (none: anonymous)."""
        s = self.session()
        if username is not None:
            s.headers.update(self.headers(username))
        return s

    def client(self, username: str) -> DICOMwebClient:
        """dicomweb-client on ztbridge as ``username`` (HTTPS, bearer token)."""
        return DICOMwebClient(
            url=self.dicomweb_url, session=self.session(), headers=self.headers(username)
        )

    def orthanc_client(self) -> DICOMwebClient:
        """dicomweb-client on Orthanc (no auth: it sees everything)."""
        s = requests.Session()
        s.trust_env = False
        return DICOMwebClient(url=self.orthanc.dicomweb_url, session=s)

    def cookie_session(self, username: str) -> requests.Session:
        """A ``requests.Session`` logged in through the portal's forms (session cookie)."""
        a = self.accounts[username]
        s = self.session()
        page = s.get(f"{self.base}/login", timeout=60)
        csrf = _CSRF.search(page.text)
        assert csrf, page.text[:2000]
        r = s.post(
            f"{self.base}/login",
            data={"username": username, "password": a.password, "csrf_token": csrf.group(1)},
            timeout=60,
        )
        assert r.status_code == 200 and r.url.endswith("/login/totp"), (r.status_code, r.url)
        csrf = _CSRF.search(r.text)
        assert csrf, r.text[:2000]
        r = s.post(
            f"{self.base}/login/totp",
            data={"code": a.second_factor(), "csrf_token": csrf.group(1)},
            timeout=60,
        )
        assert r.status_code == 200, (r.status_code, r.text[:2000])
        assert not r.url.endswith("/login/totp"), r.text[:2000]
        return s

    # --- data --------------------------------------------------------------------------------

    def visible_to(self, username: str) -> list[WrittenStudy]:
        """The world's studies ``username`` may see."""
        return [s for s in self.studies.values() if s.seen_by(username)]

    def hidden_from(self, username: str) -> list[WrittenStudy]:
        """The world's studies ``username`` must never see."""
        return [s for s in self.studies.values() if not s.seen_by(username)]

    def stow_patient_id(self) -> str:
        """A Patient ID of nobody in the world, for instances a STOW test stores."""
        self._stow_ids += 1
        return f"ZTQ-STOW-{self._stow_ids:04d}"

    def push(self, files: list[Path], *, to_orthanc: bool = True) -> None:
        """storescu ``files`` to ztbridge (and Orthanc), each over one association."""
        pushed = storescu(self.gw.port, files)
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        if to_orthanc:
            pushed = storescu(self.orthanc.dicom_port, files, "STORESCU", AE_TITLE)
            assert pushed.returncode == 0, pushed.stdout + pushed.stderr


def _provision(gw: GatewayProcess, tmp: Path, username: str, role: str) -> Account:
    password = f"{username} rides the blue tram home"
    pw_file, totp_file = tmp / f"{username}.pw", tmp / f"{username}.totp"
    pw_file.write_text(password + "\n")
    out = gw.cli(
        "user", "add", "--username", username, "--role", role, "--name", username.title(),
        "--password-file", str(pw_file), "--totp-secret-file", str(totp_file),
    )  # fmt: skip
    codes = _CODE.findall(out.stdout)
    assert len(codes) == 10, out.stdout
    return Account(username, role, password, totp_file.read_text().strip(), codes)


def _settle(gw: GatewayProcess, timeout: float = 180.0) -> None:
    """Wait until every instance is in an anchored batch and nothing is pending."""
    deadline = time.monotonic() + timeout
    while True:
        state = outbox(gw)
        done = state.get("unbatched") == 0 and state.get("anchored", 0) >= 1
        if done and not any(v for k, v in state.items() if k not in ("anchored", "unbatched")):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"anchoring did not settle: {state}\n{gw.log()[-4000:]}")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The session's DICOMweb world (see the module docstring)."""
    for tool in ("storescu", "openssl"):
        if shutil.which(tool) is None:
            missing_peer(f"{tool} not installed: install Debian's dcmtk and openssl")
    tmp = tmp_path_factory.mktemp("dicomweb")
    cert, key = self_signed(tmp)
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    gw = make_gateway(
        tmp,
        ZTBRIDGE_PORTAL__PORT=str(port),
        ZTBRIDGE_PORTAL__TLS_CERT_FILE=str(cert),
        ZTBRIDGE_PORTAL__TLS_KEY_FILE=str(key),
        ZTBRIDGE_ACCOUNTS__PUBLIC_URL=base,
        ZTBRIDGE_LEDGER__POLL_SECONDS="0.2",
        ZTBRIDGE_LEDGER__DEFER_WHILE_BUSY_SECONDS="0",
        ZTBRIDGE_SESSIONS__ACCESS_TOKEN_MINUTES="60",
        ZTBRIDGE_SESSIONS__IDLE_MINUTES="240",
        **CHEAP_ENV,
    )
    gw.cli("device", "add", "--posture-policy", "none", "--ae", "STORESCU", "--ip", "127.0.0.1")
    secrets_dir = tmp / "secrets"
    secrets_dir.mkdir()
    accounts = {u: _provision(gw, secrets_dir, u, role) for u, role in ACCOUNTS.items()}
    for p in PEOPLE:
        if p.username is not None:
            gw.cli("patient", "link", "--username", p.username, "--patient-id", p.patient_id)
    studies = {spec.key: write_study(tmp / "dicom", spec) for spec in SPECS}
    with ExitStack() as stack:
        orthanc = stack.enter_context(running_orthanc(tmp / "orthanc"))
        gw.start()
        stack.callback(lambda: gw.stop() if gw.proc is not None else None)
        w = World(gw, orthanc, base, cert, accounts, studies, tmp)
        for s in studies.values():
            w.push(s.files)
        _settle(gw)
        for s in studies.values():
            owner = s.spec.person.username
            for doctor in s.spec.shared_with:
                assert owner is not None
                r = w.http(owner).put(f"{base}/api/studies/{s.uid}/shares/{doctor}", timeout=120)
                assert r.status_code == 200, r.text
        yield w
