"""Admission is a pure function of the facts: a table of cases, each with its check."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from gateway.admission import AssociationFacts, RejectReason, decide
from gateway.devices import Device

CT = Device(1, "CT01", "CT", (ip_network("10.0.0.0/24"), ip_network("192.168.5.7/32")), True)
OFF = Device(2, "MR01", "MR", (ip_network("10.0.0.0/24"),), False)


def facts(
    calling: str = "CT01",
    called: str = "ZTBRIDGE",
    ip: str = "10.0.0.9",
    device: Device | None = CT,
) -> AssociationFacts:
    return AssociationFacts(calling, called, ip, "ZTBRIDGE", device)


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
