"""``ztbridge device show``: a device's posture in words an administrator can act on.

The "admission now" line runs the very check the DICOM edge runs, so what is shown is what
the next association will meet.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.admission import AssociationFacts, check_posture
from gateway.devices import Device
from gateway.posture.policy import NO_POLICY
from gateway.posture.service import PostureService


def _ago(then: datetime, now: datetime) -> str:
    seconds = int((now - then).total_seconds())
    if abs(seconds) < 120:
        return f"{seconds} s ago"
    if abs(seconds) < 7200:
        return f"{seconds // 60} min ago"
    if abs(seconds) < 2 * 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"


def _when(unix: int | None, now: datetime) -> str | None:
    if unix is None:
        return None
    then = datetime.fromtimestamp(unix, UTC)
    return f"{then:%Y-%m-%d %H:%M:%S}Z ({_ago(then, now)})"


def _fact_lines(report: dict[str, Any], now: datetime) -> list[str]:
    facts = report.get("facts", {})
    unknown = report.get("unknown", {})

    def show(name: str, value: str | None) -> str:
        if facts.get(name) is None:
            return f"unknown ({unknown.get(name, 'not reported')})"
        return value if value is not None else str(facts[name])

    def yes_no(name: str) -> str:
        return show(name, "yes" if facts.get(name) else "no")

    ports = facts.get("listening_ports") or []
    listening = ", ".join(f"{p['proto']}/{p['port']} on {p['address']}" for p in ports)
    offset = facts.get("clock_offset_ms")
    return [
        f"  OS:                  {show('os_name', None)} {show('os_version', None)}"
        f" (kernel {show('kernel', None)})",
        f"  booted:              {show('boot_time', _when(facts.get('boot_time'), now))}",
        "  last package update: "
        + show("last_patch_time", _when(facts.get("last_patch_time"), now)),
        f"  firewall filtering:  {yes_no('firewall_enabled')}",
        f"  root disk encrypted: {yes_no('disk_encrypted')}",
        "  processes:           "
        + show("processes", f"{len(facts.get('processes') or [])} distinct names running"),
        f"  listening:           {show('listening_ports', listening or 'nothing')}",
        "  logged-in users:     "
        + show("logged_in_users", ", ".join(facts.get("logged_in_users") or []) or "none"),
        "  clock offset:        "
        + show("clock_offset_ms", f"{offset / 1000:+.3f} s" if offset is not None else None),
        f"  agent version:       {report.get('agent_version', '?')}",
    ]


def describe(posture: PostureService, device: Device, now: datetime) -> list[str]:
    """The lines ``ztbridge device show`` prints."""
    nets = ", ".join(str(n) for n in device.networks)
    lines = [
        f"device {device.id}: AE title {device.ae_title!r}"
        + (f" ({device.name})" if device.name else ""),
        f"  allowed from: {nets}; {'active' if device.active else 'SUSPENDED'}",
    ]
    enrollment = posture.enrollment(device.id)
    if enrollment is None:
        lines.append(
            "posture: not enrolled (associations are refused): 'ztbridge device posture"
            f" {device.ae_title} --policy NAME --posture-key-out FILE'"
        )
    elif enrollment.policy == NO_POLICY:
        lines.append("posture: not required (policy 'none')")
    else:
        lines.append(
            f"posture: policy {enrollment.policy!r}, key {enrollment.key_fingerprint},"
            f" enrolled {enrollment.enrolled_at}"
        )
    if enrollment is not None and enrollment.policy != NO_POLICY:
        latest = posture.latest(device.id)
        if latest is None:
            lines.append("last report: none received yet")
        else:
            lines.append(
                f"last report: issued {latest.issued_at:%Y-%m-%d %H:%M:%S}Z"
                f" ({_ago(latest.issued_at, now)}), judged by policy {latest.policy!r}"
            )
            lines.append("verdict: " + ("PASS" if latest.passed else "FAIL"))
            lines.extend(f"  - {r}" for r in latest.reasons)
            lines.extend(f"  note: {n}" for n in latest.notes)
            lines.append("facts:")
            lines.extend(_fact_lines(latest.report, now))
        if enrollment.last_refused_at is not None:
            lines.append(
                f"last refused report: {enrollment.last_refused_at}: {enrollment.last_refused}"
            )
    refusal = check_posture(
        AssociationFacts(
            calling_ae=device.ae_title,
            called_ae="",
            peer_ip="",
            our_ae="",
            device=device,
            posture=posture.status(device.id),
            now=now,
        )
    )
    if refusal is not None:
        lines.append(f"admission now: REFUSED (posture): {refusal.reason}")
    elif enrollment is not None and enrollment.policy == NO_POLICY:
        lines.append("admission now: posture not required")
    else:
        lines.append("admission now: posture passes")
    return lines
