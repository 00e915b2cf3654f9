"""The agent's facts: parsers on fixtures, then the live functions on this very host."""

from __future__ import annotations

import gzip
import os
import socket
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import psutil
import pytest

from gateway.posture import facts
from gateway.posture.facts import Unknown
from gateway.posture.report import FACT_NAMES

CET = timezone(timedelta(hours=1))

APT_HISTORY = """\

Start-Date: 2026-09-22  04:45:19
Commandline: apt-get -y upgrade
Upgrade: linux-libc-dev:amd64 (6.1.140-1, 6.1.187-1)
End-Date: 2026-09-22  04:45:40

Start-Date: 2026-11-30  10:00:00
Commandline: apt-get install -y dcmtk
Install: dcmtk:amd64 (3.6.7-9)
End-Date: 2026-11-30  10:00:05

Start-Date: 2026-10-01  08:00:00
Commandline: /usr/bin/unattended-upgrade
Upgrade: openssl:amd64 (3.0.15-1~deb12u1, 3.0.17-1~deb12u2)
End-Date: 2026-10-01  08:00:12
"""

DPKG_LOG = """\
2026-09-22 04:45:23 upgrade linux-libc-dev:amd64 6.1.140-1 6.1.187-1
2026-09-22 04:45:23 status half-configured linux-libc-dev:amd64 6.1.187-1
2026-11-30 10:00:03 install dcmtk:amd64 <none> 3.6.7-9
2026-11-30 10:00:04 status installed dcmtk:amd64 3.6.7-9
"""


def test_os_release() -> None:
    text = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_ID="12"\nID=debian\n# c\n'
    assert facts.parse_os_release(text) == {
        "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)",
        "VERSION_ID": "12",
        "ID": "debian",
    }


def test_apt_history_counts_upgrades_only() -> None:
    assert facts.parse_apt_history(APT_HISTORY, CET) == datetime(2026, 10, 1, 8, 0, 12, tzinfo=CET)
    only_install = APT_HISTORY.split("\n\n")[1]
    assert "Install:" in only_install
    assert facts.parse_apt_history(only_install, CET) is None
    assert facts.parse_apt_history("", UTC) is None


def test_dpkg_log_counts_upgrades_only() -> None:
    assert facts.parse_dpkg_log(DPKG_LOG, UTC) == datetime(2026, 9, 22, 4, 45, 23, tzinfo=UTC)
    assert facts.parse_dpkg_log(DPKG_LOG.splitlines()[2], UTC) is None


def _debian_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/log/apt").mkdir(parents=True)
    (root / "var/lib/apt/periodic").mkdir(parents=True)
    return root


def test_last_patch_newest_source_wins(tmp_path: Path) -> None:
    root = _debian_root(tmp_path)
    (root / "var/log/apt/history.log").write_text(APT_HISTORY)
    (root / "var/log/dpkg.log").write_text(DPKG_LOG)
    assert facts.last_patch_from(root, UTC) == datetime(2026, 10, 1, 8, 0, 12, tzinfo=UTC)
    stamp = root / "var/lib/apt/periodic/upgrade-stamp"
    stamp.touch()
    when = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
    os.utime(stamp, (when.timestamp(), when.timestamp()))
    assert facts.last_patch_from(root, UTC) == when


def test_last_patch_reads_rotated_logs(tmp_path: Path) -> None:
    """After logrotate the current log may hold only installs; the upgrade is in .1.gz."""
    root = _debian_root(tmp_path)
    (root / "var/log/apt/history.log").write_text("Start-Date: 2026-11-30  10:00:00\n")
    with gzip.open(root / "var/log/apt/history.log.2.gz", "wt") as f:
        f.write(APT_HISTORY.replace("2026-10-01", "2026-08-01"))
    with gzip.open(root / "var/log/apt/history.log.1.gz", "wt") as f:
        f.write(APT_HISTORY)
    assert facts.last_patch_from(root, UTC) == datetime(2026, 10, 1, 8, 0, 12, tzinfo=UTC)


def test_last_patch_unknown_without_evidence(tmp_path: Path) -> None:
    assert isinstance(facts.last_patch_from(tmp_path, UTC), Unknown)  # not a dpkg system
    root = _debian_root(tmp_path)
    found = facts.last_patch_from(root, UTC)
    assert isinstance(found, Unknown) and "no package upgrade recorded" in found.reason
    (root / "var/log/dpkg.log").write_text(DPKG_LOG.splitlines()[2] + "\n")
    assert isinstance(facts.last_patch_from(root, UTC), Unknown)


NFT_DEBIAN_DEFAULT = """{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
 {"table": {"family": "inet", "name": "filter", "handle": 1}},
 {"chain": {"family": "inet", "table": "filter", "name": "input", "handle": 1, "type": "filter",
   "hook": "input", "prio": 0, "policy": "accept"}},
 {"chain": {"family": "inet", "table": "filter", "name": "forward", "handle": 2,
   "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}}]}"""
NFT_DROP_POLICY = NFT_DEBIAN_DEFAULT.replace(
    '"policy": "accept"}},\n {"chain"', '"policy": "drop"}},\n {"chain"'
)
NFT_REJECT_RULE = (
    NFT_DEBIAN_DEFAULT[:-2]
    + """,
 {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 4, "expr": [
   {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
    "right": 23}}, {"reject": null}]}}]}"""
)
NFT_ACCEPT_RULE = NFT_REJECT_RULE.replace('{"reject": null}', '{"accept": null}')


@pytest.mark.parametrize(
    ("text", "filtering"),
    [
        (NFT_DEBIAN_DEFAULT, False),
        (NFT_DROP_POLICY, True),
        (NFT_REJECT_RULE, True),
        (NFT_ACCEPT_RULE, False),
        ('{"nftables": []}', False),
    ],
)
def test_nft_ruleset(text: str, filtering: bool) -> None:
    assert facts.parse_nft_ruleset(text) is filtering


IPTABLES_EMPTY = """# Generated by iptables-save v1.8.9
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
"""


@pytest.mark.parametrize(
    ("text", "filtering"),
    [
        (IPTABLES_EMPTY, False),
        ("", False),
        (IPTABLES_EMPTY.replace(":INPUT ACCEPT", ":INPUT DROP"), True),
        (IPTABLES_EMPTY.replace("COMMIT", "-A INPUT -p tcp --dport 23 -j REJECT\nCOMMIT"), True),
        (IPTABLES_EMPTY.replace("COMMIT", "-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT"), False),
        (IPTABLES_EMPTY.replace("COMMIT", "-A ufw-reject-input -j DROP\nCOMMIT"), True),
    ],
)
def test_iptables_save(text: str, filtering: bool) -> None:
    assert facts.parse_iptables_save(text) is filtering


@pytest.mark.parametrize(
    ("text", "enabled"),
    [("ENABLED=yes\nLOGLEVEL=low\n", True), ("ENABLED=no\n", False), ("# nothing\n", None)],
)
def test_ufw_conf(text: str, enabled: bool | None) -> None:
    assert facts.parse_ufw_conf(text) is enabled


def _link(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    """A /sys with vda (plain), vda2 (a partition), dm-0 = LUKS on vda2, dm-1 = LVM on dm-0,
    dm-2 = LVM on vda3 (no encryption)."""
    sys = tmp_path / "sys"
    disk = sys / "devices/pci0000:00/virtio1/block/vda"
    for part in ("vda2", "vda3"):
        (disk / part).mkdir(parents=True)
        (disk / part / "partition").write_text(part[-1] + "\n")
    virt = sys / "devices/virtual/block"
    for dm, uuid in (
        ("dm-0", "CRYPT-LUKS2-0f1e-root_crypt"),
        ("dm-1", "LVM-abc"),
        ("dm-2", "LVM-d"),
    ):
        (virt / dm / "dm").mkdir(parents=True)
        (virt / dm / "dm" / "uuid").write_text(uuid + "\n")
        (virt / dm / "slaves").mkdir()
    _link(virt / "dm-0/slaves/vda2", "../../../../pci0000:00/virtio1/block/vda/vda2")
    _link(virt / "dm-1/slaves/dm-0", "../../dm-0")
    _link(virt / "dm-2/slaves/vda3", "../../../../pci0000:00/virtio1/block/vda/vda3")
    for devno, target in [
        ("254:0", "../../devices/pci0000:00/virtio1/block/vda"),
        ("254:2", "../../devices/pci0000:00/virtio1/block/vda/vda2"),
        ("253:0", "../../devices/virtual/block/dm-0"),
        ("253:1", "../../devices/virtual/block/dm-1"),
        ("253:2", "../../devices/virtual/block/dm-2"),
    ]:
        _link(sys / "dev/block" / devno, target)
    return sys


def _mountinfo(devno: str, fstype: str = "ext4", source: str = "/dev/vda") -> str:
    return (
        "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
        f"27 1 {devno} / / rw,relatime - {fstype} {source} rw\n"
        "30 27 0:25 / /run rw - tmpfs tmpfs rw\n"
    )


def _no_stat(path: str) -> str:
    raise AssertionError(f"stat {path} not expected")


@pytest.mark.parametrize(
    ("mountinfo", "expected"),
    [
        (_mountinfo("254:0"), False),  # root on a whole plain disk (this CI VM)
        (_mountinfo("254:2"), False),  # a plain partition
        (_mountinfo("253:0", source="/dev/mapper/root_crypt"), True),  # LUKS
        (_mountinfo("253:1", source="/dev/mapper/vg-root"), True),  # LVM on LUKS
        (_mountinfo("253:2", source="/dev/mapper/vg-plain"), False),  # LVM, no crypt
    ],
)
def test_root_encryption_from_sysfs(sysfs: Path, mountinfo: str, expected: bool) -> None:
    assert facts.root_encrypted_from(sysfs, mountinfo, _no_stat) is expected


def test_root_encryption_unknowns(sysfs: Path) -> None:
    overlay = facts.root_encrypted_from(sysfs, _mountinfo("0:45", "overlay", "overlay"), _no_stat)
    assert isinstance(overlay, Unknown) and "not a block device" in overlay.reason
    assert isinstance(facts.root_encrypted_from(sysfs, _mountinfo("9:9"), _no_stat), Unknown)
    assert isinstance(facts.root_encrypted_from(sysfs, "", _no_stat), Unknown)
    # btrfs shows an anonymous device number: the source device decides.
    btrfs = _mountinfo("0:30", "btrfs", "/dev/mapper/root_crypt")
    assert facts.root_encrypted_from(sysfs, btrfs, lambda _p: "253:0") is True

    def gone(path: str) -> str:
        raise FileNotFoundError(2, "No such file or directory", path)

    assert isinstance(facts.root_encrypted_from(sysfs, btrfs, gone), Unknown)


def test_listening_sockets_of_this_process() -> None:
    """Real sockets opened here show up; a connected UDP socket does not."""
    with (
        socket.socket() as tcp,
        socket.socket(type=socket.SOCK_DGRAM) as udp,
        socket.socket(type=socket.SOCK_DGRAM) as connected,
    ):
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        udp.bind(("127.0.0.1", 0))
        connected.connect(("127.0.0.1", 9))
        found = facts.listening_ports()
        assert not isinstance(found, Unknown)
        assert {"proto": "tcp", "address": "127.0.0.1", "port": tcp.getsockname()[1]} in found
        assert {"proto": "udp", "address": "127.0.0.1", "port": udp.getsockname()[1]} in found
        assert not any(p["port"] == connected.getsockname()[1] for p in found)
        assert found == sorted(found, key=lambda p: (p["proto"], p["address"], p["port"]))


def test_live_facts_on_this_host() -> None:
    values, unknown = facts.collect()
    assert set(values) | {"clock_offset_ms"} == set(FACT_NAMES)
    for name, value in values.items():
        assert (value is None) == (name in unknown), name
    assert psutil.Process().name() in values["processes"]
    assert abs(values["boot_time"] - psutil.boot_time()) <= 2  # moves if NTP steps the clock
    assert values["kernel"] == os.uname().release
    assert isinstance(values["os_name"], str) and values["os_name"]


def test_a_failing_collector_makes_its_fact_unknown() -> None:
    def broken() -> str:
        raise PermissionError("nope")

    values, unknown = facts.collect({"os_name": broken, "kernel": lambda: "6.1"})
    assert values == {"os_name": None, "kernel": "6.1"}
    assert unknown == {"os_name": "PermissionError: nope"}
