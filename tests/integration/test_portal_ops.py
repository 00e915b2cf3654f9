"""Operations through the real server (``ztbridge up`` as a process, storescu as the
modality): the portal's self-signed certificate made at first start (fingerprint on the
console, in ``ztbridge status`` and on the wire, the same after a restart), and /metrics
counting a C-STORE, a refused instance, a refused association and a failed login, served
only to the scrape token."""

from __future__ import annotations

import hashlib
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydicom.uid import generate_uid

from tests.support.dicomgen import make_ct_series
from tests.support.gateway_proc import GatewayProcess, make_gateway, storescu
from tests.support.node import missing_peer

pytestmark = pytest.mark.integration

TOKEN = "scrape-token-for-the-tests-0123456789"
CHEAP_ENV = {
    "ZTBRIDGE_ACCOUNTS__ARGON2_MEMORY_KIB": "8",
    "ZTBRIDGE_ACCOUNTS__ARGON2_TIME_COST": "1",
    "ZTBRIDGE_ACCOUNTS__ARGON2_PARALLELISM": "1",
}


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One gateway for the module: no certificate configured, no CA, no plain HTTP."""
    if shutil.which("storescu") is None:
        missing_peer("storescu not installed: install Debian's dcmtk")
    tmp = tmp_path_factory.mktemp("ops")
    gw = make_gateway(tmp, ZTBRIDGE_PORTAL__METRICS_TOKEN=TOKEN, **CHEAP_ENV)
    gw.cli("device", "add", "--posture-policy", "none", "--ae", "STORESCU", "--ip", "127.0.0.1")
    gw.start()
    try:
        yield gw
    finally:
        if gw.proc is not None:
            gw.stop()


def _base(gw: GatewayProcess) -> str:
    return f"https://127.0.0.1:{gw.env['ZTBRIDGE_PORTAL__PORT']}"


def _client(gw: GatewayProcess) -> httpx.Client:
    """Trusting exactly the certificate the gateway made (name checked too: 127.0.0.1)."""
    ctx = ssl.create_default_context(cafile=str(gw.home / "tls" / "portal.pem"))
    return httpx.Client(base_url=_base(gw), verify=ctx, timeout=30)


def _scrape(gw: GatewayProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with _client(gw) as c:
        r = c.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def _value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_an_unauthorised_scrape_is_refused(ops: GatewayProcess) -> None:
    with _client(ops) as c:
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token-0123456789"},
            {"Authorization": TOKEN},
        ):
            r = c.get("/metrics", headers=headers)
            assert r.status_code == 403
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["type"] == "/problems/scrape-refused"
            assert "ztbridge_" not in r.text


def test_metrics_count_stores_refusals_and_failed_logins(
    ops: GatewayProcess, tmp_path: Path
) -> None:
    before = _scrape(ops)
    series = make_ct_series(tmp_path, 2, rows=32, columns=32)
    assert storescu(ops.port, series.files[:1]).returncode == 0
    # The same study under another Patient ID: refused (0xA900), nothing stored.
    other = pydicom.dcmread(series.files[1])
    other.PatientID = "SOMEONE-ELSE"
    other.SOPInstanceUID = generate_uid()
    other.file_meta.MediaStorageSOPInstanceUID = other.SOPInstanceUID
    wrong = tmp_path / "wrong-patient.dcm"
    other.save_as(wrong, enforce_file_format=True)
    refused = storescu(ops.port, [wrong])
    assert refused.returncode != 0  # storescu exits non-zero on a failure status
    storescu(ops.port, series.files[:1], "NOBODY")  # an unregistered AE title: refused
    with _client(ops) as c:
        r = c.post("/api/token", json={"username": "nobody", "password": "x" * 12, "totp": "1"})
        assert r.status_code in (400, 401)
        r = c.post(
            "/api/token", json={"username": "nobody", "password": "x" * 12, "totp": "123456"}
        )
        assert r.status_code == 401
    after = _scrape(ops)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("ztbridge_instances_stored_total", outcome="stored") == 1
    assert delta("ztbridge_instances_refused_total", reason="dataset-does-not-match-sop-class") == 1
    assert delta("ztbridge_associations_total", result="accepted") == 2
    assert delta("ztbridge_associations_total", result="refused") == 1
    assert (
        sum(
            v - _value(before, n, **dict(labels))
            for (n, labels), v in after.items()
            if n == "ztbridge_associations_refused_total"
        )
        == 1
    )
    assert delta("ztbridge_login_failures_total", reason="unknown-user") >= 1
    assert ("ztbridge_anchor_backlog", (("what", "batches"),)) in after
    assert ("ztbridge_anchor_lag_seconds", ()) in after


def test_self_signed_certificate_made_once_and_shown_everywhere(ops: GatewayProcess) -> None:
    log = ops.log()
    assert "self-signed, made now" in log
    der = ssl.PEM_cert_to_DER_cert(
        ssl.get_server_certificate(("127.0.0.1", int(ops.env["ZTBRIDGE_PORTAL__PORT"])))
    )
    digest = hashlib.sha256(der).hexdigest().upper()
    fp = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
    assert fp in log  # the console shows what the wire serves
    ops.env["COLUMNS"] = "400"  # one table row per line
    assert fp in ops.cli("status").stdout
    assert (ops.home / "keys" / "portal-key.pem").stat().st_mode & 0o777 == 0o600
    with _client(ops) as c:
        assert c.get("/health").json() == {"status": "ok"}
    with pytest.raises(httpx.HTTPError):  # no plain HTTP without the development flag
        httpx.get(f"http://127.0.0.1:{ops.env['ZTBRIDGE_PORTAL__PORT']}/health", timeout=5)
    ops.stop()
    ops.start()
    again = ops.log()[len(log) :]
    assert fp in again and "self-signed, made now" not in again  # kept in the home
