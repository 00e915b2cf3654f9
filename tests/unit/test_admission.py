"""Admission is a pure function of the facts: a table of cases, each with its check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from ipaddress import ip_network

import pytest

from gateway.admission import AssociationFacts, RejectReason, check_posture, decide
from gateway.devices import Device
from gateway.posture.status import PostureStatus

CT = Device(1, "CT01", "CT", (ip_network("10.0.0.0/24"), ip_network("192.168.5.7/32")), True)
OFF = Device(2, "MR01", "MR", (ip_network("10.0.0.0/24"),), False)
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
AGE = timedelta(seconds=300)
HEALTHY = PostureStatus("default", AGE, NOW - timedelta(seconds=30), True)


def facts(
    calling: str = "CT01",
    called: str = "ZTBRIDGE",
    ip: str = "10.0.0.9",
    device: Device | None = CT,
    posture: PostureStatus | None = HEALTHY,
) -> AssociationFacts:
    return AssociationFacts(calling, called, ip, "ZTBRIDGE", device, posture, NOW)


@pytest.mark.parametrize(
    ("case", "f", "check", "reject"),
    [
        ("registered device in range", facts(), None, None),
        ("second range", facts(ip="192.168.5.7"), None, None),
        ("ipv4-mapped ipv6", facts(ip="::ffff:10.0.0.3"), None, None),
        ("called AE padded", facts(called="ZTBRIDGE  "), None, None),
        (
            "unknown calling AE",
            facts(calling="EVIL", device=None),
            "registered-device",
            RejectReason.CALLING_AE_NOT_RECOGNIZED,
        ),
        (
            "suspended device",
            facts(calling="MR01", device=OFF),
            "registered-device",
            RejectReason.CALLING_AE_NOT_RECOGNIZED,
        ),
        (
            "wrong called AE",
            facts(called="OTHERPACS"),
            "called-ae",
            RejectReason.CALLED_AE_NOT_RECOGNIZED,
        ),
        (
            "called AE wrong case",
            facts(called="ztbridge"),
            "called-ae",
            RejectReason.CALLED_AE_NOT_RECOGNIZED,
        ),
        ("outside range", facts(ip="10.0.1.9"), "source-address", RejectReason.NO_REASON_GIVEN),
        (
            "neighbour of single host",
            facts(ip="192.168.5.8"),
            "source-address",
            RejectReason.NO_REASON_GIVEN,
        ),
        ("garbage address", facts(ip="not-an-ip"), "source-address", RejectReason.NO_REASON_GIVEN),
    ],
)
def test_decide(
    case: str, f: AssociationFacts, check: str | None, reject: RejectReason | None
) -> None:
    refusal = decide(f)
    if check is None:
        assert refusal is None, case
    else:
        assert refusal is not None, case
        assert (refusal.check, refusal.reject) == (check, reject), case
        assert refusal.reason


BAD_SIG = "bad-signature: the signature does not verify"
PERMANENT = RejectReason.NO_REASON_GIVEN
TRANSIENT = RejectReason.TRANSIENT_NO_REASON_GIVEN


def at(seconds_ago: float) -> datetime:
    return NOW - timedelta(seconds=seconds_ago)


@pytest.mark.parametrize(
    ("case", "posture", "reject", "says"),
    [
        ("fresh and passing", HEALTHY, None, None),
        ("exactly the max age", PostureStatus("default", AGE, at(300), True), None, None),
        ("not required (policy none)", PostureStatus("none", None), None, None),
        ("never enrolled", None, PERMANENT, "no posture enrollment"),
        ("no report yet", PostureStatus("default", AGE), TRANSIENT, "no valid posture report"),
        (
            "no report; the last attempt was badly signed",
            PostureStatus("default", AGE, last_refused_at=at(10), last_refused=BAD_SIG),
            TRANSIENT,
            "latest report was refused (bad-signature",
        ),
        (
            "one second stale",
            PostureStatus("default", AGE, at(301), True),
            TRANSIENT,
            "stale: issued 301 s ago, policy 'default' allows 300 s",
        ),
        (
            "stale, and the newer attempt was badly signed",
            PostureStatus("default", AGE, at(900), True, (), at(60), BAD_SIG),
            TRANSIENT,
            "refused (bad-signature",
        ),
        (
            "fresh report after a bad one: the bad one is history",
            PostureStatus("default", AGE, at(30), True, (), at(60), BAD_SIG),
            None,
            None,
        ),
        (
            "fresh but failing",
            PostureStatus("default", AGE, at(30), False, ("no firewall is filtering",)),
            PERMANENT,
            "fails posture policy 'default': no firewall is filtering",
        ),
        (
            "stale and failing: stale is said first",
            PostureStatus("default", AGE, at(999), False, ("x",)),
            TRANSIENT,
            "stale",
        ),
        (
            "policy no longer defined",
            PostureStatus("gone", None, at(30), True),
            PERMANENT,
            "'gone', which is not defined",
        ),
    ],
)
def test_check_posture(
    case: str, posture: PostureStatus | None, reject: RejectReason | None, says: str | None
) -> None:
    refusal = decide(facts(posture=posture))
    if reject is None:
        assert refusal is None, case
        return
    assert refusal is not None, case
    assert (refusal.check, refusal.reject) == ("posture", reject), case
    assert says is not None and says in refusal.reason, refusal.reason
    assert "'CT01'" in refusal.reason  # the log line names the device


def test_posture_is_judged_after_identity_and_address() -> None:
    refusal = decide(facts(ip="10.9.9.9", posture=None))
    assert refusal is not None and refusal.check == "source-address"
    assert check_posture(facts(calling="EVIL", device=None, posture=None)) is None


def test_posture_without_a_time_fails_closed() -> None:
    f = AssociationFacts("CT01", "ZTBRIDGE", "10.0.0.9", "ZTBRIDGE", CT, HEALTHY, None)
    refusal = decide(f)
    assert refusal is not None and refusal.check == "posture"
