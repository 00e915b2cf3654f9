"""Posture reports: canonical bytes, Ed25519 signatures (checked against OpenSSL), parsing."""

from __future__ import annotations

import base64
import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gateway import crypto
from gateway.errors import CryptoError, InvalidInputError
from gateway.posture.report import (
    SIGNING_CONTEXT,
    canonical_json,
    parse_envelope,
    parse_report,
    sign_report,
    signature_valid,
    signed_message,
)
from tests.support.node import missing_peer

# A fixed key (seed 00 01 .. 1f) so the signature below is a known answer: Ed25519 is
# deterministic, so any correct implementation produces exactly these bytes.
SEED = bytes(range(32))
PUBLIC_HEX = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
REPORT: dict[str, Any] = {
    "format": "ztbridge-posture/1",
    "device": "CT01",
    "issued_at": "2026-12-01T12:00:00.000000Z",
    "nonce": "00112233445566778899aabbccddeeff",
    "agent_version": "0.1.0",
    "facts": {
        "os_name": "debian",
        "processes": ["sshd", "Ä"],
        "clock_offset_ms": -12,
        "firewall_enabled": None,
    },
    "unknown": {"firewall_enabled": "nft not installed"},
}
CANONICAL = (
    '{"agent_version":"0.1.0","device":"CT01","facts":{"clock_offset_ms":-12,'
    '"firewall_enabled":null,"os_name":"debian","processes":["sshd","Ä"]},'
    '"format":"ztbridge-posture/1","issued_at":"2026-12-01T12:00:00.000000Z",'
    '"nonce":"00112233445566778899aabbccddeeff","unknown":{"firewall_enabled":"nft not installed"}}'
)
SIGNATURE_B64 = (
    "aX4qYMGGjgz9G3zCyOprV/nhkI8Hv+T5nOachquTA/+i1IokafiMRKg7GoeVNaPkns83fhk1lsIQYR7m+8MdAA=="
)


def fixed_key() -> crypto.SigningKey:
    pem = (
        b"-----BEGIN PRIVATE KEY-----\n"
        + base64.b64encode(bytes.fromhex("302e020100300506032b657004220420") + SEED)
        + b"\n-----END PRIVATE KEY-----\n"
    )
    return crypto.load_signing_key_pem(pem)


def test_known_answer() -> None:
    key = fixed_key()
    assert key.public.hex() == PUBLIC_HEX
    assert canonical_json(REPORT) == CANONICAL.encode()
    assert sign_report(REPORT, key) == {"report": REPORT, "signature": SIGNATURE_B64}


def test_openssl_produces_the_same_signature(tmp_path: Path) -> None:
    """An independent implementation signs our canonical message to the same bytes."""
    if shutil.which("openssl") is None:
        missing_peer("openssl not installed: install Debian's openssl")
    key = fixed_key()
    (tmp_path / "key.pem").write_bytes(crypto.signing_key_pem(key))
    (tmp_path / "msg").write_bytes(signed_message(REPORT))
    done = subprocess.run(
        ["openssl", "pkeyutl", "-sign", "-rawin", "-inkey", "key.pem", "-in", "msg"],
        cwd=tmp_path,
        capture_output=True,
        check=True,
    )
    assert base64.b64encode(done.stdout).decode() == SIGNATURE_B64


def test_key_order_and_whitespace_do_not_matter() -> None:
    shuffled = dict(reversed(list(REPORT.items())))
    assert canonical_json(shuffled) == canonical_json(REPORT)
    assert signature_valid(shuffled, SIGNATURE_B64, bytes.fromhex(PUBLIC_HEX))


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda r: r.update(device="CT02"), "another device"),
        (lambda r: r["facts"].update(processes=["sshd"]), "a process hidden"),
        (lambda r: r["facts"].update(clock_offset_ms=-13), "a number changed"),
        (lambda r: r.update(nonce="ff" * 16), "another nonce"),
        (lambda r: r["unknown"].clear(), "an unknown reason dropped"),
        (lambda r: r["facts"].update(extra=True), "a fact added"),
    ],
)
def test_any_change_breaks_the_signature(change: Any, why: str) -> None:
    changed = copy.deepcopy(REPORT)
    change(changed)
    assert not signature_valid(changed, SIGNATURE_B64, bytes.fromhex(PUBLIC_HEX)), why


def test_other_key_and_garbage_signatures_do_not_verify() -> None:
    other = crypto.generate_signing_key()
    assert not signature_valid(REPORT, SIGNATURE_B64, other.public)
    assert not signature_valid(REPORT, sign_report(REPORT, other)["signature"], fixed_key().public)
    for junk in ("", "!!!", base64.b64encode(b"x" * 64).decode(), SIGNATURE_B64[:-4]):
        assert not signature_valid(REPORT, junk, fixed_key().public)
    assert not signature_valid(REPORT, SIGNATURE_B64, b"short")


def test_signature_is_bound_to_the_context() -> None:
    key = fixed_key()
    bare = crypto.sign_ed25519(key.private, canonical_json(REPORT))
    assert not crypto.verify_ed25519(key.public, signed_message(REPORT), bare)
    assert signed_message(REPORT).startswith(SIGNING_CONTEXT)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": 1.5}, "float values are not allowed"),
        ({"a": 2**53}, "outside"),
        ({"a": {1: 2}}, "keys must be strings"),
        ({"a": "\ud800"}, "lone surrogate"),
        ({"a": (1, 2)}, "tuple values are not allowed"),
    ],
)
def test_unencodable_values_are_refused(value: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        canonical_json(value)


def test_canonical_details() -> None:
    assert canonical_json({"b": [1, True, None], "a": 'x\n"y"'}) == (
        b'{"a":"x\\n\\"y\\"","b":[1,true,null]}'
    )
    assert canonical_json({"é": "日本"}) == '{"é":"日本"}'.encode()


def test_parse_report_accepts_a_good_report_and_names_bad_fields() -> None:
    report = parse_report(REPORT)
    assert report.facts.processes == ["sshd", "Ä"]
    assert report.facts.kernel is None
    assert report.issued.isoformat() == "2026-12-01T12:00:00+00:00"
    for change, field in [
        (lambda r: r.update(issued_at="2026-12-01 12:00"), "issued_at"),
        (lambda r: r.update(issued_at="2026-12-01T12:00:00"), "issued_at"),
        (lambda r: r.update(nonce="abc"), "nonce"),
        (lambda r: r.update(format="other/2"), "format"),
        (lambda r: r["facts"].update(boot_time="yesterday"), "facts.boot_time"),
        (lambda r: r["facts"].update(firewall_enabled=1), "facts.firewall_enabled"),
        (lambda r: r["facts"].update(listening_ports=[{"proto": "sctp"}]), "listening_ports"),
        (lambda r: r.update(surprise=1), "surprise"),
    ]:
        bad = copy.deepcopy(REPORT)
        change(bad)
        with pytest.raises(InvalidInputError, match=field):
            parse_report(bad)


def test_unknown_facts_from_a_newer_agent_are_ignored() -> None:
    newer = copy.deepcopy(REPORT)
    newer["facts"]["tpm_present"] = True
    assert parse_report(newer).facts.os_name == "debian"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"report": {}}',
        b'{"report": [], "signature": "x"}',
        b'{"report": {}, "signature": 5}',
        b'{"report": {}, "signature": "x", "more": 1}',
    ],
)
def test_envelope_shape(body: bytes) -> None:
    with pytest.raises(InvalidInputError):
        parse_envelope(body)


def test_pem_round_trip_and_errors() -> None:
    key = crypto.generate_signing_key()
    assert crypto.load_signing_key_pem(crypto.signing_key_pem(key)) == key
    with pytest.raises(CryptoError, match="not an unencrypted PEM"):
        crypto.load_signing_key_pem(b"hello")
    if shutil.which("openssl") is None:
        missing_peer("openssl not installed: install Debian's openssl")
    other = subprocess.run(
        ["openssl", "genpkey", "-algorithm", "X25519"], capture_output=True, check=True
    ).stdout
    with pytest.raises(CryptoError, match="not an Ed25519 key"):
        crypto.load_signing_key_pem(other)
