"""Every portal response carries the security headers, and every error is problem+json.

The routes are taken from ``app.routes``, so a route added later is covered without
touching this file. Errors are produced for real: an unknown path, a wrong method, a
validation failure and an exception inside a route (whose text must not leak).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from gateway.clock import FixedClock
from gateway.service import Gateway, open_gateway
from gateway.settings import load_settings
from portal import viewer
from portal.app import create_app
from portal.headers import CONTENT_SECURITY_POLICY

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SECRET = "internal detail: /var/lib/ztbridge/secret.key"
EXPECTED = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("headers") / "home"
    s = load_settings(home=home, custodian_passphrase="unit-test", ledger={"enabled": False})
    g = open_gateway(s, clock=FixedClock(NOW))
    yield g
    g.close()


@pytest.fixture(scope="module")
def app(gw: Gateway) -> FastAPI:
    """The real app, plus three routes that fail the ways routes will."""
    app = create_app(gw)

    @app.get("/test/number/{n}")
    def number(n: int) -> dict[str, int]:
        return {"n": n}

    @app.get("/test/boom")
    def boom() -> None:
        raise RuntimeError(SECRET)

    @app.get("/test/own-policy")
    def own_policy() -> PlainTextResponse:
        return PlainTextResponse(
            "ok",
            headers={
                "Content-Security-Policy": "default-src 'self'; worker-src blob:",
                "Cache-Control": "max-age=3600",
                "X-Content-Type-Options": "sniff-away",
            },
        )

    return app


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url="https://portal.test", raise_server_exceptions=False) as c:
        yield c


def _assert_hardened(response: Any, https: bool = True, csp: str | None = None) -> None:
    """``csp``: a route's own policy (the viewer's), else the portal's."""
    for name, value in EXPECTED.items():
        if name == "content-security-policy" and csp is not None:
            value = csp
        assert response.headers.get(name) == value, (response.request.url, name, response.headers)
    hsts = response.headers.get("strict-transport-security")
    if https:
        assert hsts == "max-age=31536000", response.request.url
    else:
        assert hsts is None, response.request.url


def _requests(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) for every route the app has, path parameters filled in."""
    out = []
    for route in iter_route_contexts(app.routes):  # included routers' routes, flattened
        assert route.path is not None, route  # a mount or websocket needs a case here
        for method in sorted(route.methods or {"GET"}):
            out.append((method, re.sub(r"\{[^}]+\}", "x", route.path)))
    return out


def test_every_route_carries_the_headers(app: FastAPI, client: TestClient) -> None:
    requests = _requests(app)
    paths = {path for _, path in requests}
    assert {"/api/v1/time", "/problems/x", "/api/v1/devices/x/posture"} <= paths
    for method, path in requests:
        response = client.request(method, path, content=b"{}")
        if response.url.path.startswith(f"{viewer.PREFIX}/") and response.status_code == 200:
            _assert_hardened(response, csp=app.state.viewer_dist.csp())  # OHIF's own policy
        elif path != "/test/own-policy":
            _assert_hardened(response)
        if response.status_code >= 400:
            assert response.headers["content-type"] == "application/problem+json", (path, response)


def test_plain_http_gets_no_hsts(app: FastAPI) -> None:
    with TestClient(app, base_url="http://portal.test") as c:
        _assert_hardened(c.get("/api/v1/time"), https=False)
        _assert_hardened(c.get("/nowhere"), https=False)


@pytest.mark.parametrize(
    ("case", "method", "path", "status"),
    [
        ("unknown path", "GET", "/no/such/thing", 404),
        ("unknown problem type", "GET", "/problems/no-such", 404),
        ("wrong method", "DELETE", "/api/v1/time", 405),
        ("validation (FastAPI's 422: our invalid-input)", "GET", "/test/number/abc", 400),
        ("exception in a route", "GET", "/test/boom", 500),
    ],
)
def test_every_error_is_a_problem_document_without_internals(
    client: TestClient, case: str, method: str, path: str, status: int
) -> None:
    response = client.request(method, path)
    assert response.status_code == status, (case, response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json", case
    body = response.json()
    assert body["status"] == status and body["title"] and body["type"], (case, body)
    text = response.text
    for leak in ("Traceback", "RuntimeError", SECRET, 'File "', "site-packages"):
        assert leak not in text, (case, leak, text)
    _assert_hardened(response)


def test_a_route_may_set_its_own_policy_and_caching_but_not_the_rest(client: TestClient) -> None:
    response = client.get("/test/own-policy")
    assert response.headers["content-security-policy"] == "default-src 'self'; worker-src blob:"
    assert response.headers["cache-control"] == "max-age=3600"
    assert response.headers.get_list("x-content-type-options") == ["nosniff"]
    assert response.headers["x-frame-options"] == "DENY"


def test_the_hsts_age_is_a_setting(tmp_path: Path) -> None:
    s = load_settings(
        home=tmp_path / "home",
        custodian_passphrase="unit-test",
        ledger={"enabled": False},
        portal={"hsts_max_age_seconds": 0},
    )
    g = open_gateway(s, clock=FixedClock(NOW))
    try:
        with TestClient(create_app(g), base_url="https://portal.test") as c:
            response = c.get("/api/v1/time")
        assert "strict-transport-security" not in response.headers
        assert response.headers["x-content-type-options"] == "nosniff"
    finally:
        g.close()
