"""Posture policy evaluation: a pure function, a table of cases covering every rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.posture.policy import (
    BUILTIN,
    NO_POLICY,
    Policy,
    evaluate,
    load_policies,
    parse_policies,
    version_key,
)
from gateway.posture.report import Report, format_time

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "posture-policy.example.toml"
NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
DAY = 86400

HEALTHY: dict[str, Any] = {
    "os_name": "debian",
    "os_version": "12",
    "kernel": "6.1.0-28-amd64",
    "boot_time": int(NOW.timestamp()) - 3 * DAY,
    "last_patch_time": int(NOW.timestamp()) - 10 * DAY,
    "firewall_enabled": True,
    "disk_encrypted": True,
    "processes": ["systemd", "sshd", "edr-agent"],
    "listening_ports": [{"proto": "tcp", "address": "0.0.0.0", "port": 22}],
    "logged_in_users": ["tech"],
    "clock_offset_ms": 40,
}


def report(age: float = 5.0, **facts: Any) -> Report:
    return Report.model_validate(
        {
            "format": "ztbridge-posture/1",
            "device": "CT01",
            "issued_at": format_time(NOW - timedelta(seconds=age)),
            "nonce": "ab" * 16,
            "agent_version": "0.1.0",
            "facts": {**HEALTHY, **facts},
            "unknown": {},
        }
    )


STRICT = Policy(
    required_processes=("edr-agent",),
    firewall_required=True,
    disk_encryption_required=True,
)
LAX_UNKNOWN = STRICT.model_copy(
    update={
        "unknown": STRICT.unknown.model_copy(
            update={
                k: "pass"
                for k in (
                    "os",
                    "patch",
                    "firewall",
                    "disk_encryption",
                    "processes",
                    "listening_ports",
                    "clock_offset",
                )
            }
        )
    }
)
OFF = Policy(
    max_days_since_patch=False,
    max_clock_offset_seconds=False,
    min_os_versions={},
    forbidden_processes=(),
    forbidden_listening_ports=(),
)

# (case, report, policy, expected failure substrings (empty: passes), expected note substring)
CASES: list[tuple[str, Report, Policy, list[str], str | None]] = [
    ("healthy host, strict policy", report(), STRICT, [], None),
    ("healthy host, default policy", report(), Policy(), [], None),
    # report age
    ("age exactly the limit", report(age=300), STRICT, [], None),
    ("one second stale", report(age=301), STRICT, ["report is stale: issued 301 s ago"], None),
    ("an hour stale", report(age=3600), STRICT, ["stale"], None),
    ("slightly in the future", report(age=-5), STRICT, [], None),
    # OS
    ("newer OS", report(os_version="13"), STRICT, [], None),
    ("older OS", report(os_version="11"), STRICT, ["older than the minimum 12"], None),
    ("ubuntu point release", report(os_name="ubuntu", os_version="22.04.3"), STRICT, [], None),
    (
        "ubuntu too old",
        report(os_name="ubuntu", os_version="20.04"),
        STRICT,
        ["ubuntu 20.04 is older than the minimum 22.04"],
        None,
    ),
    ("OS name case", report(os_name="Debian"), STRICT, [], None),
    ("unlisted OS", report(os_name="gentoo"), STRICT, ["'gentoo' is not one the policy"], None),
    ("version not a number", report(os_version="trixie"), STRICT, ["not a dotted number"], None),
    ("unknown OS version fails", report(os_version=None), STRICT, ["OS name or version"], None),
    ("unknown OS version passes", report(os_version=None), LAX_UNKNOWN, [], "OS name"),
    ("OS rule off", report(os_name="gentoo", os_version=None), OFF, [], None),
    # patch age
    (
        "patched exactly 90 days ago",
        report(last_patch_time=int(NOW.timestamp()) - 90 * DAY),
        STRICT,
        [],
        None,
    ),
    (
        "patched 90 days and a minute ago",
        report(last_patch_time=int(NOW.timestamp()) - 90 * DAY - 60),
        STRICT,
        ["last package update was 90 days ago, policy allows 90"],
        None,
    ),
    ("patch unknown fails", report(last_patch_time=None), STRICT, ["last package update"], None),
    ("patch unknown passes", report(last_patch_time=None), LAX_UNKNOWN, [], "package update"),
    ("patch rule off", report(last_patch_time=0), OFF, [], None),
    # clock offset
    ("clock 120 s off", report(clock_offset_ms=120_000), STRICT, [], None),
    (
        "clock 120.001 s behind",
        report(clock_offset_ms=-120_001),
        STRICT,
        ["clock is -120.0 s"],
        None,
    ),
    (
        "clock unknown fails",
        report(clock_offset_ms=None),
        STRICT,
        ["clock offset is unknown"],
        None,
    ),
    ("clock unknown passes", report(clock_offset_ms=None), LAX_UNKNOWN, [], "clock offset"),
    ("clock rule off", report(clock_offset_ms=10**9), OFF, [], None),
    # firewall
    ("no firewall", report(firewall_enabled=False), STRICT, ["no firewall is filtering"], None),
    ("firewall unknown fails", report(firewall_enabled=None), STRICT, ["firewall state"], None),
    ("firewall unknown passes", report(firewall_enabled=None), LAX_UNKNOWN, [], "firewall"),
    ("firewall not required", report(firewall_enabled=False), Policy(), [], None),
    # disk encryption
    ("plain disk", report(disk_encrypted=False), STRICT, ["not encrypted"], None),
    ("disk unknown fails", report(disk_encrypted=None), STRICT, ["root disk encryption"], None),
    ("disk unknown passes", report(disk_encrypted=None), LAX_UNKNOWN, [], "disk encryption"),
    ("disk not required", report(disk_encrypted=None), Policy(), [], None),
    # processes
    (
        "required missing",
        report(processes=["sshd"]),
        STRICT,
        ["required process not running: edr-agent"],
        None,
    ),
    ("required, other case", report(processes=["EDR-Agent"]), STRICT, [], None),
    (
        "forbidden running",
        report(processes=["edr-agent", "in.telnetd"]),
        STRICT,
        ["forbidden process running: in.telnetd"],
        None,
    ),
    ("processes unknown fails", report(processes=None), STRICT, ["running processes"], None),
    ("processes unknown passes", report(processes=None), LAX_UNKNOWN, [], "running processes"),
    ("process rules off", report(processes=None), OFF, [], None),
    # listening ports
    (
        "telnet listening",
        report(listening_ports=[{"proto": "tcp", "address": "127.0.0.1", "port": 23}]),
        STRICT,
        ["forbidden port listening: tcp/23"],
        None,
    ),
    (
        "syslog on udp/514 is not rsh",
        report(listening_ports=[{"proto": "udp", "address": "0.0.0.0", "port": 514}]),
        STRICT,
        [],
        None,
    ),
    (
        "tftp on udp/69",
        report(listening_ports=[{"proto": "udp", "address": "::", "port": 69}]),
        STRICT,
        ["udp/69"],
        None,
    ),
    (
        "a bare number forbids both protocols",
        report(listening_ports=[{"proto": "udp", "address": "0.0.0.0", "port": 5900}]),
        Policy(forbidden_listening_ports=(5900,)),
        ["udp/5900"],
        None,
    ),
    ("ports unknown fails", report(listening_ports=None), STRICT, ["listening ports"], None),
    ("ports unknown passes", report(listening_ports=None), LAX_UNKNOWN, [], "listening ports"),
    ("port rule off", report(listening_ports=None), OFF, [], None),
    # several at once: every reason is listed
    (
        "everything wrong",
        report(age=900, os_version="10", firewall_enabled=False, processes=["telnetd"]),
        STRICT,
        ["stale", "older than", "no firewall", "required process", "forbidden process"],
        None,
    ),
]


@pytest.mark.parametrize(
    ("case", "rep", "policy", "failures", "note"), CASES, ids=[c[0] for c in CASES]
)
def test_evaluate(
    case: str, rep: Report, policy: Policy, failures: list[str], note: str | None
) -> None:
    decision = evaluate(rep, policy, NOW)
    assert decision.passed == (not failures), (case, decision)
    assert len(decision.reasons) == len(failures), decision.reasons
    for expected, reason in zip(failures, decision.reasons, strict=True):
        assert expected in reason, (expected, reason)
    if note is None:
        assert not decision.notes, decision.notes
    else:
        assert any(note in n for n in decision.notes), decision.notes


def test_evaluate_is_pure() -> None:
    rep = report(age=200)
    first = evaluate(rep, STRICT, NOW)
    assert evaluate(rep, STRICT, NOW) == first
    assert not evaluate(rep, STRICT, NOW + timedelta(seconds=101)).passed


@pytest.mark.parametrize(
    ("text", "key"),
    [("12", (12,)), ("22.04.3 LTS", (22, 4, 3)), ("10.0.19045", (10, 0, 19045)), ("sid", None)],
)
def test_version_key(text: str, key: tuple[int, ...] | None) -> None:
    assert version_key(text) == key


def test_example_file_default_is_the_builtin_policy() -> None:
    example = load_policies(EXAMPLE)
    assert example.get("default") == Policy() == BUILTIN.get("default")
    hardened = example.get("hardened")
    assert hardened is not None and hardened.firewall_required
    assert example.require(NO_POLICY) == NO_POLICY


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[default]\nmax_report_age = 5\n", "default.max_report_age: Extra inputs"),
        ("[default]\nmax_report_age_seconds = 1\n", "greater than or equal to 10"),
        ("[default]\nmax_days_since_patch = true\n", "max_days_since_patch"),
        ("[default.unknown]\nfirewall = 'maybe'\n", "default.unknown.firewall"),
        ("[default]\nforbidden_listening_ports = ['ssh']\n", "'ssh': use a port number"),
        ("[default]\nforbidden_listening_ports = [70000]\n", "use a port number"),
        ("[default.min_os_versions]\ndebian = 'bookworm'\n", "a dotted number"),
        ("[none]\n", "reserved or invalid"),
        ('["Bad Name"]\n', "reserved or invalid"),
        ("top = 1\n", "must be a table"),
        ("", "defines no policy"),
        ("[default\n", "not valid TOML"),
    ],
)
def test_bad_policy_files_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_policies(text, "policies.toml")
    assert "policies.toml" in str(info.value)


def test_require_names_the_defined_policies(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("[default]\n[ct]\nmax_report_age_seconds = 60\n")
    policies = load_policies(path)
    assert policies.longest_report_age == timedelta(seconds=300)
    with pytest.raises(
        ConfigError, match=r"no posture policy 'mri' in .*p.toml.*ct, default, none"
    ):
        policies.require("mri")
    with pytest.raises(ConfigError, match="cannot read the posture policy file"):
        load_policies(tmp_path / "missing.toml")
