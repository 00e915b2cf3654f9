"""CORS only under /dicom-web and only for listed origins (portal/dicomweb/cors.py), and the
setting's validation (portal.cors_origins)."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from gateway.errors import ConfigError
from gateway.settings import load_settings
from portal.dicomweb.cors import DicomwebCors

VIEWER = "https://viewer.example"


def _client(origins: list[str]) -> TestClient:
    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/dicom-web/studies", hello), Route("/api/studies", hello)])
    return TestClient(DicomwebCors(app, origins, "/dicom-web"))


def test_listed_origin_gets_cors_on_dicomweb_only() -> None:
    c = _client([VIEWER])
    r = c.get("/dicom-web/studies", headers={"Origin": VIEWER})
    assert r.headers["access-control-allow-origin"] == VIEWER
    assert "warning" in r.headers["access-control-expose-headers"].lower()
    pre = c.options(
        "/dicom-web/studies",
        headers={
            "Origin": VIEWER,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == VIEWER
    assert "access-control-allow-credentials" not in pre.headers
    api = c.get("/api/studies", headers={"Origin": VIEWER})
    assert "access-control-allow-origin" not in api.headers
    other = c.get("/dicom-web/studies", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_off_by_default() -> None:
    r = _client([]).get("/dicom-web/studies", headers={"Origin": VIEWER})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_setting_takes_origins_only(tmp_path: Path) -> None:
    ok = load_settings(home=tmp_path, portal={"cors_origins": [VIEWER, "http://10.1.2.3:3000"]})
    assert ok.portal.cors_origins == [VIEWER, "http://10.1.2.3:3000"]
    assert load_settings(home=tmp_path).portal.cors_origins == []
    for bad in ("*", "https://viewer.example/path", "viewer.example"):
        with pytest.raises(ConfigError, match="cors_origins"):
            load_settings(home=tmp_path, portal={"cors_origins": [bad]})
