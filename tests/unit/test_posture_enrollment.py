"""Enrollment keys, the agent's key and report, and the portal's settings: clear refusals."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import crypto
from gateway.errors import ConfigError, InvalidInputError, NotFoundError
from gateway.pki import PkiPaths
from gateway.posture.agent import Agent, GatewayClient, load_key
from gateway.posture.report import parse_report, signature_valid
from gateway.service import Gateway, open_gateway
from gateway.settings import PortalSettings, Settings, load_settings
from portal.server import portal_mode, tls_context
from tests.support.tls import self_signed


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    g = open_gateway(load_settings(home=tmp_path / "home", custodian_passphrase="unit-test"))
    yield g
    g.close()


def test_enrollment_writes_an_owner_only_key_and_keeps_only_the_public_half(
    gw: Gateway, tmp_path: Path
) -> None:
    key_file = tmp_path / "ct.key"
    device, fp = gw.posture.add_device("CT01", ["10.0.0.1"], "", "t", "default", key_file)
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = load_key(key_file)
    enrollment = gw.posture.enrollment(device.id)
    assert enrollment is not None and enrollment.key_fingerprint == fp
    assert gw.posture.policies_by_device() == {device.id: "default"}
    pem = key_file.read_bytes()
    with gw.db.read() as conn:
        rows = conn.exec_driver_sql("SELECT * FROM device_posture")
        dump = "\n".join(str(tuple(r)) for r in rows)
    assert pem.decode() not in dump and key.private.hex() not in dump


def test_enrollment_refusals_register_nothing(gw: Gateway, tmp_path: Path) -> None:
    existing = tmp_path / "taken.key"
    existing.write_text("precious")
    cases = [
        (("default", existing), "refusing to overwrite"),
        (("default", tmp_path / "no" / "dir.key"), "does not exist"),
        (("default", None), "give --posture-key-out FILE"),
        (("none", tmp_path / "x.key"), "makes no sense with --posture-policy none"),
        (("mystery", tmp_path / "y.key"), "no posture policy 'mystery'"),
    ]
    for (policy, key_out), message in cases:
        with pytest.raises((InvalidInputError, ConfigError), match=message):
            gw.posture.add_device("CT01", ["10.0.0.1"], "", "t", policy, key_out)
    assert existing.read_text() == "precious"
    assert gw.devices.list() == []
    assert not (tmp_path / "x.key").exists() and not (tmp_path / "y.key").exists()


def test_a_failed_registration_leaves_no_key_file(gw: Gateway, tmp_path: Path) -> None:
    gw.posture.add_device("CT01", ["10.0.0.1"], "", "t", "none", None)
    key_file = tmp_path / "dup.key"
    with pytest.raises(InvalidInputError, match="already exists"):
        gw.posture.add_device("CT01", ["10.0.0.2"], "", "t", "default", key_file)
    assert not key_file.exists()


def test_reconfigure(gw: Gateway, tmp_path: Path) -> None:
    legacy, _ = gw.posture.add_device("LEGACY", ["10.0.0.1"], "", "t", "none", None)
    with pytest.raises(InvalidInputError, match="give --posture-key-out"):
        gw.posture.reconfigure("LEGACY", "t", "default", None)
    first = tmp_path / "1.key"
    _, policy, fp1 = gw.posture.reconfigure("LEGACY", "t", "default", first)
    assert policy == "default" and fp1 is not None
    _, _, fp2 = gw.posture.reconfigure(str(legacy.id), "t", None, tmp_path / "2.key")
    assert fp2 not in (None, fp1)
    _, policy, fp = gw.posture.reconfigure("LEGACY", "t", "none", None)
    assert (policy, fp) == ("none", None)
    with pytest.raises(InvalidInputError, match="refusing to overwrite"):
        gw.posture.reconfigure("LEGACY", "t", None, first)
    with pytest.raises(NotFoundError, match="'GHOST'"):
        gw.posture.reconfigure("GHOST", "t", "none", None)


def test_removing_a_device_removes_its_posture(gw: Gateway, tmp_path: Path) -> None:
    device, _ = gw.posture.add_device("CT01", ["10.0.0.1"], "", "t", "default", tmp_path / "k")
    gw.devices.remove("CT01", "t")
    assert gw.posture.enrollment(device.id) is None


def test_load_key_messages(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist .*copy it to this host"):
        load_key(tmp_path / "absent.key")
    (tmp_path / "junk.key").write_text("junk")
    with pytest.raises(ConfigError, match="is not usable: not an unencrypted PEM"):
        load_key(tmp_path / "junk.key")
    with pytest.raises(ConfigError, match="cannot read posture key"):
        load_key(tmp_path)  # a folder: EISDIR


def test_agent_builds_a_verifiable_report_even_when_the_gateway_is_down() -> None:
    """The clock offset is then unknown, with the reason; everything else is gathered."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    key = crypto.generate_signing_key()
    client = GatewayClient(f"http://127.0.0.1:{port}", None, timeout=5)
    try:
        agent = Agent("CT01", key, client)
        first, second = agent.build(), agent.build()
    finally:
        client.close()
    assert signature_valid(first["report"], first["signature"], key.public)
    report = parse_report(first["report"])
    assert report.device == "CT01" and report.facts.clock_offset_ms is None
    assert "cannot reach the gateway" in report.unknown["clock_offset_ms"]
    assert report.facts.processes
    assert first["report"]["nonce"] != second["report"]["nonce"]


@pytest.mark.parametrize("url", ["pacs:8443", "ftp://pacs", "https://"])
def test_agent_refuses_a_gateway_that_is_not_a_url(url: str) -> None:
    with pytest.raises(ConfigError, match="give a URL like https://"):
        GatewayClient(url, None)


def test_agent_ca_file_must_load(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("nope")
    with pytest.raises(ConfigError, match=r"--ca .*cannot load CA certificates"):
        GatewayClient("https://pacs:8443", tmp_path / "ca.pem")


def test_portal_modes_and_certificates(tmp_path: Path) -> None:
    def settings(**portal: Any) -> Settings:
        return load_settings(home=tmp_path / "home", portal=PortalSettings(**portal))

    assert portal_mode(settings()) is None
    assert portal_mode(settings(allow_plain_http=True)) == "http"
    cert, key = self_signed(tmp_path)
    other_cert, _ = self_signed(tmp_path, "other")
    good = settings(tls_cert_file=cert, tls_key_file=key)
    assert portal_mode(good) == "https"
    assert tls_context(good).minimum_version.name == "TLSv1_2"
    with pytest.raises(ConfigError, match=r"set both portal.tls_cert_file and"):
        portal_mode(settings(tls_cert_file=cert))
    with pytest.raises(ConfigError, match="does not exist"):
        tls_context(settings(tls_cert_file=tmp_path / "none.crt", tls_key_file=key))
    with pytest.raises(ConfigError, match="are not a PEM certificate and its key"):
        tls_context(settings(tls_cert_file=other_cert, tls_key_file=key))


def test_portal_serves_the_gateway_server_certificate_after_ca_init(tmp_path: Path) -> None:
    """Without portal certificate settings, ``ca init``'s server certificate is used."""
    s = load_settings(home=tmp_path / "home")
    paths = PkiPaths(s.home)
    for f in (paths.ca_key, paths.ca_cert, paths.server_key, paths.server_cert):
        f.parent.mkdir(parents=True, exist_ok=True)
    cert, key = self_signed(tmp_path)
    paths.server_cert.write_bytes(cert.read_bytes())
    paths.server_key.write_bytes(key.read_bytes())
    assert portal_mode(s) is None, "half a PKI (no CA files) must not count"
    paths.ca_key.write_text("x")
    paths.ca_cert.write_text("x")
    assert portal_mode(s) == "https"
    assert tls_context(s).minimum_version.name == "TLSv1_2"


def test_plain_http_is_refused_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZTBRIDGE_PORTAL__ALLOW_PLAIN_HTTP", "true")
    assert load_settings().portal.allow_plain_http
    monkeypatch.setenv("ZTBRIDGE_ENVIRONMENT", "production")
    with pytest.raises(ConfigError, match=r"portal.allow_plain_http.*development only"):
        load_settings()
