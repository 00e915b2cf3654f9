"""User identity checks: a table of passcode and JWT cases, tokens signed by OpenSSL."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest

from gateway import crypto, identity, jws
from gateway.admission import AssociationFacts, decide
from gateway.credentials import DeviceCredentials
from gateway.devices import Device
from gateway.errors import ConfigError, InvalidInputError
from gateway.identity import Claim, JwtRequirement, PasscodeRequirement
from gateway.settings import load_settings
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
    private, pub = keypair(tmp_path, "ed25519")
    assert jws.load_issuer_key(pub.read_text()).alg == "EdDSA"
    _, ec_pub = keypair(tmp_path / "ec", "p256")
    assert jws.load_issuer_key(ec_pub.read_text()).alg == "ES256"
    for bad in ("not a key", private.read_text()):  # never a private key
        with pytest.raises(InvalidInputError, match="PEM public key"):
            jws.load_issuer_key(bad)
    x25519 = tmp_path / "x25519.pem"
    x25519.write_bytes(
        subprocess.run(
            "openssl genpkey -algorithm x25519 | openssl pkey -pubout",
            shell=True,
            capture_output=True,
            check=True,
        ).stdout
    )
    with pytest.raises(InvalidInputError, match=r"Ed25519 \(EdDSA\) or EC P-256"):
        jws.load_issuer_key(x25519.read_text())


def _alter_last(part: str) -> str:
    """The same bytes with other trailing bits: base64url's last character carries bits
    that encode nothing when the length is not a multiple of 3."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return part[:-1] + alphabet[alphabet.index(part[-1]) ^ 1]


DEEP = "[" * 1500 + "]" * 1500  # within the 8 KB token limit, deeper than Python's recursion


def _raw(**times: str) -> str:
    """Claims JSON with the time claims written exactly as given (NaN, 1e400, ...)."""
    fields = [f'"{k}": {v}' for k, v in times.items()]
    return '{"iss": "https://idp.example", "aud": "ZTBRIDGE", ' + ", ".join(fields) + "}"


@pytest.mark.parametrize(
    ("case", "build", "problem"),
    [
        # jwt_t.py / scu_jwt.py: each of these raised out of identity.check before.
        ("signature + AAA (length 1 mod 4)", lambda t: t + "AAA", "not base64url"),
        ("payload length 1 mod 4", lambda t: _split(t, 1, lambda p: p + "A"), "not base64url"),
        ("stray bits in the signature", lambda t: _split(t, 2, _alter_last), "canonical"),
        ("non-ASCII digit in the signature", lambda t: t[:-1] + "\u0663", "not ASCII"),
        ("padding inside", lambda t: _split(t, 0, lambda p: p[:4] + "=" + p[4:]), "base64url"),
    ],
)
def test_malformed_encodings_are_refusals_not_exceptions(
    issuer: dict[str, Any], case: str, build: Any, problem: str
) -> None:
    private, req = issuer["ed"]
    token = build(sign(private, GOOD))
    found = identity.check(req, claim(5, token.encode()), NOW)
    assert found is not None and problem in found, (case, found)


def _split(token: str, index: int, change: Any) -> str:
    parts = token.split(".")
    parts[index] = change(parts[index])
    return ".".join(parts)


@pytest.mark.parametrize(
    ("case", "header", "claims", "problem"),
    [
        ("payload nested 1500 deep", None, DEEP, "nested more than 32 deep"),
        ("header nested 1500 deep", DEEP, json.dumps(GOOD), "nested more than 32 deep"),
        ("exp NaN", None, '{"iss":"https://idp.example","aud":"ZTBRIDGE","exp":NaN}', "NaN"),
        ("exp Infinity", None, _raw(exp="Infinity"), "Infinity"),
        ("exp -Infinity", None, _raw(exp="-Infinity"), "Infinity"),
        ("exp 1e400", None, _raw(exp="1e400"), "out of range"),
        ("nbf NaN", None, _raw(exp=str(T + 300), nbf="NaN"), "NaN"),
        ("iat 1e999", None, _raw(exp=str(T + 300), iat="1e999"), "out of range"),
        ("duplicate alg", '{"alg":"none","alg":"EdDSA"}', json.dumps(GOOD), "duplicate"),
        ("duplicate exp", None, _raw(exp=f'{T - 9999}, "exp": {T + 300}'), "duplicate"),
        ("exp a float", None, _raw(exp=f"{T + 300}.5"), None),
    ],
)
def test_claims_json_is_strict(
    issuer: dict[str, Any], case: str, header: str | None, claims: str, problem: str | None
) -> None:
    private, req = issuer["ed"]
    token = sign(private, claims, header=header)
    found = identity.check(req, claim(5, token.encode()), NOW)
    if problem is None:
        assert found is None, (case, found)
    else:
        assert found is not None and problem in found, (case, found)


def test_validity_is_capped_when_asked(issuer: dict[str, Any]) -> None:
    private, req = issuer["ed"]
    year = timedelta(days=366)
    far = sign(private, {**GOOD, "exp": 10**15})  # finite, and practically never expires
    found = identity.check(req, claim(5, far.encode()), NOW, year)
    assert found is not None and "longer than the 366 days" in found
    assert identity.check(req, claim(5, far.encode()), NOW) is None  # no cap given
    month = sign(private, {**GOOD, "exp": T + 30 * 86400})
    assert identity.check(req, claim(5, month.encode()), NOW, year) is None


def test_passcode_is_compared_as_the_bytes_sent() -> None:
    # A lenient decoding turned every invalid byte into U+FFFD, so these all matched.
    req = PasscodeRequirement("CT01", crypto.hash_passcode("passcode-\ufffd"))
    for sent in (b"passcode-\xff", b"passcode-\xfe", b"passcode-\xc3"):
        found = identity.check(req, claim(2, b"CT01", sent), NOW)
        assert found is not None and "wrong passcode" in found, sent
    assert identity.check(req, claim(2, b"CT01", "passcode-\ufffd".encode()), NOW) is None


def test_argon2_runs_whatever_the_username(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong username must cost what a wrong passcode costs: otherwise the time taken tells
    a peer which usernames exist (counted, not timed)."""
    runs: list[bytes] = []
    verify = crypto.verify_passcode

    def counting(encoded: str, passcode: str | bytes) -> bool:
        runs.append(passcode if isinstance(passcode, bytes) else passcode.encode())
        return verify(encoded, passcode)

    monkeypatch.setattr(crypto, "verify_passcode", counting)
    for c in (
        claim(2, b"CT01", b"correct horse battery"),
        claim(2, b"MR01", b"correct horse battery"),
        claim(2, b"\xff\xfe", b"x"),
        claim(2, b"MR01", None),
    ):
        assert identity.check(PASS, c, NOW) is None or c.primary != b"CT01"
    assert len(runs) == 4


def test_deep_json_is_refused_whatever_the_recursion_limit() -> None:
    """Libraries the gateway loads raise the recursion limit (py_ecc: 100000), and json's C
    parser then recurses until the thread's stack overflows: a 512 KB posture body of
    brackets killed the process. The depth is checked before parsing."""
    program = (
        "import sys, threading\n"
        "sys.setrecursionlimit(100000)\n"
        "from gateway.crypto import strict_json\n"
        "from gateway.posture.report import parse_envelope\n"
        "from gateway.errors import InvalidInputError\n"
        "body = b'{\"report\": ' + b'[' * 262000 + b']' * 262000 + b', \"signature\": \"\"}'\n"
        "def run():\n"
        "    try:\n"
        "        parse_envelope(body)\n"
        "    except InvalidInputError as e:\n"
        "        print('refused:', e)\n"
        "t = threading.Thread(target=run)\n"
        "t.start()\n"
        "t.join()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-500:])
    assert "refused: the body is not JSON: nested more than 32 deep" in done.stdout


def _leeway_cases() -> list[tuple[str, int, dict[str, int], str | None]]:
    """For each leeway: leeway-1 accepted, leeway+1 refused, for exp, nbf and iat alike, and
    exactly at the leeway (exp: "on or after" is expired, RFC 7519 4.1.4; nbf/iat: not after)."""
    cases: list[tuple[str, int, dict[str, int], str | None]] = []
    for leeway in (0, 5, 60, 300):
        exp, fut = "expired", "in the future"
        cases += [
            (f"L={leeway} exp L-1 ago", leeway, {"exp": T - leeway + 1}, None),
            (f"L={leeway} exp L ago", leeway, {"exp": T - leeway}, exp),
            (f"L={leeway} exp L+1 ago", leeway, {"exp": T - leeway - 1}, exp),
            (f"L={leeway} nbf L-1 ahead", leeway, {"nbf": T + leeway - 1}, None),
            (f"L={leeway} nbf L ahead", leeway, {"nbf": T + leeway}, None),
            (f"L={leeway} nbf L+1 ahead", leeway, {"nbf": T + leeway + 1}, f"nbf is {fut}"),
            (f"L={leeway} iat L-1 ahead", leeway, {"iat": T + leeway - 1}, None),
            (f"L={leeway} iat L+1 ahead", leeway, {"iat": T + leeway + 1}, f"iat is {fut}"),
        ]
    return cases


@pytest.mark.parametrize(("case", "leeway", "times", "problem"), _leeway_cases())
def test_the_leeway_is_a_setting_with_exact_boundaries(
    issuer: dict[str, Any], case: str, leeway: int, times: dict[str, int], problem: str | None
) -> None:
    """Issue #8 case 8: a token expired up to 59 s ago was accepted by an undocumented
    leeway. It is ``tls.jwt_leeway_seconds`` now, and the clock is the caller's."""
    private, req = issuer["ed"]
    claims = {"iss": "https://idp.example", "aud": "ZTBRIDGE", "exp": T + 3600, **times}
    found = identity.check(req, claim(5, sign(private, claims).encode()), NOW, leeway=leeway)
    if problem is None:
        assert found is None, (case, found)
    else:
        assert found is not None and problem in found, (case, found)


def test_the_leeway_setting_reaches_admission(issuer: dict[str, Any]) -> None:
    """``tls.jwt_leeway_seconds`` is what admission judges by (its default is documented)."""
    settings = load_settings(home=Path("/nonexistent"))
    assert settings.tls.jwt_leeway_seconds == identity.LEEWAY_SECONDS == 60
    private, req = issuer["ed"]
    token = sign(private, {"iss": req.issuer, "aud": req.audience, "exp": T - 30, "sub": "CT01"})
    creds = DeviceCredentials(fingerprints=frozenset({"a" * 64}), identity=req)
    facts = AssociationFacts(
        "CT01",
        "ZTBRIDGE",
        "10.0.0.9",
        "ZTBRIDGE",
        Device(1, "CT01", "CT", (ip_network("10.0.0.0/24"),), True),
        now=NOW,
        transport="tls",
        peer_certificate="a" * 64,
        credentials=creds,
        user_identity=claim(5, token.encode()),
        jwt_leeway_seconds=settings.tls.jwt_leeway_seconds,
    )
    # The posture check fails (no posture given) after identity: only identity is asked here.
    first = decide(facts)
    assert first is None or first.check != "user-identity", first
    refused = decide(replace(facts, jwt_leeway_seconds=10))
    assert refused is not None and refused.check == "user-identity"
    assert "expired" in refused.reason
    with pytest.raises(ConfigError, match="jwt_leeway_seconds"):
        load_settings(home=Path("/nonexistent"), tls={"jwt_leeway_seconds": 3600})
