"""User identity checks: a table of passcode and JWT cases, tokens signed by OpenSSL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway import crypto, identity
from gateway.identity import Claim, JwtRequirement, PasscodeRequirement
from tests.support.jwt_openssl import keypair, sign

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())
PASS = PasscodeRequirement("CT01", crypto.hash_passcode("correct horse battery"))


def claim(kind: int, primary: bytes, secondary: bytes | None = None) -> Claim:
    return Claim(kind, primary, secondary, wants_response=False)


@pytest.mark.parametrize(
    ("case", "c", "problem"),
    [
        ("right passcode", claim(2, b"CT01", b"correct horse battery"), None),
        ("wrong passcode", claim(2, b"CT01", b"correct horse"), "wrong passcode"),
        ("empty passcode", claim(2, b"CT01", b""), "wrong passcode"),
        ("other user", claim(2, b"MR01", b"correct horse battery"), "unknown username"),
        ("username only", claim(1, b"CT01"), "device requires username+passcode"),
        ("a JWT instead", claim(5, b"a.b.c"), "device requires username+passcode"),
        ("nothing sent", None, "no user identity sent"),
        ("non-UTF-8 user", claim(2, b"\xff\xfe", b"x"), "not UTF-8"),
    ],
)
def test_passcode(case: str, c: Claim | None, problem: str | None) -> None:
    found = identity.check(PASS, c, NOW)
    if problem is None:
        assert found is None, case
    else:
        assert found is not None and problem in found, (case, found)


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("jwt")
    ed_priv, ed_pub = keypair(folder, "ed25519")
    ec_priv, ec_pub = keypair(folder, "p256")
    other_priv, _ = keypair(folder / "other", "ed25519")
    return {
        "ed": (ed_priv, JwtRequirement("https://idp.example", "ZTBRIDGE", ed_pub.read_text())),
        "ec": (ec_priv, JwtRequirement("https://idp.example", "ZTBRIDGE", ec_pub.read_text())),
        "other": other_priv,
    }


GOOD = {"iss": "https://idp.example", "aud": "ZTBRIDGE", "exp": T + 300, "iat": T - 10}


@pytest.mark.parametrize(
    ("case", "key", "claims", "header", "problem"),
    [
        ("EdDSA token", "ed", GOOD, {}, None),
        ("ES256 token", "ec", GOOD, {}, None),
        ("audience list", "ed", {**GOOD, "aud": ["X", "ZTBRIDGE"]}, {}, None),
        ("expired", "ed", {**GOOD, "exp": T - 61}, {}, "expired"),
        ("within leeway", "ed", {**GOOD, "exp": T - 30}, {}, None),
        ("no expiry", "ed", {k: v for k, v in GOOD.items() if k != "exp"}, {}, "no expiry"),
        ("boolean expiry", "ed", {**GOOD, "exp": True}, {}, "no expiry"),
        ("not yet valid", "ed", {**GOOD, "nbf": T + 600}, {}, "nbf is in the future"),
        ("issued in future", "ed", {**GOOD, "iat": T + 600}, {}, "iat is in the future"),
        ("other issuer", "ed", {**GOOD, "iss": "https://evil"}, {}, "issuer"),
        ("other audience", "ed", {**GOOD, "aud": "OTHERPACS"}, {}, "audience"),
        ("alg none", "ed", GOOD, {"alg": "none"}, "algorithm"),
        ("alg confusion HS256", "ed", GOOD, {"alg": "HS256"}, "algorithm"),
        ("ES256 header on EdDSA key", "ed", GOOD, {"alg": "ES256"}, "algorithm"),
        ("crit header", "ed", GOOD, {"crit": ["exp"]}, "critical"),
        ("signed by another key", "other", GOOD, {}, "does not verify"),
    ],
)
def test_jwt(
    issuer: dict[str, Any],
    case: str,
    key: str,
    claims: dict[str, Any],
    header: dict[str, Any],
    problem: str | None,
) -> None:
    req = issuer["ed"][1] if key == "other" else issuer[key][1]
    private = issuer["other"] if key == "other" else issuer[key][0]
    alg = "ES256" if key == "ec" else "EdDSA"
    token = sign(private, claims, alg, header)
    found = identity.check(req, claim(5, token.encode()), NOW)
    if problem is None:
        assert found is None, (case, found)
    else:
        assert found is not None and problem in found, (case, found)


def test_jwt_malformed_and_tampered(issuer: dict[str, Any]) -> None:
    private, req = issuer["ed"]
    token = sign(private, GOOD)
    head, body, sig = token.split(".")
    forged_body = sign(private, {**GOOD, "aud": "X"}).split(".")[1]
    cases = {
        "payload swapped": f"{head}.{forged_body}.{sig}",
        "two parts": f"{head}.{body}",
        "padding": f"{head}.{body}.{sig}==",
        "garbage": "not a token",
        "huge": "a" * 9000,
    }
    for case, bad in cases.items():
        assert identity.check(req, claim(5, bad.encode()), NOW) is not None, case
    assert identity.check(req, claim(2, b"user", b"pass"), NOW) is not None
    assert identity.check(req, None, NOW) is not None


def test_subject_is_checked_when_registered(issuer: dict[str, Any]) -> None:
    private, req = issuer["ed"]
    pinned = JwtRequirement(req.issuer, req.audience, req.public_key_pem, subject="ct-room-1")
    assert (
        identity.check(pinned, claim(5, sign(private, {**GOOD, "sub": "ct-room-1"}).encode()), NOW)
        is None
    )
    found = identity.check(pinned, claim(5, sign(private, {**GOOD, "sub": "mr"}).encode()), NOW)
    assert found is not None and "subject" in found


def test_issuer_key_kinds(tmp_path: Path) -> None:
    _, pub = keypair(tmp_path, "ed25519")
    assert crypto.load_jwt_key(pub.read_text()).alg == "EdDSA"
    with pytest.raises(Exception, match="PEM public key"):
        crypto.load_jwt_key("not a key")
