"""Who may open an association: a list of checks, each a pure function of the facts.

Every check returns None (passes) or a Refusal naming itself and why. The DICOM edge gathers
the facts, calls ``decide`` and maps a refusal to the closest A-ASSOCIATE-RJ reason; later
checks (TLS client certificate, user identity, device posture) join ``CHECKS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import ip_address

from gateway.devices import Device


class RejectReason(StrEnum):
    """The standard rejection each refusal maps to (PS3.8 9.3.4)."""

    CALLING_AE_NOT_RECOGNIZED = "calling-ae-not-recognized"
    CALLED_AE_NOT_RECOGNIZED = "called-ae-not-recognized"
    NO_REASON_GIVEN = "no-reason-given"


@dataclass(frozen=True)
class AssociationFacts:
    """What is known about an association request when it arrives."""

    calling_ae: str
    called_ae: str
    peer_ip: str
    our_ae: str
    device: Device | None


@dataclass(frozen=True)
class Refusal:
    """A failed check: which one, the human reason, and the wire reason."""

    check: str
    reason: str
    reject: RejectReason


Check = Callable[[AssociationFacts], Refusal | None]


def check_called_ae(f: AssociationFacts) -> Refusal | None:
    """The modality must address us by our AE title."""
    if f.called_ae.strip() != f.our_ae:
        return Refusal(
            "called-ae",
            f"called AE title {f.called_ae.strip()!r} is not ours ({f.our_ae!r})",
            RejectReason.CALLED_AE_NOT_RECOGNIZED,
        )
    return None


def check_registered_device(f: AssociationFacts) -> Refusal | None:
    """The calling AE title must belong to a registered, active device."""
    if f.device is None:
        return Refusal(
            "registered-device",
            f"calling AE title {f.calling_ae.strip()!r} is not a registered device",
            RejectReason.CALLING_AE_NOT_RECOGNIZED,
        )
    if not f.device.active:
        return Refusal(
            "registered-device",
            f"device {f.device.ae_title!r} is suspended",
            RejectReason.CALLING_AE_NOT_RECOGNIZED,
        )
    return None


def check_source_address(f: AssociationFacts) -> Refusal | None:
    """The connection must come from one of the device's allowed addresses."""
    if f.device is None:
        return None
    try:
        peer = ip_address(f.peer_ip)
    except ValueError:
        return Refusal(
            "source-address",
            f"peer address {f.peer_ip!r} is not an IP address",
            RejectReason.NO_REASON_GIVEN,
        )
    if peer.version == 6 and peer.ipv4_mapped is not None:  # type: ignore[union-attr]
        peer = peer.ipv4_mapped  # type: ignore[union-attr]
    if not any(peer in net for net in f.device.networks):
        allowed = ", ".join(str(n) for n in f.device.networks)
        return Refusal(
            "source-address",
            f"device {f.device.ae_title!r} connected from {peer}, outside its allowed {allowed}",
            RejectReason.NO_REASON_GIVEN,
        )
    return None


CHECKS: tuple[Check, ...] = (check_called_ae, check_registered_device, check_source_address)


def decide(facts: AssociationFacts, checks: tuple[Check, ...] = CHECKS) -> Refusal | None:
    """Run every check in order; the first refusal wins, None means admit."""
    for check in checks:
        refusal = check(facts)
        if refusal is not None:
            return refusal
    return None
