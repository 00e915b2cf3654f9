"""Device posture for real: ``ztbridge agent`` on this machine, ``ztbridge up`` serving HTTPS,
DCMTK as the modality.

The agent gathers this host's real facts. They are judged by the example policy's ``default``
with one rule switched off, the days since the last package upgrade: that fact depends on
when this machine's image was last upgraded, not on ztbridge, and a test that starts failing
on a calendar date is no test. The same real report is then checked against the unmodified
``default``: the patch age may be the only reason it fails.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from pynetdicom import AE
from sqlalchemy import func, select

from gateway import crypto
from gateway.index.database import Database
from gateway.index.models import audit_events, instances, posture_reports
from gateway.posture.policy import evaluate, load_policies
from gateway.posture.report import Report, build_report, parse_report, sign_report
from tests.support.dicomgen import make_ct_series
from tests.support.gateway_proc import (
    GatewayProcess,
    dcmtk,
    free_port,
    make_gateway,
    running,
    storescu,
)
from tests.support.tls import self_signed

pytestmark = pytest.mark.integration

EXAMPLE_POLICIES = Path(__file__).resolve().parents[2] / "config" / "posture-policy.example.toml"
UNMEETABLE = '\n[unmeetable]\nrequired_processes = ["ztbridge-no-such-process"]\n'


def this_host_policy() -> str:
    """The example's ``[default]`` (with its sub-tables) as ``[this-host]``, patch age off."""
    out, inside = [], False
    for line in EXAMPLE_POLICIES.read_text().splitlines():
        if line.startswith("["):
            inside = line.startswith(("[default]", "[default."))
            if inside:
                line = line.replace("[default", "[this-host", 1)
        if inside:
            if line.startswith("max_days_since_patch"):
                line = "max_days_since_patch = false"
            out.append(line)
    assert "max_days_since_patch = false" in out, "the example [default] lost its patch rule"
    return "\n" + "\n".join(out) + "\n"


def policies_file(tmp_path: Path) -> Path:
    """The example policies plus ``unmeetable`` and ``this-host``."""
    policies = tmp_path / "policies.toml"
    policies.write_text(EXAMPLE_POLICIES.read_text() + UNMEETABLE + this_host_policy())
    return policies


@dataclass
class Portal:
    """Where the running gateway's portal listens and the CA that vouches for it."""

    url: str
    ca: Path


@pytest.fixture
def posture_gateway(tmp_path: Path, dcmtk: None) -> Iterator[tuple[GatewayProcess, Portal]]:
    """A running ztbridge serving the portal over HTTPS, with the example policies plus one
    that no host can meet."""
    cert, key = self_signed(tmp_path)
    port = free_port()
    gw = make_gateway(
        tmp_path,
        ZTBRIDGE_PORTAL__HOST="127.0.0.1",
        ZTBRIDGE_PORTAL__PORT=str(port),
        ZTBRIDGE_PORTAL__TLS_CERT_FILE=str(cert),
        ZTBRIDGE_PORTAL__TLS_KEY_FILE=str(key),
        ZTBRIDGE_POSTURE__POLICY_FILE=str(policies_file(tmp_path)),
        # The open-association watch is off unless a test turns it on: the tests that abort
        # on a failing report must see that path, not a watch tick that got there first.
        ZTBRIDGE_POSTURE__RECHECK_SECONDS="0",
    )
    yield gw, Portal(f"https://127.0.0.1:{port}", cert)
    if gw.proc is not None:
        gw.stop()


def enroll(gw: GatewayProcess, tmp_path: Path, ae: str, policy: str = "this-host") -> Path:
    """Register ``ae`` with a posture key. Under ``this-host`` by default: the example
    ``default`` judges this image's last package upgrade, which a date will outgrow."""
    key = tmp_path / f"{ae}.key"
    out = gw.cli(
        "device", "add", "--ae", ae, "--ip", "127.0.0.1",
        "--posture-policy", policy, "--posture-key-out", str(key),
    ).stdout  # fmt: skip
    assert f"written to {key}" in " ".join(out.split())
    assert key.stat().st_mode & 0o777 == 0o600
    return key


def agent(gw: GatewayProcess, portal: Portal, ae: str, key: Path) -> tuple[int, str]:
    done = gw.cli(
        "agent", "--gateway", portal.url, "--device", ae, "--key", str(key),
        "--ca", str(portal.ca), "--once",
        check=False,
    )  # fmt: skip
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def index(gw: GatewayProcess) -> Database:
    return Database(f"sqlite:///{gw.home / 'index.sqlite3'}")


def audit(gw: GatewayProcess, kind: str) -> list[tuple[str, dict[str, Any]]]:
    db = index(gw)
    try:
        with db.read() as conn:
            rows = conn.execute(
                select(audit_events.c.outcome, audit_events.c.detail)
                .where(audit_events.c.kind == kind)
                .order_by(audit_events.c.seq)
            ).all()
    finally:
        db.close()
    return [(r.outcome, json.loads(r.detail)) for r in rows]


def latest_report(gw: GatewayProcess) -> Report:
    """The last report the gateway stored, parsed."""
    db = index(gw)
    try:
        with db.read() as conn:
            row = conn.execute(
                select(posture_reports.c.report).order_by(posture_reports.c.id.desc())
            ).first()
    finally:
        db.close()
    assert row is not None, "no posture report stored"
    return parse_report(json.loads(row.report))


def count(gw: GatewayProcess, table: Any) -> int:
    db = index(gw)
    try:
        with db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())
    finally:
        db.close()


def flat(text: str) -> str:
    """Rich wraps CLI output at 80 columns; compare on single spaces."""
    return " ".join(text.split())


def echo(gw: GatewayProcess, ae: str) -> tuple[int, str]:
    done = dcmtk("echoscu", "-aet", ae, "-aec", "ZTBRIDGE", "127.0.0.1", str(gw.port))
    return done.returncode, done.stdout + done.stderr


def wait_for(condition: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_agent_on_this_host_admits_then_an_unmeetable_policy_refuses(
    posture_gateway: tuple[GatewayProcess, Portal], tmp_path: Path
) -> None:
    gw, portal = posture_gateway
    key = enroll(gw, tmp_path, "STORESCU", policy="this-host")
    series = make_ct_series(tmp_path / "ct", 2, rows=64, columns=64)
    with running(gw):
        # Before any report: refused, transient ("try later"), and the log says why.
        code, output = echo(gw, "STORESCU")
        assert code != 0 and "Rejected Transient" in output, output
        assert "refused (posture): device 'STORESCU' has sent no valid posture report" in gw.log()

        # The agent, for real, on this host: the example policy accepts it.
        code, said = agent(gw, portal, "STORESCU", key)
        assert code == 0, f"this host fails the example 'default' policy: {said}"
        assert "posture report accepted: PASS (policy 'this-host')" in said
        example_default = load_policies(EXAMPLE_POLICIES).get("default")
        assert example_default is not None
        judged = evaluate(latest_report(gw), example_default, datetime.now(UTC))
        others = [r for r in judged.reasons if "package update" not in r]
        assert not others, f"the unmodified example 'default' refuses this host: {others}"
        pushed = storescu(gw.port, series.files[:1])
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        assert count(gw, instances) == 1
        shown = flat(gw.cli("device", "show", "STORESCU").stdout)
        assert "verdict: PASS" in shown and "admission now: posture passes" in shown
        assert "OS: " in shown and "agent version: 0.1.0" in shown

        # An association that is open when the posture turns bad is aborted.
        scu = AE(ae_title="STORESCU")
        scu.add_requested_context("1.2.840.10008.1.1")
        held = scu.associate("127.0.0.1", gw.port, ae_title="ZTBRIDGE")
        assert held.is_established

        # The administrator moves the device to a policy this host cannot meet.
        moved = gw.cli("device", "posture", "STORESCU", "--policy", "unmeetable").stdout
        assert "posture policy 'unmeetable'" in moved
        code, said = agent(gw, portal, "STORESCU", key)
        assert code == 3, said
        assert "FAIL (policy 'unmeetable')" in said
        assert "required process not running: ztbridge-no-such-process" in said
        wait_for(lambda: held.is_aborted, "the open association to be aborted")

        # The next association is refused, permanently, with the reason in log and audit.
        pushed = storescu(gw.port, series.files[1:])
        output = pushed.stdout + pushed.stderr
        assert pushed.returncode != 0 and "Rejected Permanent" in output, output
        assert count(gw, instances) == 1
        shown = flat(gw.cli("device", "show", "STORESCU").stdout)
        assert "verdict: FAIL" in shown
        assert "- required process not running: ztbridge-no-such-process" in shown
    log = gw.log()
    assert (
        "association from STORESCU@127.0.0.1 refused (posture): device 'STORESCU' fails"
        " posture policy 'unmeetable': required process not running: ztbridge-no-such-process"
    ) in log
    assert "aborted (posture): device 'STORESCU' fails policy 'unmeetable'" in log
    refused = [d for _o, d in audit(gw, "association.refused") if d["check"] == "posture"]
    assert "fails posture policy 'unmeetable'" in refused[-1]["reason"]
    assert "has sent no valid posture report" in refused[0]["reason"]
    assert [o for o, _d in audit(gw, "posture.accepted")] == ["ok", "refused"]
    assert audit(gw, "association.aborted")[0][1]["check"] == "posture"
    assert "device.posture" in {k for k in _kinds(gw)}
    assert "audit chain intact" in gw.cli("audit", "verify").stdout


def test_open_associations_are_judged_again_while_they_last(
    posture_gateway: tuple[GatewayProcess, Portal], tmp_path: Path
) -> None:
    """Admission judged posture once: a report going stale, or a policy changed from the CLI
    (another process, so no failure is published), left open associations sending. The
    gateway now re-judges open associations every posture.recheck_seconds (1 s here)."""
    gw, portal = posture_gateway
    policies = Path(gw.env["ZTBRIDGE_POSTURE__POLICY_FILE"])
    brief = this_host_policy().replace("[this-host", "[brief")
    assert "max_report_age_seconds = 300" in brief
    brief = brief.replace("max_report_age_seconds = 300", "max_report_age_seconds = 10")
    policies.write_text(policies.read_text() + brief)
    gw.env["ZTBRIDGE_POSTURE__RECHECK_SECONDS"] = "1"
    key = enroll(gw, tmp_path, "STORESCU", policy="brief")
    scu = AE(ae_title="STORESCU")
    scu.add_requested_context("1.2.840.10008.1.1")
    with running(gw):
        code, said = agent(gw, portal, "STORESCU", key)
        assert code == 0, said
        held = scu.associate("127.0.0.1", gw.port, ae_title="ZTBRIDGE")
        assert held.is_established
        # 1. No more reports: 10 s later the report is stale, and the association goes.
        wait_for(lambda: held.is_aborted, "the association of a stale device to be aborted", 40)
        assert "aborted (posture): device 'STORESCU' posture report is stale" in gw.log()
        # 2. A fresh report, a new association, then the administrator changes the policy.
        # Under a policy whose reports last 300 s, so that staleness cannot get there first
        # on a slow machine.
        gw.cli("device", "posture", "STORESCU", "--policy", "this-host")
        code, said = agent(gw, portal, "STORESCU", key)
        assert code == 0, said
        held = scu.associate("127.0.0.1", gw.port, ae_title="ZTBRIDGE")
        assert held.is_established
        gw.cli("device", "posture", "STORESCU", "--policy", "unmeetable")
        wait_for(lambda: held.is_aborted, "the association to be aborted after a policy change")
    log = gw.log()
    assert "aborted (posture): device 'STORESCU' fails posture policy 'unmeetable'" in log
    aborted = [d["reason"] for _o, d in audit(gw, "association.aborted")]
    assert len(aborted) == 2 and "stale" in aborted[0] and "unmeetable" in aborted[1]


def _kinds(gw: GatewayProcess) -> list[str]:
    db = index(gw)
    try:
        with db.read() as conn:
            return [r.kind for r in conn.execute(select(audit_events.c.kind))]
    finally:
        db.close()


def test_forged_and_replayed_reports_are_refused_and_never_current(
    posture_gateway: tuple[GatewayProcess, Portal], tmp_path: Path
) -> None:
    gw, portal = posture_gateway
    key_file = enroll(gw, tmp_path, "CT01")
    enroll(gw, tmp_path, "MR01")
    key = crypto.load_signing_key_pem(key_file.read_bytes())
    with running(gw), httpx.Client(base_url=portal.url, verify=_ssl(portal.ca)) as http:
        code, said = agent(gw, portal, "CT01", key_file)
        assert code == 0, said
        now = _server_now(http)
        facts = {"os_name": "debian", "processes": []}

        # Signed with a key that is not the device's.
        forged = sign_report(
            build_report("CT01", now, "a" * 32, "0.1.0", facts, {}),
            crypto.generate_signing_key(),
        )
        r = http.post("/api/v1/devices/CT01/posture", json=forged)
        assert r.status_code == 403
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"] == "/problems/bad-signature"

        # Genuinely signed, then replayed byte for byte.
        genuine = sign_report(build_report("CT01", now, "b" * 32, "0.1.0", facts, {}), key)
        assert http.post("/api/v1/devices/CT01/posture", json=genuine).status_code == 200
        r = http.post("/api/v1/devices/CT01/posture", json=genuine)
        assert r.status_code == 409 and r.json()["type"] == "/problems/replayed-report"
        assert count(gw, posture_reports) == 2  # the agent's report and the genuine one

        # A device whose only report was forged: refused, and the refusal says why.
        forged_mr = sign_report(
            build_report("MR01", now, "c" * 32, "0.1.0", facts, {}),
            crypto.generate_signing_key(),
        )
        assert http.post("/api/v1/devices/MR01/posture", json=forged_mr).status_code == 403
        code, output = echo(gw, "MR01")
        assert code != 0 and "Rejected Transient" in output, output
        shown = flat(gw.cli("device", "show", "CT01").stdout)
        assert "last refused report:" in shown and "replayed-report" in shown
        shown_mr = flat(gw.cli("device", "show", "MR01").stdout)
        assert "last report: none received yet" in shown_mr
        assert "bad-signature" not in shown_mr  # anyone can post that: nothing is written
    assert (
        "refused (posture): device 'MR01' has sent no valid posture report yet; its latest"
        " report was refused (unauthenticated post, bad-signature"
    ) in gw.log()
    # Only what the device's own key signed is audited one by one.
    rejected = [d["problem"] for _o, d in audit(gw, "posture.rejected")]
    assert rejected == ["replayed-report"]


def test_unauthenticated_posts_leave_the_index_alone(
    posture_gateway: tuple[GatewayProcess, Portal], tmp_path: Path
) -> None:
    """flood_posture.py: every unsigned post used to write (and fsync) an audit row and the
    device's last refusal, slowing every C-STORE that shares the index; a newline in the URL
    path or a JSON key forged log lines. Now such posts are counted in memory only."""
    gw, portal = posture_gateway
    # One window for the whole flood, however slow the machine: the summary a window's end
    # writes is not what this test is about (tests/unit cover the tally).
    gw.env["ZTBRIDGE_POSTURE__REFUSAL_SUMMARY_SECONDS"] = "3600"
    key_file = enroll(gw, tmp_path, "CT01", policy="this-host")
    gw.cli("device", "add", "--posture-policy", "none", "--ae", "STORESCU", "--ip", "127.0.0.1")
    series = make_ct_series(tmp_path / "ct", 20, rows=64, columns=64)
    forged_line = "2026-12-01 12:00:00,000 INFO    ztbridge.dicom: association from EVIL accepted"
    with running(gw):
        code, said = agent(gw, portal, "CT01", key_file)
        assert code == 0, said
        rows_before = len(_kinds(gw))
        stop, sent = threading.Event(), [0]

        def flood() -> None:
            with httpx.Client(base_url=portal.url, verify=_ssl(portal.ca)) as c:
                while not stop.is_set():
                    c.post("/api/v1/devices/CT01/posture", json={"report": {}, "signature": "AA"})
                    c.post("/api/v1/devices/NOBODY/posture", content=b"{")
                    sent[0] += 2

        flooders = [threading.Thread(target=flood) for _ in range(3)]
        for t in flooders:
            t.start()
        try:
            wait_for(lambda: sent[0] >= 200, "the flood to start")
            started = time.monotonic()
            pushed = storescu(gw.port, series.files)
            took = time.monotonic() - started
            wait_for(lambda: sent[0] >= 600, "600 unauthenticated posts")
        finally:
            stop.set()
            for t in flooders:
                t.join()
        with httpx.Client(base_url=portal.url, verify=_ssl(portal.ca)) as http:
            r = http.post(f"/api/v1/devices/{quote('X' + chr(10) + forged_line, safe='')}/posture")
            assert r.status_code in (400, 404)
            r = http.post(
                "/api/v1/devices/CT01/posture",
                content=('{"report": {"x\\n' + forged_line + '": 1}, "signature": "AA"}').encode(),
            )
            assert r.status_code == 403
        assert echo(gw, "CT01")[0] == 0  # the flood locked nobody out
        rows = _kinds(gw)[rows_before:]
    print(f"{sent[0]} unauthenticated posts; a 20-instance push took {took:.2f} s meanwhile")
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert [k for k in rows if k.startswith("posture.")] == []  # not one row per post
    log = gw.log()
    assert not any(line.startswith(forged_line) for line in log.splitlines()), "forged line"
    assert log.count("refused (bad-signature)") <= 3  # the first of each kind, once a window


def _ssl(ca: Path) -> Any:
    import ssl

    return ssl.create_default_context(cafile=str(ca))


def _server_now(http: httpx.Client) -> Any:
    from gateway.posture.report import parse_time

    return parse_time(http.get("/api/v1/time").json()["now"])


def test_agent_network_errors_are_clear(
    posture_gateway: tuple[GatewayProcess, Portal], tmp_path: Path
) -> None:
    gw, portal = posture_gateway
    key = enroll(gw, tmp_path, "CT01")
    code, said = agent(gw, portal, "CT01", key)  # gateway not started
    assert code == 1 and "cannot reach the gateway at https://127.0.0.1:" in said
    with running(gw):
        done = gw.cli(
            "agent", "--gateway", portal.url, "--device", "CT01", "--key", str(key), "--once",
            check=False,
        )  # fmt: skip
        said = flat(done.stderr)
        assert done.returncode == 1 and "pass the CA that issued it with --ca FILE" in said
        code, said = agent(gw, portal, "NOSUCH", key)
        assert code == 2 and "the gateway refused the report (404): Unknown device" in said


def test_plain_http_only_when_allowed(tmp_path: Path, dcmtk: None) -> None:
    port = free_port()
    plain = make_gateway(
        tmp_path,
        ZTBRIDGE_PORTAL__ALLOW_PLAIN_HTTP="true",
        ZTBRIDGE_PORTAL__HOST="127.0.0.1",
        ZTBRIDGE_PORTAL__PORT=str(port),
        ZTBRIDGE_POSTURE__POLICY_FILE=str(policies_file(tmp_path)),
    )
    key = enroll(plain, tmp_path, "CT01")
    with running(plain):
        done = plain.cli(
            "agent", "--gateway", f"http://127.0.0.1:{port}", "--device", "CT01",
            "--key", str(key), "--once", check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "is plain HTTP" in flat(done.stderr)
    assert "PORTAL SERVES PLAIN HTTP" in plain.log()
