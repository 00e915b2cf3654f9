"""Who may open an association: a list of checks, each a pure function of the facts.

Every check returns None (passes) or a Refusal naming itself and why. The DICOM edge gathers
the facts, calls ``decide`` and maps a refusal to the closest A-ASSOCIATE-RJ reason. Cheap
checks come first, so an unknown peer never makes us verify a passcode or a token;
``check_posture`` judges the device's latest posture report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from ipaddress import ip_address
from typing import Literal

from gateway import identity
from gateway.credentials import DeviceCredentials
from gateway.devices import Device
from gateway.posture.status import PostureStatus


class RejectReason(StrEnum):
    """The standard rejection each refusal maps to (PS3.8 9.3.4)."""

    CALLING_AE_NOT_RECOGNIZED = "calling-ae-not-recognized"
    CALLED_AE_NOT_RECOGNIZED = "called-ae-not-recognized"
    NO_REASON_GIVEN = "no-reason-given"
    # Rejected-transient, service user, no reason given: "try again later". A missing or
    # stale posture report is expected to be cured by the agent's next report.
    TRANSIENT_NO_REASON_GIVEN = "transient-no-reason-given"
    # PS3.7 D.3.3.7: an authorization failure is "rejected-permanent, DICOM UL
    # service-provider (ACSE related function)".
    AUTHENTICATION_FAILED = "authentication-failed"
    # Rejected-transient, service-provider (presentation), local-limit-exceeded: try later.
    LOCAL_LIMIT_EXCEEDED = "local-limit-exceeded"


@dataclass(frozen=True)
class AssociationFacts:
    """What is known about an association request when it arrives."""

    calling_ae: str
    called_ae: str
    peer_ip: str
    our_ae: str
    device: Device | None
    # The device's posture snapshot (None: never enrolled, which fails closed) and the time
    # of the request, against which report freshness is judged.
    posture: PostureStatus | None = None
    now: datetime | None = None
    # DICOM TLS: how the peer is connected and, over TLS, the SHA-256 fingerprint of the
    # client certificate it proved (the handshake already checked it chains to our CA).
    transport: Literal["tcp", "tls"] = "tcp"
    peer_certificate: str | None = None
    certificate_owner: str | None = None  # AE title of the device it was issued to, if any
    credentials: DeviceCredentials = field(default_factory=DeviceCredentials)
    user_identity: identity.Claim | None = None
    max_jwt_validity: timedelta | None = None  # a JWT's exp may lie at most this far ahead
    jwt_leeway_seconds: int = identity.LEEWAY_SECONDS  # clock skew allowed for exp/nbf/iat
    # Associations already admitted and still open: in total and for this device.
    open_associations: int = 0
    open_for_device: int = 0
    max_associations: int = 1 << 30
    max_per_device: int = 1 << 30


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


def _refused_note(p: PostureStatus) -> str:
    """Why no fresh report exists, when the device's latest attempt was refused."""
    if p.last_refused is None or p.last_refused_at is None:
        return ""
    if p.issued_at is not None and p.last_refused_at <= p.issued_at:
        return ""
    return f"; its latest report was refused ({p.last_refused})"


def check_posture(f: AssociationFacts) -> Refusal | None:
    """The device's latest posture report must be verified, fresh and passing its policy.

    A missing or stale report is refused as transient (the agent's next report cures it);
    a failing verdict or a policy the gateway does not know is permanent until a person acts.
    """
    if f.device is None:
        return None
    ae = f.device.ae_title
    p = f.posture
    if p is None:
        return Refusal(
            "posture",
            f"device {ae!r} has no posture enrollment: give it a policy and key with"
            " 'ztbridge device posture' (or --posture-policy none)",
            RejectReason.NO_REASON_GIVEN,
        )
    if not p.required:
        return None
    if p.max_report_age is None:
        return Refusal(
            "posture",
            f"device {ae!r} is enrolled under posture policy {p.policy!r}, which is not defined",
            RejectReason.NO_REASON_GIVEN,
        )
    if p.issued_at is None:
        return Refusal(
            "posture",
            f"device {ae!r} has sent no valid posture report yet{_refused_note(p)}",
            RejectReason.TRANSIENT_NO_REASON_GIVEN,
        )
    if f.now is None:
        return Refusal("posture", "no time to judge freshness by", RejectReason.NO_REASON_GIVEN)
    age = f.now - p.issued_at
    if age > p.max_report_age:
        return Refusal(
            "posture",
            f"device {ae!r} posture report is stale: issued {int(age.total_seconds())} s ago,"
            f" policy {p.policy!r} allows {int(p.max_report_age.total_seconds())} s"
            + _refused_note(p),
            RejectReason.TRANSIENT_NO_REASON_GIVEN,
        )
    if not p.passed:
        return Refusal(
            "posture",
            f"device {ae!r} fails posture policy {p.policy!r}: " + "; ".join(p.reasons),
            RejectReason.NO_REASON_GIVEN,
        )
    return None


def check_tls_required(f: AssociationFacts) -> Refusal | None:
    """A device registered with ``--require-tls`` must not send over plain TCP."""
    if f.device is None or not f.credentials.require_tls or f.transport == "tls":
        return None
    return Refusal(
        "tls-required",
        f"device {f.device.ae_title!r} must use DICOM TLS but connected over plain TCP",
        RejectReason.NO_REASON_GIVEN,
    )


def check_tls_certificate(f: AssociationFacts) -> Refusal | None:
    """Over TLS, the client certificate must be one issued to the calling AE's device.

    Chaining to our CA is enforced by the TLS handshake itself; this check binds the
    certificate to the AE title, so one modality's certificate cannot speak for another.
    """
    if f.device is None or f.transport != "tls":
        return None
    if f.peer_certificate is None:
        return Refusal(
            "tls-certificate",
            f"device {f.device.ae_title!r} connected over TLS without a client certificate",
            RejectReason.CALLING_AE_NOT_RECOGNIZED,
        )
    if f.peer_certificate in f.credentials.fingerprints:
        return None
    short = f.peer_certificate[:16]
    if f.certificate_owner is not None:
        whose = f"is device {f.certificate_owner!r}'s"
    else:
        whose = "was not issued to any device (or was revoked)"
    return Refusal(
        "tls-certificate",
        f"client certificate {short}... presented for device {f.device.ae_title!r} {whose}",
        RejectReason.CALLING_AE_NOT_RECOGNIZED,
    )


def check_user_identity(f: AssociationFacts) -> Refusal | None:
    """Where the device requires a user identity, the request must prove it, over TLS.

    A passcode or token sent over plain TCP has crossed the network in clear: it is refused
    whatever it says. A JWT requirement registered without a subject (before subjects
    defaulted to the AE title) is held to the device's AE title, so one issuer's token for
    one modality cannot open associations for another.
    """
    req = f.credentials.identity
    if f.device is None or req is None:
        return None
    if isinstance(req, identity.JwtRequirement) and req.subject is None:
        req = replace(req, subject=f.device.ae_title)
    problem: str | None
    if f.transport != "tls":
        problem = (
            "a user identity is accepted only over DICOM TLS (over plain TCP the passcode or"
            " token crosses the network in clear)"
        )
    elif f.now is None:  # fail closed: token times cannot be judged without a clock
        problem = "no clock to judge the identity by"
    else:
        problem = identity.check(
            req, f.user_identity, f.now, f.max_jwt_validity, f.jwt_leeway_seconds
        )
    if problem is None:
        return None
    return Refusal(
        "user-identity",
        f"device {f.device.ae_title!r}: {problem}",
        RejectReason.AUTHENTICATION_FAILED,
    )


def check_association_limits(f: AssociationFacts) -> Refusal | None:
    """At most ``max_associations`` open at once, and ``max_per_device`` for one device.

    The per-device limit keeps one misbehaving (or compromised) modality from taking every
    slot; both refusals are transient, so a well-behaved sender retries later.
    """
    if f.device is None:
        return None
    if f.open_for_device >= f.max_per_device:
        return Refusal(
            "association-limit",
            f"device {f.device.ae_title!r} already has {f.open_for_device} open associations"
            f" (limit {f.max_per_device} per device)",
            RejectReason.LOCAL_LIMIT_EXCEEDED,
        )
    if f.open_associations >= f.max_associations:
        return Refusal(
            "association-limit",
            f"{f.open_associations} associations open (limit {f.max_associations})",
            RejectReason.LOCAL_LIMIT_EXCEEDED,
        )
    return None


CHECKS: tuple[Check, ...] = (
    check_called_ae,
    check_registered_device,
    check_source_address,
    check_tls_required,
    check_tls_certificate,
    check_user_identity,
    check_posture,
    check_association_limits,
)


def decide(facts: AssociationFacts, checks: tuple[Check, ...] = CHECKS) -> Refusal | None:
    """Run every check in order; the first refusal wins, None means admit."""
    for check in checks:
        refusal = check(facts)
        if refusal is not None:
            return refusal
    return None
