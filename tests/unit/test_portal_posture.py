"""The posture endpoint in-process: the real app on a real gateway with a pinned clock.

Each refusal is an RFC 9457 problem document and leaves the device's current posture as it
was; accepted reports are stored with their verdict and audited.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from gateway import crypto
from gateway.admission import AssociationFacts, check_posture
from gateway.clock import FixedClock
from gateway.index.models import audit_events, posture_reports
from gateway.logsafe import SafeFormatter
from gateway.posture.policy import Policy, PolicySet
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
    # Anyone can post this: it explains a refusal (from memory) but is never written.
    assert status.last_refused is not None
    assert status.last_refused.startswith("unauthenticated post, bad-signature")
    assert audit(gw, "posture.rejected") == []
    enrolled = gw.posture.enrollment(device.id)
    assert enrolled is not None and enrolled.last_refused is None


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
        # Not encodable canonically, so no agent signed it: a bad signature, not a parser's
        # opinion of unauthenticated input.
        (b'{"report": {"a": 1.5}, "signature": "AAAA"}', "does not verify"),
        (b'{"report": ' + b"[" * 5000 + b"]" * 5000 + b', "signature": "x"}', "not JSON"),
        (b'{"report": {"a": NaN}, "signature": "AAAA"}', "not JSON"),
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


def admitted(gw: Gateway, ae: str = "CT01") -> str | None:
    """Admission's posture check for the device now: None, or the refusal's reason."""
    device = gw.devices.by_ae(ae)
    assert device is not None
    facts = AssociationFacts(
        ae, "ZTBRIDGE", "10.0.0.5", "ZTBRIDGE", device,
        posture=gw.posture.status(device.id), now=gw.clock.now(),
    )  # fmt: skip
    refusal = check_posture(facts)
    return None if refusal is None else refusal.reason


def test_a_policy_change_judges_the_current_report_again(
    gw: Gateway, client: TestClient, tmp_path: Path
) -> None:
    """posture_t.py: a verdict under the old policy used to stand under the new one."""
    key = enroll(gw, tmp_path)
    assert post(client, signed(key)).json()["verdict"] == "pass"
    assert admitted(gw) is None
    gw.posture.reconfigure("CT01", "test", "strict", None)  # requires an EDR agent
    reason = admitted(gw)
    assert reason is not None and "fails posture policy 'strict'" in reason
    assert "required process not running: edr-agent" in reason
    latest = gw.posture.latest(gw.devices.by_ae("CT01").id)  # type: ignore[union-attr]
    assert latest is not None and latest.policy == "strict" and not latest.passed
    assert audit(gw, "device.posture")[-1][1]["rejudged"] == "fail"
    gw.posture.reconfigure("CT01", "test", "default", None)
    assert admitted(gw) is None


def test_a_new_key_drops_what_the_old_key_signed(
    gw: Gateway, client: TestClient, tmp_path: Path
) -> None:
    """posture_t.py: a report signed with the replaced key used to keep the device admitted;
    the README promises the old key "stops verifying at once"."""
    old = enroll(gw, tmp_path)
    assert post(client, signed(old)).json()["verdict"] == "pass"
    gw.posture.reconfigure("CT01", "test", None, tmp_path / "new.key")
    reason = admitted(gw)
    assert reason is not None and "has sent no valid posture report yet" in reason
    assert stored(gw) == 0
    assert_problem(post(client, signed(old, nonce="1" * 32)), 403, "bad-signature", "does not")
    new = crypto.load_signing_key_pem((tmp_path / "new.key").read_bytes())
    assert post(client, signed(new, nonce="2" * 32)).json()["verdict"] == "pass"
    assert admitted(gw) is None


def test_unauthenticated_posts_write_nothing(
    gw: Gateway, client: TestClient, tmp_path: Path
) -> None:
    """posture_t.py / flood_posture.py: 600 unsigned posts made 600 fsynced audit rows and
    overwrote the device's last refusal. Now they are counted in memory; the first of each
    kind is logged, and one summary per minute is logged and audited."""
    key = enroll(gw, tmp_path)
    assert post(client, signed(key, issued=NOW - timedelta(seconds=5))).is_success
    before = audit_count(gw)
    for _ in range(300):
        assert post(client, {"report": {}, "signature": "AAAA"}).status_code == 403
    for i in range(300):
        assert post(client, {"report": {}, "signature": "AAAA"}, f"X{i}").status_code == 404
    assert client.post("/api/v1/devices/CT01/posture", content=b"{").status_code == 400
    assert audit_count(gw) == before  # not one row
    device = gw.devices.by_ae("CT01")
    assert device is not None
    enrolled = gw.posture.enrollment(device.id)
    assert enrolled is not None and enrolled.last_refused is None
    clock = gw.clock
    assert isinstance(clock, FixedClock)
    clock.advance(61)
    gw.posture.flush_refusals()
    summary = audit(gw, "posture.rejected.summary")
    assert len(summary) == 1
    kinds = {(k["device"], k["problem"]): k["count"] for k in summary[0][1]["kinds"]}
    assert kinds == {("CT01", "bad-signature"): 299, ("(unregistered)", "unknown-device"): 299}
    assert summary[0][1]["total"] == 598
    gw.posture.flush_refusals()
    assert len(audit(gw, "posture.rejected.summary")) == 1  # nothing more to say


def test_verified_refusals_are_written_once_a_minute(
    gw: Gateway, client: TestClient, tmp_path: Path
) -> None:
    """A captured report can be replayed by anyone: its refusals, too, are bounded."""
    key = enroll(gw, tmp_path)
    body = signed(key, issued=NOW - timedelta(seconds=10))
    assert post(client, body).is_success
    for _ in range(50):
        assert_problem(post(client, body), 409, "replayed-report", "replayed")
    rejected = audit(gw, "posture.rejected")
    assert [d["problem"] for _, d in rejected] == ["replayed-report"]
    device = gw.devices.by_ae("CT01")
    assert device is not None
    enrolled = gw.posture.enrollment(device.id)
    assert enrolled is not None and (enrolled.last_refused or "").startswith("replayed-report")
    gw.clock.advance(61)  # type: ignore[attr-defined]
    assert_problem(post(client, body), 409, "replayed-report", "replayed")
    assert len(audit(gw, "posture.rejected")) == 2  # a new window: written again
    (summary,) = audit(gw, "posture.rejected.summary")
    assert summary[1]["kinds"][0]["count"] == 49


def test_a_more_lenient_policy_does_not_make_pruned_reports_replayable(
    gw: Gateway, client: TestClient, tmp_path: Path
) -> None:
    """Report rows are pruned to today's policies (300 s here); if the longest max age grows
    after a restart, a report whose row is gone would be fresh again. Nonces are kept for
    the longest age any policy may have (7 days)."""
    key = enroll(gw, tmp_path)
    clock = gw.clock
    assert isinstance(clock, FixedClock)
    captured = signed(key, issued=clock.now(), nonce="a" * 32)
    assert post(client, captured).is_success
    clock.advance(400)
    assert post(client, signed(key, issued=clock.now(), nonce="b" * 32)).is_success
    assert stored(gw) == 1  # the captured report's row was pruned
    lenient = Policy(max_report_age_seconds=3600)
    gw.posture.policies = PolicySet({"default": lenient, "strict": lenient}, "test")
    assert_problem(post(client, captured), 409, "replayed-report", "replayed")


def test_log_lines_cannot_be_forged(
    gw: Gateway, client: TestClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    enroll(gw, tmp_path)
    forged = "X\n2026-12-01 12:00:00,000 INFO    ztbridge.dicom: association from CT01 accepted"
    caplog.set_level("WARNING", "ztbridge.posture")
    r = client.post(f"/api/v1/devices/{quote(forged)}/posture", json={"report": {}})
    assert r.status_code == 404
    messages = [rec.getMessage() for rec in caplog.records]
    assert messages and all("\n" not in m for m in messages), messages
    formatted = SafeFormatter("%(message)s").format(
        logging.LogRecord("t", logging.WARNING, __file__, 1, "from %s", (forged,), None)
    )
    assert "\n" not in formatted and "\\n2026-12-01" in formatted


def audit_count(gw: Gateway) -> int:
    with gw.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(audit_events)).scalar_one())


def test_a_report_dated_ahead_ages_from_its_arrival(
    gw: Gateway, client: TestClient, tmp_path: Path
) -> None:
    """posture_t.py: a report dated 59 s ahead (accepted: within max_future_seconds) stayed
    fresh 59 s longer than the policy allows."""
    key = enroll(gw, tmp_path)
    assert post(client, signed(key, issued=NOW + timedelta(seconds=59))).is_success
    clock = gw.clock
    assert isinstance(clock, FixedClock)
    clock.advance(300)
    assert admitted(gw) is None
    clock.advance(1)
    reason = admitted(gw)
    assert reason is not None and "stale" in reason
