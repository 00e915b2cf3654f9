"""The TLS, user identity and limit checks of admission: a table of cases."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from ipaddress import ip_network
from pathlib import Path

import pytest

from gateway import crypto
from gateway.admission import AssociationFacts, RejectReason, decide
from gateway.credentials import DeviceCredentials
from gateway.devices import Device
from gateway.identity import Claim, JwtRequirement, PasscodeRequirement
from gateway.posture.status import PostureStatus
from tests.support.jwt_openssl import keypair, sign

CT = Device(1, "CT01", "CT", (ip_network("10.0.0.0/24"),), True)
NOW = datetime(2026, 6, 1, tzinfo=UTC)
MINE, THEIRS = "a" * 64, "b" * 64
PASS = PasscodeRequirement("CT01", crypto.hash_passcode("s3cret-passcode"))
TLS_ONLY = DeviceCredentials(require_tls=True, fingerprints=frozenset({MINE}))
WITH_ID = DeviceCredentials(fingerprints=frozenset({MINE}), identity=PASS)
GOOD_ID = Claim(2, b"CT01", b"s3cret-passcode", wants_response=True)
BAD_ID = Claim(2, b"CT01", b"guess", wants_response=False)

# A healthy posture, so these cases isolate the TLS, identity and limit checks.
HEALTHY = PostureStatus("default", timedelta(minutes=5), NOW - timedelta(seconds=30), True)
BASE = AssociationFacts(
    "CT01",
    "ZTBRIDGE",
    "10.0.0.9",
    "ZTBRIDGE",
    CT,
    posture=HEALTHY,
    now=NOW,
    max_associations=8,
    max_per_device=2,
)


def f(**changes: object) -> AssociationFacts:
    return replace(BASE, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("case", "facts", "check", "reject"),
    [
        ("plain TCP, TLS optional", f(), None, None),
        (
            "TLS with own certificate",
            f(transport="tls", peer_certificate=MINE, credentials=TLS_ONLY),
            None,
            None,
        ),
        (
            "TLS required, plain TCP",
            f(credentials=TLS_ONLY),
            "tls-required",
            RejectReason.NO_REASON_GIVEN,
        ),
        (
            "another device's certificate",
            f(
                transport="tls",
                peer_certificate=THEIRS,
                certificate_owner="MR01",
                credentials=TLS_ONLY,
            ),
            "tls-certificate",
            RejectReason.CALLING_AE_NOT_RECOGNIZED,
        ),
        (
            "revoked or unknown certificate",
            f(transport="tls", peer_certificate=THEIRS, credentials=TLS_ONLY),
            "tls-certificate",
            RejectReason.CALLING_AE_NOT_RECOGNIZED,
        ),
        (
            "TLS, device has no certificate",
            f(transport="tls", peer_certificate=MINE),
            "tls-certificate",
            RejectReason.CALLING_AE_NOT_RECOGNIZED,
        ),
        (
            "TLS without a certificate",
            f(transport="tls", credentials=TLS_ONLY),
            "tls-certificate",
            RejectReason.CALLING_AE_NOT_RECOGNIZED,
        ),
        (
            "identity proven",
            f(transport="tls", peer_certificate=MINE, credentials=WITH_ID, user_identity=GOOD_ID),
            None,
            None,
        ),
        (
            "identity missing",
            f(transport="tls", peer_certificate=MINE, credentials=WITH_ID),
            "user-identity",
            RejectReason.AUTHENTICATION_FAILED,
        ),
        (
            "identity wrong",
            f(transport="tls", peer_certificate=MINE, credentials=WITH_ID, user_identity=BAD_ID),
            "user-identity",
            RejectReason.AUTHENTICATION_FAILED,
        ),
        (
            "no clock: fail closed",
            f(
                transport="tls",
                peer_certificate=MINE,
                credentials=WITH_ID,
                user_identity=GOOD_ID,
                now=None,
            ),
            "user-identity",
            RejectReason.AUTHENTICATION_FAILED,
        ),
        (
            "right passcode over plain TCP",  # it crossed the network in clear
            f(credentials=WITH_ID, user_identity=GOOD_ID),
            "user-identity",
            RejectReason.AUTHENTICATION_FAILED,
        ),
        ("identity sent but not required", f(user_identity=BAD_ID), None, None),
        (
            "device at its limit",
            f(open_for_device=2, open_associations=2),
            "association-limit",
            RejectReason.LOCAL_LIMIT_EXCEEDED,
        ),
        (
            "gateway at its limit",
            f(open_for_device=0, open_associations=8),
            "association-limit",
            RejectReason.LOCAL_LIMIT_EXCEEDED,
        ),
        ("below both limits", f(open_for_device=1, open_associations=7), None, None),
        # Order: the cheap address check refuses before any certificate or passcode work.
        (
            "outside range beats identity",
            f(peer_ip="10.9.9.9", credentials=WITH_ID),
            "source-address",
            RejectReason.NO_REASON_GIVEN,
        ),
        (
            "TLS required beats identity",
            f(credentials=replace(WITH_ID, require_tls=True)),
            "tls-required",
            RejectReason.NO_REASON_GIVEN,
        ),
        (
            "unknown device: no TLS checks",
            f(device=None, calling_ae="EVIL", transport="tls", peer_certificate=THEIRS),
            "registered-device",
            RejectReason.CALLING_AE_NOT_RECOGNIZED,
        ),
    ],
)
def test_checks(
    case: str, facts: AssociationFacts, check: str | None, reject: RejectReason | None
) -> None:
    refusal = decide(facts)
    if check is None:
        assert refusal is None, (case, refusal)
    else:
        assert refusal is not None, case
        assert (refusal.check, refusal.reject) == (check, reject), (case, refusal)
        assert "CT01" in refusal.reason or check in ("registered-device", "association-limit")


def test_reason_names_the_certificate_owner() -> None:
    refusal = decide(
        f(transport="tls", peer_certificate=THEIRS, certificate_owner="MR01", credentials=TLS_ONLY)
    )
    assert refusal is not None and "device 'MR01'" in refusal.reason


def test_a_passcode_over_plain_tcp_is_refused_and_says_why() -> None:
    refusal = decide(f(credentials=WITH_ID, user_identity=GOOD_ID))
    assert refusal is not None and "only over DICOM TLS" in refusal.reason


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    private, public = keypair(tmp_path_factory.mktemp("idp"), "ed25519")
    return private, public.read_text()


@pytest.mark.parametrize(
    ("case", "registered_subject", "sub", "problem"),
    [
        ("no subject registered: the AE title is required", None, "CT01", None),
        ("no subject registered: another device's token", None, "MR01", "subject 'MR01'"),
        ("no subject registered: no sub claim", None, None, "subject None"),
        ("registered subject", "ct-room-1", "ct-room-1", None),
        ("registered subject, AE title sent", "ct-room-1", "CT01", "subject 'CT01'"),
    ],
)
def test_a_jwt_speaks_only_for_its_own_device(
    idp: tuple[Path, str],
    case: str,
    registered_subject: str | None,
    sub: str | None,
    problem: str | None,
) -> None:
    """One issuer, one audience (this gateway) for every device: without a per-device subject
    a token minted for MR01 would open associations for CT01."""
    private, public = idp
    req = JwtRequirement("https://idp", "ZTBRIDGE", public, registered_subject)
    t = int(NOW.timestamp())
    claims = {"iss": "https://idp", "aud": "ZTBRIDGE", "exp": t + 300}
    if sub is not None:
        claims["sub"] = sub
    token = Claim(5, sign(private, claims).encode(), None, wants_response=False)
    creds = DeviceCredentials(fingerprints=frozenset({MINE}), identity=req)
    refusal = decide(
        f(transport="tls", peer_certificate=MINE, credentials=creds, user_identity=token)
    )
    if problem is None:
        assert refusal is None, (case, refusal)
    else:
        assert refusal is not None and refusal.check == "user-identity", case
        assert problem in refusal.reason, (case, refusal.reason)
