"""OHIF in a real browser (Playwright driving Debian's chromium, software WebGL) against the
shared DICOMweb world's real ``ztbridge up``: the doctor logs in through the portal's login
page (password, then a second factor), opens a shared CT series and then a multi-frame
instance from their study pages' "Open in viewer"; each time the test waits for OHIF's
viewport to draw and checks that its pixels are not blank (the middle of the canvas, away
from the overlays, holds many grey levels: the world's images are noise), and saves a
screenshot under the test's tmp folder (``shots/``). A study the doctor may not see opens
nothing (every DICOMweb answer for it is 404); after the patient revokes the share, the
viewer's next requests for that study are 404 as well. Throughout, the browser asks nothing
of any other origin and the viewer's CSP refuses nothing OHIF needs.

The world's shares are put back as they were when the test ends (other modules compare
drlee's view with Orthanc's).
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

from portal.csrf import COOKIE
from portal.viewer import DEFAULT_DIST
from tests.dicomweb.conftest import World
from tests.dicomweb.world import WrittenStudy
from tests.support.node import missing_peer

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CANVAS = "canvas.cornerstone-canvas"
DRAW_TIMEOUT_S = 60.0  # software WebGL on 2 shared cores: generous, never asserted on


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless, software WebGL (SwiftShader): one for the module."""
    if not Path(CHROMIUM).exists():
        missing_peer("chromium not installed: install Debian's chromium")
    if not (DEFAULT_DIST / "index.html").is_file():
        missing_peer("OHIF not installed: run `make install` (npm ci in portal/viewer)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader"],
        )
        try:
            yield b
        finally:
            b.close()


@dataclass
class Watch:
    """What the page asked for and what the browser complained about."""

    base: str
    dicomweb: list[tuple[str, int]] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def attach(self, ctx: BrowserContext) -> None:
        ctx.on("request", self._request)
        ctx.on("response", lambda r: self._response(r.url, r.status))

    def attach_page(self, page: Page) -> None:
        page.on("console", self._console)

    def _request(self, request: object) -> None:
        url = str(getattr(request, "url", ""))
        if not url.startswith((self.base, "data:", "blob:", "about:")):
            self.elsewhere.append(url)

    def _response(self, url: str, status: int) -> None:
        if url.startswith(f"{self.base}/dicom-web/"):
            self.dicomweb.append((url, status))

    def _console(self, msg: ConsoleMessage) -> None:
        self.console.append(f"{msg.type}: {msg.text}")
        if "Content Security Policy" in msg.text or "Refused to" in msg.text:
            self.refused.append(msg.text)

    def about(self, study_uid: str, since: int = 0) -> list[tuple[str, int]]:
        """DICOMweb answers (from the ``since``-th on) that name ``study_uid``."""
        return [(u, s) for u, s in self.dicomweb[since:] if study_uid in u]


class Shots:
    """Numbered screenshots."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.n = 0

    def __call__(self, page: Page, name: str) -> Path:
        self.n += 1
        path = self.folder / f"{self.n:02d}-{name}.png"
        page.screenshot(path=str(path))
        return path


def _login(page: Page, world: World, username: str, shot: Shots) -> None:
    """Password, then the account's next unused second factor, through the login pages."""
    account = world.accounts[username]
    page.goto(f"{world.base}/login")
    page.fill("#username", username)
    page.fill("#password", account.password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/login/totp$"))
    page.fill("#code", account.second_factor())
    shot(page, f"{username}-totp")
    page.click("main button[type=submit]")
    page.wait_for_url(re.compile(r".*/studies$"))


def _drawn_pixels(page: Page, study: str, shot: Shots, name: str) -> np.ndarray:
    """Wait until OHIF's viewport shows an image; its canvas, as greyscale pixels.

    Not blank means: the middle half of the canvas (OHIF's text overlays sit in its corners)
    holds many distinct levels, as the world's noise images do once drawn; an empty
    viewport is one flat colour."""
    canvas = page.locator(CANVAS).first
    deadline = time.monotonic() + DRAW_TIMEOUT_S
    while True:
        if not canvas.is_visible():
            if time.monotonic() > deadline:
                shot(page, f"{name}-no-viewport")
                raise AssertionError(f"OHIF showed no viewport for {study}")
            page.wait_for_timeout(500)
            continue
        png = canvas.screenshot()
        grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
        h, w = grey.shape
        middle = grey[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4]
        if len(np.unique(middle)) > 16:
            (shot.folder / f"{name}-canvas.png").write_bytes(png)
            shot(page, name)
            return middle
        if time.monotonic() > deadline:
            shot(page, f"{name}-never-drew")
            raise AssertionError(f"the viewport never drew {study}")
        page.wait_for_timeout(500)


def _open_from_study_page(page: Page, world: World, study: WrittenStudy, shot: Shots) -> None:
    page.goto(f"{world.base}/studies/{study.uid}")
    shot(page, f"study-{study.spec.key}")
    link = page.locator("#open-viewer")
    assert link.get_attribute("href") == f"/viewer/viewer?StudyInstanceUIDs={study.uid}"
    link.click()
    page.wait_for_url(re.compile(r".*/viewer/viewer\?.*"))


def test_doctor_reads_shared_studies_in_ohif(
    world: World, browser: Browser, tmp_path: Path
) -> None:
    shot = Shots(tmp_path / "shots")
    ct, mf, hidden = (world.studies[k] for k in ("ann_ct", "ann_mf", "bob_ct"))
    assert ct.seen_by("drlee") and mf.seen_by("drlee") and not hidden.seen_by("drlee")
    watch = Watch(world.base)
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
    watch.attach(ctx)
    page = ctx.new_page()
    watch.attach_page(page)
    revoked = False
    try:
        _login(page, world, "drlee", shot)

        # a shared CT series: the study page's link opens it, the viewport draws it
        _open_from_study_page(page, world, ct, shot)
        pixels = _drawn_pixels(page, ct.uid, shot, "ct-drawn")
        assert pixels.std() > 5
        assert any("/frames/" in u and s == 200 for u, s in watch.about(ct.uid))

        # a multi-frame instance (8 RGB frames), from its own study page
        _open_from_study_page(page, world, mf, shot)
        pixels = _drawn_pixels(page, mf.uid, shot, "multiframe-drawn")
        assert pixels.std() > 5
        assert any("/frames/" in u and s == 200 for u, s in watch.about(mf.uid))

        # a study drlee may not see: nothing but 404s, nothing drawn
        since = len(watch.dicomweb)
        page.goto(f"{world.base}/viewer/viewer?StudyInstanceUIDs={hidden.uid}")
        page.wait_for_timeout(3000)
        shot(page, "hidden-study")
        _nothing_but_not_found(watch.about(hidden.uid, since))
        assert page.locator(CANVAS).count() == 0 or not _has_image(page)

        # the patient revokes: the viewer's next requests for the study are 404
        share = f"{world.base}/api/studies/{ct.uid}/shares/drlee"
        r = world.http("ann").delete(share, timeout=120)
        assert r.status_code in (200, 204), r.text
        revoked = True
        since = len(watch.dicomweb)
        page.goto(f"{world.base}/viewer/viewer?StudyInstanceUIDs={ct.uid}")
        page.wait_for_timeout(3000)
        shot(page, "after-revoke")
        _nothing_but_not_found(watch.about(ct.uid, since))
        assert page.locator(CANVAS).count() == 0 or not _has_image(page)
        direct = page.request.get(f"{world.base}/dicom-web/studies/{ct.uid}/metadata")
        assert direct.status == 404

        assert watch.elsewhere == [], watch.elsewhere
        assert watch.refused == [], watch.refused
    finally:
        (shot.folder / "console.txt").write_text("\n".join(watch.console) + "\n")
        (shot.folder / "dicomweb.txt").write_text(
            "".join(f"{status} {url}\n" for url, status in watch.dicomweb)
        )
        ctx.close()
        if revoked:
            share = f"{world.base}/api/studies/{ct.uid}/shares/drlee"
            r = world.http("ann").put(share, timeout=120)
            assert r.status_code == 200, r.text


def _nothing_but_not_found(answers: list[tuple[str, int]]) -> None:
    """What DICOMweb told the viewer about a study the caller may not see: the study's own
    resources are 404 (as for an unknown UID), a search for it finds nothing (204, PS3.18's
    empty result: a search never says whether a UID exists); never a 200."""
    assert answers, "the viewer asked nothing about the study"
    retrieves = [(u, s) for u, s in answers if "/dicom-web/studies/" in u]
    searches = [(u, s) for u, s in answers if "/dicom-web/studies?" in u]
    assert retrieves and all(s == 404 for _, s in retrieves), answers
    assert all(s == 204 for _, s in searches), answers


def _has_image(page: Page) -> bool:
    """Whether any viewport canvas shows more than a flat colour."""
    png = page.locator(CANVAS).first.screenshot()
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    h, w = grey.shape
    return len(np.unique(grey[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4])) > 16


def test_token_parameter_opens_a_study_without_a_session(
    world: World, browser: Browser, tmp_path: Path
) -> None:
    """``?token=`` (an access token from ``POST /api/token``), no cookie: OHIF sends it as a
    bearer token on every DICOMweb request and drops it from the address bar."""
    shot = Shots(tmp_path / "shots")
    mf = world.studies["ann_mf"]
    watch = Watch(world.base)
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
    watch.attach(ctx)
    page = ctx.new_page()
    watch.attach_page(page)
    try:
        token = world.token("drlee")
        page.goto(f"{world.base}/viewer/viewer?StudyInstanceUIDs={mf.uid}&token={token}")
        _drawn_pixels(page, mf.uid, shot, "token-multiframe-drawn")
        assert "token=" not in page.url
        # no session cookie (OHIF sets only its language): the bearer token did it all
        assert COOKIE not in {c.get("name") for c in ctx.cookies()}
        assert any("/frames/" in u and s == 200 for u, s in watch.about(mf.uid))
        assert watch.elsewhere == [] and watch.refused == []
    finally:
        (shot.folder / "console.txt").write_text("\n".join(watch.console) + "\n")
        ctx.close()
