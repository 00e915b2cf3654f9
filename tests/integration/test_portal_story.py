"""The whole receiver-side story in a real browser (Playwright driving Debian's chromium)
through the real server (``ztbridge up`` with the portal on HTTPS, a self-signed
certificate): the first admin enrolls from the console link, adds a patient and a doctor
(the page shows their links), both enroll (TOTP codes computed with pyotp from the secret the
page shows), the patient is linked with ``ztbridge patient link``, storescu pushes a CT
series for that Patient ID, the patient logs in, sees the study, downloads the ZIP (every
file compared byte for byte with what was sent), shares with the doctor; the doctor sees it
and downloads it; the patient revokes; the doctor can no longer (404); the patient's Activity
shows the doctor's download and the grant and revoke on the chain; the admin pages (devices,
links, anchors, audit log with its verification) render. Every page is saved
as a screenshot under the test's tmp folder (``shots/``).

TOTP codes: a code is accepted once, for a time step later than the last accepted one, so
each account's login uses the code of the next step (inside the ±1 step window), never the
step its enrollment just spent: no waiting for the clock.
"""

from __future__ import annotations

import io
import re
import shutil
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from gateway.dataset import split_part10
from tests.support.dicomgen import make_ct_series
from tests.support.gateway_proc import GatewayProcess, free_port, make_gateway, storescu
from tests.support.ledger import wait_outbox
from tests.support.node import missing_peer
from tests.support.tls import self_signed

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHEAP_ENV = {
    "ZTBRIDGE_ACCOUNTS__ARGON2_MEMORY_KIB": "8",
    "ZTBRIDGE_ACCOUNTS__ARGON2_TIME_COST": "1",
    "ZTBRIDGE_ACCOUNTS__ARGON2_PARALLELISM": "1",
}


@pytest.fixture(scope="module")
def story_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One ``ztbridge up`` for the module: DICOM for storescu, the portal on HTTPS."""
    for tool in ("storescu", "openssl"):
        if shutil.which(tool) is None:
            missing_peer(f"{tool} not installed: install Debian's dcmtk and openssl")
    tmp = tmp_path_factory.mktemp("story")
    cert, key = self_signed(tmp)
    port = free_port()
    gw = make_gateway(
        tmp,
        ZTBRIDGE_PORTAL__PORT=str(port),
        ZTBRIDGE_PORTAL__TLS_CERT_FILE=str(cert),
        ZTBRIDGE_PORTAL__TLS_KEY_FILE=str(key),
        ZTBRIDGE_ACCOUNTS__PUBLIC_URL=f"https://127.0.0.1:{port}",
        ZTBRIDGE_LEDGER__POLL_SECONDS="0.2",
        ZTBRIDGE_LEDGER__DEFER_WHILE_BUSY_SECONDS="0",
        **CHEAP_ENV,
    )
    gw.env["PORTAL_URL"] = f"https://127.0.0.1:{port}"
    gw.cli("device", "add", "--posture-policy", "none", "--ae", "STORESCU", "--ip", "127.0.0.1")
    gw.start()
    try:
        yield gw
    finally:
        if gw.proc is not None:
            gw.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless (never ``playwright install``)."""
    if not Path(CHROMIUM).exists():
        missing_peer("chromium not installed: install Debian's chromium")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield b
        finally:
            b.close()


class Shots:
    """Numbered screenshots of every page visited."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.n = 0

    def __call__(self, page: Page, name: str) -> None:
        self.n += 1
        page.screenshot(path=str(self.folder / f"{self.n:02d}-{name}.png"), full_page=True)


def _enroll(page: Page, link: str, password: str, shot: Shots, who: str) -> str:
    """Enroll from ``link``; the TOTP secret the page showed."""
    p = page
    p.goto(link)
    shot(p, f"{who}-enroll")
    assert p.locator("figure.qr svg").count() == 1
    secret = p.locator("#totp-secret").inner_text().strip()
    p.fill("#password", password)
    p.fill("#password_again", password)
    p.fill("#code", pyotp.TOTP(secret).now())
    p.click("button[type=submit]")
    p.wait_for_selector("#recovery-codes")
    assert p.locator("#recovery-codes li").count() == 10
    shot(p, f"{who}-recovery-codes")
    return str(secret)


def _login(page: Page, base: str, user: str, password: str, secret: str, shot: Shots) -> None:
    p = page
    p.goto(f"{base}/login")
    shot(p, f"{user}-login")
    p.fill("#username", user)
    p.fill("#password", password)
    p.click("button[type=submit]")
    p.wait_for_url(re.compile(r".*/login/totp$"))
    shot(p, f"{user}-totp")
    p.fill("#code", pyotp.TOTP(secret).at(time.time() + 30))
    p.click("main button[type=submit]")
    p.wait_for_url(re.compile(r".*/(studies|admin)$"))


def _check_zip(path: Path, sent: dict[str, bytes]) -> None:
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as z:
        names = z.namelist()
        assert len(names) == len(sent)
        for name in names:
            parts = split_part10(z.read(name))
            assert bytes(parts.dataset) == sent[parts.sop_instance]


def _download(page: Page, selector: str, to: Path) -> Path:
    with page.expect_download() as info:
        page.click(selector)
    info.value.save_as(str(to))
    return to


def test_patient_doctor_story(
    story_gateway: GatewayProcess, browser: Browser, tmp_path: Path
) -> None:
    gw = story_gateway
    base = gw.env["PORTAL_URL"]
    shot = Shots(tmp_path / "shots")
    found = re.search(r"(https://\S+/enroll/\S+)", " ".join(gw.log().split()))
    assert found, gw.log()[-3000:]
    phone = {"width": 390, "height": 844}  # the patient uses a phone
    contexts = {
        who: browser.new_context(
            ignore_https_errors=True, **({"viewport": phone} if who == "ann" else {})
        )
        for who in ("admin", "ann", "drlee")
    }
    admin, ann, doc = (contexts[w].new_page() for w in ("admin", "ann", "drlee"))
    pw = {w: f"{w} rides the blue tram home" for w in contexts}

    # the first admin enrolls from the console's link, logs in, adds a patient and a doctor
    secrets = {"admin": _enroll(admin, found.group(1), pw["admin"], shot, "admin")}
    _login(admin, base, "admin", pw["admin"], secrets["admin"], shot)
    shot(admin, "admin-page")
    links = {}
    for user, role, name in (("ann", "patient", "Ann Story"), ("drlee", "doctor", "Dr Grace Lee")):
        admin.goto(f"{base}/admin")
        admin.fill("#username", user)
        admin.select_option("#role", role)
        admin.fill("#name", name)
        admin.click("section.card button[type=submit]")
        admin.wait_for_selector("#enroll-link")
        shot(admin, f"admin-added-{user}")
        links[user] = admin.locator("#enroll-link").inner_text().strip()
    secrets["ann"] = _enroll(ann, links["ann"], pw["ann"], shot, "ann")
    secrets["drlee"] = _enroll(doc, links["drlee"], pw["drlee"], shot, "drlee")

    # the patient is linked, then a modality pushes a CT series for that Patient ID
    gw.cli("patient", "link", "--username", "ann", "--patient-id", "PID-STORY")
    series = make_ct_series(tmp_path / "ct", 3, rows=32, columns=32, patient_id="PID-STORY")
    pushed = storescu(gw.port, series.files)
    assert pushed.returncode == 0, pushed.stderr
    sent = {
        p.sop_instance: bytes(p.dataset)
        for p in (split_part10(f.read_bytes()) for f in series.files)
    }
    wait_outbox(gw, anchored=1)
    admin.goto(f"{base}/admin")
    assert "PID-STORY" in admin.content()
    shot(admin, "admin-links")

    # the patient sees the study, downloads it, shares it with the doctor
    _login(ann, base, "ann", pw["ann"], secrets["ann"], shot)
    shot(ann, "ann-studies")
    row = ann.locator("table.list tbody tr")
    assert row.count() == 1 and "CT" in row.inner_text() and "3" in row.inner_text()
    ann.wait_for_function("document.querySelector('td.thumb img').complete")
    assert ann.evaluate("document.querySelector('td.thumb img').naturalWidth") > 0  # thumbnail
    _check_zip(_download(ann, "table.list a.button", tmp_path / "ann.zip"), sent)
    ann.click("table.list td[data-label=Description] a")
    ann.wait_for_selector("#download")
    shot(ann, "ann-study")
    ann.fill("#q", "grace")
    ann.click("form[role=search] button")
    ann.wait_for_selector("text=Share with Dr Grace Lee")
    shot(ann, "ann-doctor-search")
    ann.click("text=Share with Dr Grace Lee")
    ann.wait_for_selector("ul.shares li")
    shot(ann, "ann-shared")

    # the doctor sees it and downloads it
    _login(doc, base, "drlee", pw["drlee"], secrets["drlee"], shot)
    shot(doc, "drlee-shared-with-me")
    assert doc.locator("table.list tbody tr").count() == 1
    _check_zip(_download(doc, "table.list a.button", tmp_path / "doc.zip"), sent)

    # the patient revokes; the doctor no longer can
    ann.click("ul.shares button")
    ann.wait_for_selector("text=Nobody.")
    shot(ann, "ann-revoked")
    doc.goto(f"{base}/studies")
    assert doc.locator("#no-studies").count() == 1
    shot(doc, "drlee-after-revoke")
    gone = doc.request.get(f"{base}/api/studies/{series.study_uid}/archive")
    assert gone.status == 404
    doc.goto(f"{base}/studies/{series.study_uid}")
    shot(doc, "drlee-study-gone")
    assert "There is no such study." in doc.content()

    # the patient's Activity: the doctor's download, and the grant and revoke on the chain
    ann.goto(f"{base}/activity")
    audit_rows = ann.locator("#audit-activity").inner_text()
    assert "drlee" in audit_rows and "access.allowed" in audit_rows
    chain = ann.locator("#chain-activity").inner_text()
    assert "AccessGranted" in chain and "AccessRevoked" in chain
    shot(ann, "ann-activity")
    ann.goto(f"{base}/account")
    shot(ann, "ann-account")
    doc.goto(f"{base}/activity")
    shot(doc, "drlee-activity")
    # the admin pages: devices and posture, links, pending anchors, the audit log
    for page in ("devices", "links", "anchors", "audit"):
        admin.goto(f"{base}/admin/{page}")
        shot(admin, f"admin-{page}")
    assert "intact" in admin.locator("#audit-state").inner_text()
    for c in contexts.values():
        c.close()
