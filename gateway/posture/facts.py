"""What the agent gathers on the sending host: each fact a small function, value or Unknown.

A fact the agent cannot establish is reported as unknown, with the reason, and never
guessed: "no firewall found" is only said when the kernel's rule set was actually read.
The parsing parts are pure functions of text or of a directory tree, so they are tested with
fixtures; the rest is a thin call to psutil or the OS.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import psutil

T = TypeVar("T")


@dataclass(frozen=True)
class Unknown:
    """A fact the agent could not establish, and why."""

    reason: str


Fact: TypeAlias = T | Unknown

_COMMAND_TIMEOUT = 10.0


def _run(argv: list[str]) -> tuple[int, str, str] | None:
    """Run a read-only system tool; None if it is not installed."""
    exe = shutil.which(argv[0])
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, *argv[1:]], capture_output=True, text=True, timeout=_COMMAND_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return (-1, "", str(e))
    return done.returncode, done.stdout, done.stderr


# --- operating system ----------------------------------------------------------------------


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value pairs of an os-release file (quotes removed)."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Z0-9_]+)=(.*)$", line.strip())
        if m:
            value = m.group(2).strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            out[m.group(1)] = value
    return out


def _os_release() -> dict[str, str] | Unknown:
    for path in (Path("/etc/os-release"), Path("/usr/lib/os-release")):
        try:
            return parse_os_release(path.read_text(errors="replace"))
        except OSError:
            continue
    return Unknown("no readable /etc/os-release")


def os_name() -> Fact[str]:
    """The OS: os-release ID on Linux ('debian', 'ubuntu', 'rhel'), else 'macos'/'windows'."""
    system = platform.system()
    if system == "Linux":
        rel = _os_release()
        if isinstance(rel, Unknown):
            return rel
        return rel.get("ID") or Unknown("os-release has no ID")
    if system == "Darwin":
        return "macos"
    if system == "Windows":
        return "windows"
    return system.lower() or Unknown("platform.system() is empty")


def os_version() -> Fact[str]:
    """The OS release: os-release VERSION_ID on Linux, the macOS or Windows build version."""
    system = platform.system()
    if system == "Linux":
        rel = _os_release()
        if isinstance(rel, Unknown):
            return rel
        return rel.get("VERSION_ID") or Unknown("os-release has no VERSION_ID (rolling release?)")
    if system == "Darwin":
        return platform.mac_ver()[0] or Unknown("platform.mac_ver() is empty")
    if system == "Windows":
        return platform.version() or Unknown("platform.version() is empty")
    return Unknown(f"no version source for {system}")


def kernel() -> Fact[str]:
    """The running kernel's release."""
    return platform.release() or Unknown("platform.release() is empty")


def boot_time() -> Fact[int]:
    """When the host booted, in Unix seconds."""
    return int(psutil.boot_time())


# --- last package update (Debian/Ubuntu: apt and dpkg) -------------------------------------


def parse_apt_history(text: str, tz: tzinfo) -> datetime | None:
    """End time of the last apt run that upgraded packages, from /var/log/apt/history.log.

    Entries are blank-line separated; only those with an ``Upgrade:`` line count (installing
    a new package patches nothing that was already there). Times are local (``tz``).
    """
    last = None
    for entry in re.split(r"\n\s*\n", text):
        if not re.search(r"^Upgrade: ", entry, re.M):
            continue
        m = re.search(r"^End-Date: (\d{4}-\d{2}-\d{2})\s+(\d{2}:\d{2}:\d{2})", entry, re.M)
        m = m or re.search(r"^Start-Date: (\d{4}-\d{2}-\d{2})\s+(\d{2}:\d{2}:\d{2})", entry, re.M)
        if m:
            when = datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}").replace(tzinfo=tz)
            last = when if last is None or when > last else last
    return last


def parse_dpkg_log(text: str, tz: tzinfo) -> datetime | None:
    """Time of the last ``upgrade`` action in /var/log/dpkg.log (local time)."""
    last = None
    for m in re.finditer(r"^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}) upgrade ", text, re.M):
        when = datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}").replace(tzinfo=tz)
        last = when if last is None or when > last else last
    return last


def _rotations(path: Path) -> list[Path]:
    """``path``, then its rotations newest first (``.1``, ``.2.gz``, ...)."""

    def number(p: Path) -> int:
        m = re.search(r"\.(\d+)(?:\.gz)?$", p.name)
        return int(m.group(1)) if m else 0

    rotated = [p for p in path.parent.glob(path.name + ".*") if number(p) > 0]
    return [path, *sorted(rotated, key=number)]


def _read_log(path: Path) -> str:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", errors="replace") as f:
            return f.read()
    return path.read_text(errors="replace")


def _newest_in_logs(
    path: Path, parse: Callable[[str, tzinfo], datetime | None], tz: tzinfo, problems: list[str]
) -> datetime | None:
    """The newest upgrade in ``path`` or, failing that, in its rotations (newest first)."""
    for candidate in _rotations(path):
        try:
            found = parse(_read_log(candidate), tz)
        except FileNotFoundError:
            continue
        except (OSError, EOFError) as e:
            problems.append(f"{candidate}: {getattr(e, 'strerror', None) or e}")
            continue
        if found is not None:
            return found
    return None


UPGRADE_STAMPS = ("upgrade-stamp", "unattended-upgrades-stamp")


def last_patch_from(root: Path, tz: tzinfo) -> Fact[datetime]:
    """The newest evidence of a package upgrade under ``root`` (``/`` on a real host).

    Sources: apt's history log, dpkg's log (and their rotations), and the stamps
    unattended-upgrades touches in /var/lib/apt/periodic after it ran.
    """
    if not (root / "var/lib/dpkg").is_dir():
        return Unknown("no dpkg package database: only apt/dpkg hosts are supported")
    problems: list[str] = []
    found = [
        _newest_in_logs(root / "var/log/apt/history.log", parse_apt_history, tz, problems),
        _newest_in_logs(root / "var/log/dpkg.log", parse_dpkg_log, tz, problems),
    ]
    for stamp in UPGRADE_STAMPS:
        try:
            mtime = (root / "var/lib/apt/periodic" / stamp).stat().st_mtime
            found.append(datetime.fromtimestamp(mtime, tz))
        except FileNotFoundError:
            pass
        except OSError as e:
            problems.append(f"{stamp}: {e.strerror}")
    dates = [d for d in found if d is not None]
    if dates:
        return max(dates)
    why = "no package upgrade recorded in apt/dpkg logs"
    return Unknown(why + (f" ({'; '.join(problems)})" if problems else ""))


def last_patch_time() -> Fact[int]:
    """When packages were last upgraded, Unix seconds; unknown on non-apt systems."""
    if platform.system() != "Linux":
        return Unknown(f"package update history is not read on {platform.system()}")
    local = datetime.now().astimezone().tzinfo
    assert local is not None
    found = last_patch_from(Path("/"), local)
    return found if isinstance(found, Unknown) else int(found.timestamp())


# --- firewall -----------------------------------------------------------------------------


def parse_nft_ruleset(text: str) -> bool:
    """``nft -j list ruleset``: filtering if a base chain drops by default or any rule
    drops or rejects."""
    doc = json.loads(text)
    for item in doc.get("nftables", []):
        chain = item.get("chain")
        if chain and chain.get("hook") and chain.get("policy") == "drop":
            return True
        rule = item.get("rule")
        if rule and any(
            isinstance(e, dict) and ("drop" in e or "reject" in e) for e in rule.get("expr", [])
        ):
            return True
    return False


def parse_iptables_save(text: str) -> bool:
    """``iptables-save``: filtering if a built-in chain's policy is DROP or a rule drops or
    rejects."""
    for line in text.splitlines():
        if re.match(r"^:(INPUT|FORWARD|OUTPUT) DROP\b", line):
            return True
        if line.startswith("-A ") and re.search(r"\s-j (DROP|REJECT)\b", line):
            return True
    return False


def parse_ufw_conf(text: str) -> bool | None:
    """/etc/ufw/ufw.conf: True if ufw is enabled; None when it says nothing either way."""
    m = re.search(r"^\s*ENABLED\s*=\s*(\w+)", text, re.M)
    if not m:
        return None
    return m.group(1).lower() == "yes"


def firewall_enabled() -> Fact[bool]:
    """Whether packets are filtered on this host.

    True as soon as one source shows filtering (nftables, iptables, ufw enabled, firewalld
    running). False only when the kernel's rule set was read (nft or iptables-save) and
    holds no filtering; if no source could be read, unknown.
    """
    if platform.system() != "Linux":
        return Unknown(f"firewall state is not read on {platform.system()}")
    tried: list[str] = []
    read_kernel_rules = False
    nft = _run(["nft", "-j", "list", "ruleset"])
    if nft is None:
        tried.append("nft not installed")
    elif nft[0] == 0:
        try:
            if parse_nft_ruleset(nft[1] or "{}"):
                return True
            read_kernel_rules = True
        except (ValueError, AttributeError):
            tried.append("nft printed no JSON")
    else:
        tried.append(f"nft: {nft[2].strip() or 'exit ' + str(nft[0])}")
    ipt = _run(["iptables-save"])
    if ipt is None:
        tried.append("iptables-save not installed")
    elif ipt[0] == 0:
        if parse_iptables_save(ipt[1]):
            return True
        read_kernel_rules = True
    else:
        tried.append(f"iptables-save: {ipt[2].strip() or 'exit ' + str(ipt[0])}")
    try:
        if parse_ufw_conf(Path("/etc/ufw/ufw.conf").read_text()):
            return True
    except OSError:
        tried.append("no readable /etc/ufw/ufw.conf")
    fwd = _run(["firewall-cmd", "--state"])
    if fwd is not None and fwd[0] == 0 and fwd[1].strip() == "running":
        return True
    if read_kernel_rules:
        return False
    return Unknown("; ".join(tried))


# --- disk encryption ----------------------------------------------------------------------


def root_device(mountinfo: str) -> tuple[str, str, str] | None:
    """(major:minor, fs type, source) of the file system mounted at ``/`` (the last one)."""
    found = None
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if sep and len(fields) >= 5 and fields[4] == "/":
            rest = right.split()
            found = (fields[2], rest[0] if rest else "", rest[1] if len(rest) > 1 else "")
    return found


def _block_encrypted(dev: Path, depth: int = 0) -> bool:
    """dm-crypt anywhere beneath ``dev`` (LUKS, plain dm-crypt; LVM or RAID on top of it)."""
    if depth > 16:
        return False
    uuid = dev / "dm" / "uuid"
    if uuid.is_file() and uuid.read_text().strip().startswith("CRYPT-"):
        return True
    slaves = sorted((dev / "slaves").iterdir()) if (dev / "slaves").is_dir() else []
    if slaves:
        return all(_block_encrypted(s.resolve(), depth + 1) for s in slaves)
    if (dev / "partition").is_file():  # a partition of a dm device (a partitioned LUKS map)
        return _block_encrypted(dev.resolve().parent, depth + 1)
    return False


def root_encrypted_from(sysfs: Path, mountinfo: str, stat_rdev: Callable[[str], str]) -> Fact[bool]:
    """Whether the root file system sits on dm-crypt, read from ``sysfs`` (``/sys``).

    ``stat_rdev`` maps a device path to major:minor, for file systems such as btrfs that
    report an anonymous device number in mountinfo.
    """
    root = root_device(mountinfo)
    if root is None:
        return Unknown("no root file system in mountinfo")
    devno, fstype, source = root
    if devno.startswith("0:"):
        if not source.startswith("/dev/"):
            return Unknown(f"root is {fstype} on {source!r}, not a block device")
        try:
            devno = stat_rdev(source)
        except OSError as e:
            return Unknown(f"cannot stat {source}: {e.strerror}")
    dev = sysfs / "dev" / "block" / devno
    if not dev.exists():
        return Unknown(f"{dev} does not exist")
    try:
        return _block_encrypted(dev.resolve())
    except OSError as e:
        return Unknown(f"cannot read {dev}: {e.strerror}")


def _rdev(path: str) -> str:
    st = os.stat(path)
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def disk_encrypted() -> Fact[bool]:
    """Whether the root file system is on dm-crypt/LUKS (Linux); unknown elsewhere."""
    if platform.system() != "Linux":
        return Unknown(f"disk encryption is not read on {platform.system()}")
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    except OSError as e:
        return Unknown(f"cannot read /proc/self/mountinfo: {e.strerror}")
    return root_encrypted_from(Path("/sys"), mountinfo, _rdev)


# --- processes, sockets, users -------------------------------------------------------------


def processes() -> Fact[list[str]]:
    """Names of the running processes, sorted, each once."""
    names = set()
    for p in psutil.process_iter(["name"]):
        name = p.info.get("name")
        if name:
            names.add(str(name))
    return sorted(names)


def listening_from(conns: Iterable[Any]) -> list[dict[str, Any]]:
    """Sockets that accept traffic: TCP in LISTEN, UDP bound without a peer; sorted, unique."""
    out = set()
    for c in conns:
        if not c.laddr:
            continue
        if c.type == 1 and c.status == psutil.CONN_LISTEN:  # SOCK_STREAM
            out.add(("tcp", c.laddr.ip, c.laddr.port))
        elif c.type == 2 and not c.raddr:  # SOCK_DGRAM
            out.add(("udp", c.laddr.ip, c.laddr.port))
    return [{"proto": p, "address": a, "port": n} for p, a, n in sorted(out)]


def listening_ports() -> Fact[list[dict[str, Any]]]:
    """Every listening TCP port and bound UDP port, with its address."""
    try:
        return listening_from(psutil.net_connections(kind="inet"))
    except psutil.AccessDenied:
        return Unknown("listing sockets needs more privileges here")


def logged_in_users() -> Fact[list[str]]:
    """Users with a login session (utmp), sorted, each once."""
    if platform.system() == "Linux" and not any(
        Path(p).exists() for p in ("/var/run/utmp", "/run/utmp")
    ):
        return Unknown("no utmp file: login sessions are not recorded on this host")
    return sorted({u.name for u in psutil.users()})


# --- all together -------------------------------------------------------------------------

COLLECTORS: dict[str, Callable[[], Fact[Any]]] = {
    "os_name": os_name,
    "os_version": os_version,
    "kernel": kernel,
    "boot_time": boot_time,
    "last_patch_time": last_patch_time,
    "firewall_enabled": firewall_enabled,
    "disk_encrypted": disk_encrypted,
    "processes": processes,
    "listening_ports": listening_ports,
    "logged_in_users": logged_in_users,
}


def collect(
    collectors: dict[str, Callable[[], Fact[Any]]] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Run every collector: (facts, reasons for the unknown ones). A collector that fails
    with an error makes its fact unknown, with the error as the reason, never the report."""
    values: dict[str, Any] = {}
    unknown: dict[str, str] = {}
    for name, collector in (collectors or COLLECTORS).items():
        try:
            value = collector()
        except Exception as e:  # a broken source must not take the other facts down
            value = Unknown(f"{type(e).__name__}: {e}")
        if isinstance(value, Unknown):
            values[name] = None
            unknown[name] = value.reason
        else:
            values[name] = value
    return values, unknown
