"""The posture endpoint in-process: the real app on a real gateway with a pinned clock.

Each refusal is an RFC 9457 problem document and leaves the device's current posture as it
was; accepted reports are stored with their verdict and audited.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from gateway import crypto
from gateway.clock import FixedClock
from gateway.index.models import audit_events, posture_reports
from gateway.posture.report import build_report, sign_report
from gateway.posture.service import PostureFailure
from gateway.service import Gateway, open_gateway
from gateway.settings import load_settings
from portal.app import create_app

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICIES = """
[default]
[strict]
required_processes = ["edr-agent"]
max_report_age_seconds = 60
"""
FACTS: dict[str, Any] = {
    "os_name": "debian",
    "os_version": "12",
    "kernel": "6.1.0",
    "boot_time": int(NOW.timestamp()) - 86400,
    "last_patch_time": int(NOW.timestamp()) - 86400,
    "firewall_enabled": None,
    "disk_encrypted": False,
    "processes": ["systemd", "sshd"],
    "listening_ports": [{"proto": "tcp", "address": "0.0.0.0", "port": 22}],
    "logged_in_users": [],
    "clock_offset_ms": 3,
}


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    policy_file = tmp_path / "policies.toml"
    policy_file.write_text(POLICIES)
    s = load_settings(
        home=tmp_path / "home",
        custodian_passphrase="unit-test",
        posture={"policy_file": policy_file},
    )
    g = open_gateway(s, clock=FixedClock(NOW))
    yield g
    g.close()


@pytest.fixture
def client(gw: Gateway) -> Iterator[TestClient]:
    with TestClient(create_app(gw), client=("10.0.0.9", 50000)) as c:
        yield c


def enroll(gw: Gateway, tmp_path: Path, ae: str = "CT01", policy: str = "default") -> Any:
    key_file = tmp_path / f"{ae}.key"
    gw.posture.add_device(ae, ["10.0.0.0/24"], "", "test", policy, key_file)
    return crypto.load_signing_key_pem(key_file.read_bytes())


def signed(
    key: Any,
    device: str = "CT01",
    issued: datetime = NOW,
    nonce: str = "0" * 32,
    **facts: Any,
) -> dict[str, Any]:
    report = build_report(device, issued, nonce, "0.1.0", {**FACTS, **facts}, {})
    return sign_report(report, key)


def post(client: TestClient, body: Any, device: str = "CT01") -> Any:
    return client.post(f"/api/v1/devices/{device}/posture", json=body)


def stored(gw: Gateway) -> int:
    with gw.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(posture_reports)).scalar_one())


def audit(gw: Gateway, kind: str) -> list[tuple[str, dict[str, Any]]]:
    with gw.db.read() as conn:
        rows = conn.execute(
            select(audit_events.c.outcome, audit_events.c.detail)
            .where(audit_events.c.kind == kind)
            .order_by(audit_events.c.seq)
        ).all()
    return [(r.outcome, json.loads(r.detail)) for r in rows]


def assert_problem(response: Any, status: int, slug: str, detail: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"/problems/{slug}"
    assert body["status"] == status
    assert body["title"]
    assert detail in body["detail"], body["detail"]
    assert body["instance"].startswith("/api/v1/devices/")


def test_a_passing_report_becomes_the_current_posture(
    gw: Gateway, client: TestClient, tmp_path: Path
) -> None:
    key = enroll(gw, tmp_path)
    device = gw.devices.by_ae("CT01")
    assert device is not None
    assert gw.posture.status(device.id).issued_at is None  # type: ignore[union-attr]
    r = post(client, signed(key, issued=NOW - timedelta(seconds=2)))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["verdict"] == "pass" and body["policy"] == "default" and body["reasons"] == []
    status = gw.posture.status(device.id)
    assert status is not None and status.passed
    assert status.issued_at == NOW - timedelta(seconds=2)
    assert audit(gw, "posture.accepted")[0][0] == "ok"
    latest = gw.posture.latest(device.id)
    assert latest is not None and latest.report["facts"]["processes"] == ["systemd", "sshd"]


def test_a_failing_report_is_stored_with_reasons_and_announced(
    gw: Gateway, client: TestClient, tmp_path: Path
) -> None:
    key = enroll(gw, tmp_path, policy="strict")
    seen: list[PostureFailure] = []
    gw.posture.on_failure(seen.append)
    r = post(client, signed(key))
    assert r.status_code == 200
    assert r.json()["verdict"] == "fail"
    assert r.json()["reasons"] == ["required process not running: edr-agent"]
    assert [(f.ae_title, f.policy, f.reasons) for f in seen] == [
        ("CT01", "strict", ("required process not running: edr-agent",))
    ]
    outcome, detail = audit(gw, "posture.accepted")[0]
    assert outcome == "refused" and detail["verdict"] == "fail"
    r = post(client, signed(key, nonce="1" * 32, processes=["edr-agent"]))
    assert r.json()["verdict"] == "pass"
    assert len(seen) == 1


def test_a_report_signed_with_another_key_is_refused_and_not_stored(
    gw: Gateway, client: TestClient, tmp_path: Path
) -> None:
    key = enroll(gw, tmp_path)
    assert post(client, signed(key, issued=NOW - timedelta(seconds=30))).status_code == 200
    forged = signed(crypto.generate_signing_key(), nonce="f" * 32)
    assert_problem(post(client, forged), 403, "bad-signature", "does not verify with device")
    assert stored(gw) == 1
    device = gw.devices.by_ae("CT01")
    assert device is not None
    status = gw.posture.status(device.id)
    assert status is not None and status.issued_at == NOW - timedelta(seconds=30)
    assert status.last_refused is not None and status.last_refused.startswith("bad-signature")
    assert audit(gw, "posture.rejected")[-1][1]["problem"] == "bad-signature"


def test_a_tampered_report_is_refused(gw: Gateway, client: TestClient, tmp_path: Path) -> None:
    key = enroll(gw, tmp_path)
    body = signed(key, processes=["telnetd"])
    body["report"]["facts"]["processes"] = ["systemd"]  # hide the forbidden process
    assert_problem(post(client, body), 403, "bad-signature", "does not verify")
    assert stored(gw) == 0


def test_a_replayed_report_is_refused(gw: Gateway, client: TestClient, tmp_path: Path) -> None:
    key = enroll(gw, tmp_path)
    body = signed(key, issued=NOW - timedelta(seconds=10))
    assert post(client, body).status_code == 200
    assert_problem(post(client, body), 409, "replayed-report", "replayed")
    assert stored(gw) == 1
    assert audit(gw, "posture.rejected")[-1][1]["problem"] == "replayed-report"


@pytest.mark.parametrize(
    ("issued", "status", "slug", "detail"),
    [
        (NOW - timedelta(seconds=301), 422, "stale-report", "issued 301 s ago"),
        (NOW + timedelta(seconds=61), 422, "report-from-the-future", "61 s ahead"),
    ],
)
def test_freshness(
    gw: Gateway,
    client: TestClient,
    tmp_path: Path,
    issued: datetime,
    status: int,
    slug: str,
    detail: str,
) -> None:
    key = enroll(gw, tmp_path)
    assert_problem(post(client, signed(key, issued=issued)), status, slug, detail)
    assert stored(gw) == 0
    assert post(client, signed(key, issued=NOW - timedelta(seconds=300))).status_code == 200
    assert post(client, signed(key, nonce="2" * 32, issued=NOW + timedelta(seconds=60))).is_success


def test_who_may_post(gw: Gateway, client: TestClient, tmp_path: Path) -> None:
    key = enroll(gw, tmp_path)
    gw.posture.add_device("LEGACY", ["10.0.0.0/24"], "", "test", "none", None)
    assert_problem(post(client, signed(key), "NOBODY"), 404, "unknown-device", "'NOBODY'")
    assert_problem(
        post(client, signed(key, device="LEGACY"), "LEGACY"),
        409,
        "posture-not-enrolled",
        "policy is 'none'",
    )
    # CT01's own, valid signature, but the report names another device.
    assert_problem(
        post(client, signed(key, device="CT02")), 422, "wrong-device", "for device 'CT02'"
    )
    assert stored(gw) == 0


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{not json", "not JSON"),
        (b'{"report": {}, "signature": ""}', "does not verify"),
        (b'{"report": {"a": 1.5}, "signature": "AAAA"}', "float values are not allowed"),
        (b'["report"]', 'must be {"report"'),
    ],
)
def test_malformed_bodies(
    gw: Gateway, client: TestClient, tmp_path: Path, body: bytes, detail: str
) -> None:
    enroll(gw, tmp_path)
    r = client.post(
        "/api/v1/devices/CT01/posture", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code in (400, 403)
    assert r.headers["content-type"] == "application/problem+json"
    assert detail in r.json()["detail"]


def test_a_well_signed_report_with_bad_fields_names_the_field(
    gw: Gateway, client: TestClient, tmp_path: Path
) -> None:
    key = enroll(gw, tmp_path)
    assert_problem(
        post(client, signed(key, boot_time="yesterday")), 400, "malformed-report", "facts.boot_time"
    )


def test_oversized_bodies_are_refused_before_reading_them_whole(
    gw: Gateway, client: TestClient, tmp_path: Path
) -> None:
    enroll(gw, tmp_path)
    big = b"x" * (513 * 1024)
    r = client.post("/api/v1/devices/CT01/posture", content=big)
    assert_problem(r, 413, "report-too-large", "512 KiB")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(600):
            yield b"x" * 1024

    assert_problem(
        client.post("/api/v1/devices/CT01/posture", content=chunks()),
        413,
        "report-too-large",
        "512 KiB",
    )


def test_old_nonces_are_pruned_but_the_current_report_stays(
    gw: Gateway, client: TestClient, tmp_path: Path
) -> None:
    key = enroll(gw, tmp_path)
    clock = gw.clock
    assert isinstance(clock, FixedClock)
    for i in range(3):
        assert post(client, signed(key, issued=clock.now(), nonce=f"{i}" * 32)).is_success
        clock.advance(100)
    assert stored(gw) == 3
    clock.advance(400)  # retention: longest max age (300 s) + future skew (60 s)
    assert post(client, signed(key, issued=clock.now(), nonce="9" * 32)).is_success
    assert stored(gw) == 1


def test_an_undefined_policy_is_a_server_problem_without_details(
    gw: Gateway, client: TestClient, tmp_path: Path
) -> None:
    key = enroll(gw, tmp_path, policy="strict")
    gw.posture.policies = type(gw.posture.policies)(
        {"default": gw.posture.policies.policies["default"]}, "test"
    )
    r = post(client, signed(key))
    assert r.status_code == 500
    assert r.json()["type"] == "/problems/gateway-misconfigured"
    assert "strict" not in r.text


def test_time_and_problem_types_and_plain_http_errors(client: TestClient) -> None:
    t = client.get("/api/v1/time").json()
    assert t == {"now": "2026-12-01T12:00:00.000000Z", "unix_ms": int(NOW.timestamp() * 1000)}
    p = client.get("/problems/bad-signature").json()
    assert p["status"] == 403 and "registered posture key" in p["description"]
    missing = client.get("/nowhere")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["type"] == "about:blank" and missing.json()["title"] == "Not Found"
    wrong = client.get("/api/v1/devices/CT01/posture")
    assert wrong.status_code == 405 and wrong.json()["title"] == "Method Not Allowed"
    assert client.get("/problems/nothing").json()["type"] == "/problems/not-found"
