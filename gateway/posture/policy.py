"""Posture policies and their evaluation: a pure function facts + policy + now -> decision.

Policies are named tables in one TOML file (config/posture-policy.example.toml documents
every key); each device is enrolled under one name, or under ``none`` (no posture required).
A rule that is switched off never looks at its fact; a rule that is on and meets an unknown
fact follows the policy's ``unknown`` table (``pass`` or ``fail``, per fact). ``evaluate``
does no I/O and reads no clock, so a table of cases covers every rule and boundary.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from gateway.errors import ConfigError
from gateway.posture.report import Report

NO_POLICY = "none"  # the reserved name: posture not required for this device
DEFAULT_POLICY = "default"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

UnknownMeans = Literal["pass", "fail"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UnknownRules(_Model):
    """What an unknown fact means, per fact, for a rule that is switched on."""

    os: UnknownMeans = "fail"
    patch: UnknownMeans = "fail"
    firewall: UnknownMeans = "fail"
    disk_encryption: UnknownMeans = "fail"
    processes: UnknownMeans = "fail"
    listening_ports: UnknownMeans = "fail"
    clock_offset: UnknownMeans = "fail"


# Services that send credentials in clear or give a shell without one: no business on a
# host that sends patient images.
DEFAULT_FORBIDDEN_PROCESSES = (
    "telnetd",
    "in.telnetd",
    "rshd",
    "in.rshd",
    "rlogind",
    "in.rlogind",
    "rexecd",
    "in.rexecd",
    "tftpd",
    "in.tftpd",
    "ftpd",
    "in.ftpd",
    "vsftpd",
    "proftpd",
    "pure-ftpd",
)
DEFAULT_FORBIDDEN_PORTS = ("tcp/21", "tcp/23", "udp/69", "tcp/512", "tcp/513", "tcp/514")
DEFAULT_MIN_OS_VERSIONS = {
    "debian": "12",
    "ubuntu": "22.04",
    "rhel": "8",
    "rocky": "8",
    "almalinux": "8",
    "windows": "10.0.17763",
}

_PORT = re.compile(r"^(?:(tcp|udp)/)?(\d{1,5})$")


class Policy(_Model):
    """One named policy. Defaults are the built-in ``default`` policy."""

    max_report_age_seconds: int = Field(300, ge=10, le=7 * 86400)
    max_days_since_patch: StrictInt | Literal[False] = 90
    max_clock_offset_seconds: StrictInt | Literal[False] = 120
    min_os_versions: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_MIN_OS_VERSIONS))
    required_processes: tuple[str, ...] = ()
    forbidden_processes: tuple[str, ...] = DEFAULT_FORBIDDEN_PROCESSES
    forbidden_listening_ports: tuple[str | int, ...] = DEFAULT_FORBIDDEN_PORTS
    firewall_required: bool = False
    disk_encryption_required: bool = False
    unknown: UnknownRules = UnknownRules()

    @field_validator("max_days_since_patch", "max_clock_offset_seconds")
    @classmethod
    def _non_negative(cls, v: int | bool) -> int | bool:
        if v is not False and v < 0:
            raise ValueError("a number of at least 0, or false to switch the rule off")
        return v

    @field_validator("forbidden_listening_ports")
    @classmethod
    def _ports(cls, v: tuple[str | int, ...]) -> tuple[str | int, ...]:
        for item in v:
            m = _PORT.match(str(item))
            if not m or not 0 < int(m.group(2)) <= 65535:
                raise ValueError(f"{item!r}: use a port number (TCP and UDP) or 'tcp/N' / 'udp/N'")
        return v

    @field_validator("min_os_versions")
    @classmethod
    def _versions(cls, v: dict[str, str]) -> dict[str, str]:
        for os_name, version in v.items():
            if version_key(version) is None:
                raise ValueError(f"{os_name} = {version!r}: a dotted number like '12' or '22.04'")
        return {k.lower(): val for k, val in v.items()}

    @property
    def max_report_age(self) -> timedelta:
        """How old the latest report may be."""
        return timedelta(seconds=self.max_report_age_seconds)


def version_key(text: str) -> tuple[int, ...] | None:
    """Leading dotted numbers of a version ('12.5', '22.04.3 LTS' -> (22, 4, 3)); None if none."""
    m = re.match(r"^\s*(\d+(?:\.\d+)*)", text)
    if not m:
        return None
    return tuple(int(p) for p in m.group(1).split("."))


def _at_least(have: tuple[int, ...], need: tuple[int, ...]) -> bool:
    width = max(len(have), len(need))
    return have + (0,) * (width - len(have)) >= need + (0,) * (width - len(need))


@dataclass(frozen=True)
class Decision:
    """The verdict on one report: pass or fail, why it fails, and what was let through."""

    passed: bool
    reasons: tuple[str, ...]
    notes: tuple[str, ...] = ()


def _unknown(
    rule: str, means: UnknownMeans, what: str, reasons: list[str], notes: list[str]
) -> None:
    text = f"{what} is unknown"
    if means == "fail":
        reasons.append(f"{text} (policy: unknown {rule} fails)")
    else:
        notes.append(f"{text} (policy: unknown {rule} passes)")


def _port_matches(rule: str | int, proto: str, port: int) -> bool:
    m = _PORT.match(str(rule))
    assert m is not None  # validated
    return int(m.group(2)) == port and m.group(1) in (None, proto)


def evaluate(report: Report, policy: Policy, now: datetime) -> Decision:
    """Judge ``report`` against ``policy`` at ``now``. Pure: no I/O, no clock."""
    reasons: list[str] = []
    notes: list[str] = []
    f = report.facts
    u = policy.unknown

    age = now - report.issued
    if age > policy.max_report_age:
        reasons.append(
            f"report is stale: issued {int(age.total_seconds())} s ago,"
            f" policy allows {policy.max_report_age_seconds} s"
        )

    if policy.min_os_versions:
        if f.os_name is None or f.os_version is None:
            _unknown("os", u.os, "OS name or version", reasons, notes)
        else:
            name = f.os_name.lower()
            need = policy.min_os_versions.get(name)
            have = version_key(f.os_version)
            if need is None:
                listed = ", ".join(sorted(policy.min_os_versions))
                reasons.append(f"OS {f.os_name!r} is not one the policy allows ({listed})")
            elif have is None:
                reasons.append(f"OS version {f.os_version!r} of {name} is not a dotted number")
            elif not _at_least(have, version_key(need) or ()):
                reasons.append(f"OS {name} {f.os_version} is older than the minimum {need}")

    if policy.max_days_since_patch is not False:
        if f.last_patch_time is None:
            _unknown("patch", u.patch, "time of the last package update", reasons, notes)
        else:
            days = (now.timestamp() - f.last_patch_time) / 86400
            if days > policy.max_days_since_patch:
                reasons.append(
                    f"last package update was {int(days)} days ago,"
                    f" policy allows {policy.max_days_since_patch}"
                )

    if policy.max_clock_offset_seconds is not False:
        if f.clock_offset_ms is None:
            _unknown("clock_offset", u.clock_offset, "clock offset", reasons, notes)
        elif abs(f.clock_offset_ms) > policy.max_clock_offset_seconds * 1000:
            reasons.append(
                f"host clock is {f.clock_offset_ms / 1000:+.1f} s off the gateway's,"
                f" policy allows {policy.max_clock_offset_seconds} s"
            )

    if policy.firewall_required:
        if f.firewall_enabled is None:
            _unknown("firewall", u.firewall, "firewall state", reasons, notes)
        elif not f.firewall_enabled:
            reasons.append("no firewall is filtering (policy requires one)")

    if policy.disk_encryption_required:
        if f.disk_encrypted is None:
            _unknown("disk_encryption", u.disk_encryption, "root disk encryption", reasons, notes)
        elif not f.disk_encrypted:
            reasons.append("the root file system is not encrypted (policy requires it)")

    if policy.required_processes or policy.forbidden_processes:
        if f.processes is None:
            _unknown("processes", u.processes, "the list of running processes", reasons, notes)
        else:
            running = {p.casefold() for p in f.processes}
            missing = [p for p in policy.required_processes if p.casefold() not in running]
            if missing:
                reasons.append("required process not running: " + ", ".join(missing))
            present = [p for p in policy.forbidden_processes if p.casefold() in running]
            if present:
                reasons.append("forbidden process running: " + ", ".join(present))

    if policy.forbidden_listening_ports:
        if f.listening_ports is None:
            _unknown(
                "listening_ports", u.listening_ports, "the list of listening ports", reasons, notes
            )
        else:
            hits = sorted(
                {
                    f"{p.proto}/{p.port}"
                    for p in f.listening_ports
                    for rule in policy.forbidden_listening_ports
                    if _port_matches(rule, p.proto, p.port)
                }
            )
            if hits:
                reasons.append("forbidden port listening: " + ", ".join(hits))

    return Decision(not reasons, tuple(reasons), tuple(notes))


@dataclass(frozen=True)
class PolicySet:
    """The named policies in force, and where they came from (for messages)."""

    policies: Mapping[str, Policy]
    source: str

    def get(self, name: str) -> Policy | None:
        """The policy called ``name``, if defined."""
        return self.policies.get(name)

    def names(self) -> Iterator[str]:
        """Every defined name, sorted."""
        return iter(sorted(self.policies))

    def require(self, name: str) -> str:
        """``name`` if it is a defined policy or ``none``; else a ConfigError naming the fix."""
        if name == NO_POLICY or name in self.policies:
            return name
        known = ", ".join([*self.names(), NO_POLICY])
        raise ConfigError(f"no posture policy {name!r} in {self.source} (defined: {known})")

    @property
    def longest_report_age(self) -> timedelta:
        """The largest max report age of any policy: how long seen nonces must be kept."""
        return max((p.max_report_age for p in self.policies.values()), default=timedelta())


BUILTIN = PolicySet({DEFAULT_POLICY: Policy()}, "the built-in policies")


def parse_policies(text: str, source: str) -> PolicySet:
    """Named policies from TOML text: every top-level table is one policy."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from e
    policies: dict[str, Policy] = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: {name!r} must be a table ([{name}]) naming a policy")
        if name == NO_POLICY or not _NAME.match(name):
            raise ConfigError(
                f"{source}: policy name {name!r} is reserved or invalid"
                " (lowercase letters, digits, '-' and '_'; 'none' means no policy)"
            )
        try:
            policies[name] = Policy.model_validate(table)
        except ValidationError as e:
            problems = "; ".join(
                f"{name}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
            )
            raise ConfigError(f"{source}: {problems}") from e
    if not policies:
        raise ConfigError(f"{source}: defines no policy (add a [default] table)")
    return PolicySet(policies, source)


def load_policies(path: Path | None) -> PolicySet:
    """The policies in ``path``, or the built-in ones when there is no file."""
    if path is None:
        return BUILTIN
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(
            f"cannot read the posture policy file {path} (posture.policy_file): {e.strerror}"
        ) from e
    return parse_policies(text, str(path))
