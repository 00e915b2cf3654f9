"""The TLS, user identity and limit checks of admission: a table of cases."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from ipaddress import ip_network

import pytest

from gateway import crypto
from gateway.admission import AssociationFacts, RejectReason, decide
from gateway.credentials import DeviceCredentials
from gateway.devices import Device
from gateway.identity import Claim, PasscodeRequirement
from gateway.posture.status import PostureStatus

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
            f(credentials=WITH_ID),
            "user-identity",
            RejectReason.AUTHENTICATION_FAILED,
        ),
        (
            "identity wrong",
            f(credentials=WITH_ID, user_identity=BAD_ID),
            "user-identity",
            RejectReason.AUTHENTICATION_FAILED,
        ),
        (
            "no clock: fail closed",
            f(credentials=WITH_ID, user_identity=GOOD_ID, now=None),
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
