"""The OHIF viewer as the portal serves it, without a browser: ``/viewer``'s page needs a
login (session or OHIF's ``?token=``), carries its own CSP with the inline scripts' hashes,
loads every asset from under ``/viewer``; ``app-config.js`` points OHIF at ``/dicom-web`` on
the same origin and nowhere else; the study page links to the viewer. The dist is the one
``make install`` puts in portal/viewer/node_modules (the pinned ``@ohif/app``)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest
from fastapi import FastAPI

from gateway.settings import ViewerSettings
from portal.viewer import (
    DEFAULT_DIST,
    ViewerDist,
    ViewerDistError,
    install,
    render_app_config,
    viewer_url,
)
from tests.portal.conftest import Portal
from tests.support.node import missing_peer

pytestmark = pytest.mark.usefixtures("dist")
_INLINE = re.compile(r"<script>(.*?)</script>", re.S)
_PUBLIC_PATH = '__webpack_require__.p = "/";'


@pytest.fixture(scope="module")
def dist() -> Path:
    if not (DEFAULT_DIST / "index.html").is_file():
        missing_peer("OHIF not installed: run `make install` (npm ci in portal/viewer)")
    return DEFAULT_DIST


def _csp(value: str) -> dict[str, list[str]]:
    out = {}
    for part in value.split(";"):
        name, *sources = part.split()
        out[name] = sources
    return out


def _config(text: str) -> dict[str, object]:
    assert text.count("window.config = ") == 1
    body = text.split("window.config = ", 1)[1].rstrip().removesuffix(";")
    return dict(json.loads(body))


def test_page_needs_login_and_carries_its_own_csp(portal: Portal) -> None:
    anon = portal.client()
    r = anon.get("/viewer/viewer?StudyInstanceUIDs=1.2.3", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert anon.get("/viewer", follow_redirects=False).headers["location"] == "/viewer/"

    c = portal.login("ann")
    r = c.get("/viewer/viewer?StudyInstanceUIDs=1.2.3")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    policy = _csp(r.headers["content-security-policy"])
    scripts = _INLINE.findall(html)
    assert len(scripts) == 2
    for body in scripts:
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy["script-src"]
        assert 'window.PUBLIC_URL="/viewer/"' in body
    assert policy["script-src"][0] == "'self'" and "'wasm-unsafe-eval'" in policy["script-src"]
    assert "'unsafe-eval'" not in policy["script-src"]
    assert "'unsafe-inline'" not in policy["script-src"]
    assert policy["frame-ancestors"] == ["'none'"] and policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"] and policy["connect-src"][0] == "'self'"
    assert policy["worker-src"] == ["'self'", "blob:"]
    assert not any("http" in s or s == "*" for sources in policy.values() for s in sources)
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-frame-options"] == "DENY"
    # every path the page names is under /viewer/
    paths = re.findall(r'(?:href|src|content)="(/[^"]*)"', html)
    assert paths and all(p.startswith("/viewer/") for p in paths), paths
    assert 'src="/viewer/app-config.js"' in html


def test_token_parameter_opens_the_page(portal: Portal) -> None:
    token = portal.token("ann")["access_token"]
    anon = portal.client()
    r = anon.get(f"/viewer/viewer?StudyInstanceUIDs=1.2.3&token={token}", follow_redirects=False)
    assert r.status_code == 200
    bad = anon.get("/viewer/viewer?token=not-a-token", follow_redirects=False)
    assert bad.status_code == 303
    refresh = portal.token("ann")["refresh_token"]  # a refresh token is no access token
    assert anon.get(f"/viewer/?token={refresh}", follow_redirects=False).status_code == 303


def test_app_config_points_at_dicomweb_on_this_origin(portal: Portal) -> None:
    r = portal.client().get("/viewer/app-config.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert "'wasm-unsafe-eval'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store"
    assert "http" not in r.text  # no other origin: no CDN, no demo server, no analytics
    config = _config(r.text)
    assert config["routerBasename"] == "/viewer"
    assert config["investigationalUseDialog"] == {"option": "never"}
    assert config["customizationService"] == {"global": {"ohif.tours": []}}
    (source,) = config["dataSources"]  # type: ignore[misc]
    assert config["defaultDataSourceName"] == source["sourceName"]
    assert source["namespace"] == "@ohif/extension-default.dataSourcesModule.dicomweb"
    conf = source["configuration"]
    assert conf["qidoRoot"] == conf["wadoRoot"] == conf["wadoUriRoot"] == "/dicom-web"
    assert conf["qidoSupportsIncludeField"] is True and conf["supportsWildcard"] is True
    assert conf["imageRendering"] == conf["thumbnailRendering"] == "wadors"
    assert conf["bulkDataURI"]["enabled"] is True


def test_assets_load_from_under_viewer(portal: Portal, dist: Path) -> None:
    c = portal.client()  # OHIF's code is public: no login needed for the files themselves
    rewritten = [
        p.name for p in dist.glob("*.js") if _PUBLIC_PATH in p.read_text("utf-8", "replace")
    ]
    assert any(n.startswith("app.bundle.") for n in rewritten) and len(rewritten) > 1
    for name in rewritten:  # the main bundle and every worker bundle
        r = c.get(f"/viewer/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
        assert _PUBLIC_PATH not in r.text and '__webpack_require__.p = "/viewer/";' in r.text
        assert "'wasm-unsafe-eval'" in r.headers["content-security-policy"]  # workers too
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    css = c.get("/viewer/app.bundle.css")
    assert css.status_code == 200 and "url(/viewer/" in css.text and "url(/a" not in css.text
    wasm = next(dist.glob("*.wasm")).name
    r = c.get(f"/viewer/{wasm}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/wasm"
    assert r.content == (dist / wasm).read_bytes()
    assert c.get("/viewer/assets/favicon.ico").status_code == 200


def test_nothing_outside_the_dist_is_served(portal: Portal) -> None:
    c = portal.login("ann")
    for path in (
        "/viewer/../pyproject.toml",
        "/viewer/%2e%2e/%2e%2e/portal/app.py",
        "/viewer/..%2fapp.py",
        "/viewer/serve.json",
        "/viewer/missing.bundle.js",
    ):
        r = c.get(path, follow_redirects=False)
        assert r.status_code == 404, path
        assert "create_app" not in r.text and "[project]" not in r.text
    # Netlify's deploy files are not OHIF's to serve (a path without a suffix is a route)
    assert "/index.html" not in c.get("/viewer/_redirects").text


def test_study_page_opens_the_viewer(portal: Portal) -> None:
    c = portal.login("ann")
    study = portal.series["ann"]
    html = c.get(f"/studies/{study.study_uid}").text
    link = re.search(r'id="open-viewer" class="button" href="([^"]+)"', html)
    assert link, html
    href = link.group(1).replace("&amp;", "&")
    assert href == f"/viewer/viewer?StudyInstanceUIDs={study.study_uid}"
    assert c.get(href).status_code == 200
    series = re.findall(r'class="open-series" href="([^"]+)"', html)
    assert len(series) == 1 and "SeriesInstanceUIDs=" in series[0]


def test_an_unknown_dist_layout_fails_loudly(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<html><script>window.PUBLIC_URL='/'</script></html>")
    with pytest.raises(ViewerDistError, match="PUBLIC_URL"):
        ViewerDist(tmp_path).index()
    with pytest.raises(ViewerDistError, match="make install"):
        ViewerDist(tmp_path / "nowhere").files()


def test_app_config_follows_the_settings() -> None:
    config = _config(render_app_config(ViewerSettings(show_study_list=False, max_web_workers=2)))
    assert config["showStudyList"] is False and config["maxNumberOfWebWorkers"] == 2


def test_viewer_off_serves_and_links_nothing() -> None:
    app = FastAPI()
    install(app, ViewerSettings(enabled=False))
    assert not any(getattr(r, "path", "").startswith("/viewer") for r in app.routes)
    assert viewer_url(ViewerSettings(enabled=False)) == ""
    assert viewer_url(ViewerSettings()) == "/viewer/viewer"
