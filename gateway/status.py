"""What ``ztbridge status`` (and, later, an admin page) shows: one query service, no printing.

Why in the core: the admin page must show the same figures as the command line; a page that
copied the CLI's queries would drift from it. ``gather`` returns plain data; the CLI and a
page only format it.

Whether ``ztbridge up`` runs is told by a lock file it holds (``run/up.json``, flock'd for
its lifetime, released by the kernel when it dies) that also names its pid and listeners.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from gateway.anchoring.outbox import outbox_counts
from gateway.errors import ConfigError, StorageError
from gateway.index.models import audit_events, devices, instances, studies
from gateway.pki import PkiPaths, certificate_fingerprint, portal_certificate
from gateway.search import Search
from gateway.service import Gateway
from gateway.settings import Settings

UP_FILE = Path("run") / "up.json"


class UpMarker:
    """The running ``up`` process's lock file: held while it runs, read by ``status``."""

    def __init__(self, home: Path) -> None:
        self.path = home / UP_FILE
        self._fd: int | None = None

    def acquire(self, listening: list[str], attempts: int = 20) -> bool:
        """Take the lock and record pid and listeners; False if another ``up`` holds it.

        Retries briefly: ``running()`` in another process holds a shared lock for a moment.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        for attempt in range(attempts):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == attempts - 1:
                    os.close(fd)
                    return False
                time.sleep(0.05)
        body = {"pid": os.getpid(), "listening": listening, "started_at": int(time.time())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(body).encode(), 0)
        self._fd = fd
        return True

    def update(self, listening: list[str]) -> None:
        """Record the listeners once they are open."""
        if self._fd is None:
            return
        body = {"pid": os.getpid(), "listening": listening, "started_at": int(time.time())}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(body).encode(), 0)

    def release(self) -> None:
        """Give the lock up and leave no stale record behind."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def running(self) -> dict[str, Any] | None:
        """The running ``up``'s record (pid, listeners), or None when none holds the lock."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StorageError(f"cannot read {self.path}: {e.strerror}") from e
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # held exclusively: up runs
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
                return None
            try:
                found = json.loads(os.pread(fd, 65536, 0) or b"{}")
            except ValueError:
                found = {}
            return found if isinstance(found, dict) else {}
        finally:
            os.close(fd)


@dataclass(frozen=True)
class Status:
    """Everything ``status`` reports, as data."""

    home: Path
    up: dict[str, Any] | None
    dicom: str
    dicom_tls: str
    portal: str
    posture_policies: str
    index: str
    store: str
    custodian_key: str
    devices: int
    studies: int
    instances: int
    stored_bytes: int
    audit_events: int
    ledger: str
    # Studies stored without a Patient ID (or otherwise flagged): study UID -> why.
    to_reconcile: tuple[tuple[str, str], ...] = ()

    def rows(self) -> list[tuple[str, str]]:
        """Label and value per line, in the order a person reads them."""
        if self.up is None:
            up = "not running (start it with 'ztbridge up')"
        else:
            up = f"running, pid {self.up.get('pid', '?')}"
            if self.up.get("listening"):
                up += ": " + ", ".join(str(x) for x in self.up["listening"])
        return [
            ("home", str(self.home)),
            ("ztbridge up", up),
            ("DICOM", self.dicom),
            ("DICOM TLS", self.dicom_tls),
            ("portal", self.portal),
            ("posture policies", self.posture_policies),
            ("index", self.index),
            ("store", self.store),
            ("custodian key", self.custodian_key),
            ("devices", str(self.devices)),
            ("studies", str(self.studies)),
            ("instances", f"{self.instances} ({self.stored_bytes / 1e6:.1f} MB)"),
            ("audit events", str(self.audit_events)),
            ("ledger", self.ledger),
            ("to reconcile", self._reconcile_line()),
        ]

    def _reconcile_line(self) -> str:
        if not self.to_reconcile:
            return "none"
        shown = ", ".join(f"{uid} ({why})" for uid, why in self.to_reconcile[:5])
        more = f" and {len(self.to_reconcile) - 5} more" if len(self.to_reconcile) > 5 else ""
        return f"{len(self.to_reconcile)} studies: {shown}{more} (see 'ztbridge studies')"


def tls_line(s: Settings) -> str:
    """Whether ``up`` listens for DICOM TLS, where, and if not, why not."""
    if s.tls.enabled == "off":
        return 'off (tls.enabled = "off")'
    if not PkiPaths(s.home).exists():
        if s.tls.enabled == "on":
            return f"port {s.tls.port}, but no CA yet: 'ztbridge up' fails until 'ztbridge ca init'"
        return "off (no CA yet: 'ztbridge ca init' turns it on)"
    return f"{s.dicom.ae_title} on {s.dicom.host}:{s.tls.port}"


def portal_line(s: Settings) -> str:
    """Where the portal (posture reports) listens, or why it is off."""
    p = s.portal
    found = portal_certificate(s.home, p.tls_cert_file, p.tls_key_file)
    if found is not None:
        try:
            fp = f"SHA-256 {certificate_fingerprint(found[0])}"
        except ConfigError as e:
            fp = f"unreadable: {e}"
        return f"https://{p.host}:{p.port} (certificate {found[0]}, {fp})"
    if p.allow_plain_http:
        return f"http://{p.host}:{p.port} (plain HTTP: development only)"
    return (
        f"https://{p.host}:{p.port} (no certificate yet: the next 'ztbridge up' makes a"
        " self-signed one, or run 'ztbridge ca init')"
    )


def ledger_line(gw: Gateway) -> str:
    """One line on anchoring (the chain itself: ``ztbridge chain info``)."""
    if gw.anchoring is None:
        return "off ([ledger] enabled = false)"
    c = outbox_counts(gw.db)
    line = (
        f"{gw.settings.ledger.backend}; {c.batches_anchored} batches anchored, pending anchors:"
        f" {c.batches_pending} batches + {c.unbatched_instances} instances not yet sealed,"
        f" audit {c.audit_anchored_to}/{c.audit_head} anchored"
    )
    if c.batches_conflict:
        line += f"; {c.batches_conflict} CONFLICTS (ztbridge chain info)"
    return line


def gather(gw: Gateway) -> Status:
    """Counts from the index, where things live, and whether ``up`` runs."""
    with gw.db.read() as conn:
        n_dev = conn.execute(select(func.count()).select_from(devices)).scalar_one()
        n_std = conn.execute(select(func.count()).select_from(studies)).scalar_one()
        n_ins, size = conn.execute(
            select(func.count(), func.coalesce(func.sum(instances.c.size), 0))
        ).one()
        n_aud = conn.execute(select(func.count()).select_from(audit_events)).scalar_one()
    s = gw.settings
    return Status(
        home=s.home.resolve(),
        up=UpMarker(s.home).running(),
        dicom=f"{s.dicom.ae_title} on {s.dicom.host}:{s.dicom.port}",
        dicom_tls=tls_line(s),
        portal=portal_line(s),
        posture_policies=(
            f"{', '.join(gw.posture.policies.names())} from {gw.posture.policies.source}"
        ),
        index=s.index_url.split("@")[-1],
        store=f"{s.store.backend} at {s.home / 'store'}",
        custodian_key=f"{gw.custodian.kem}, {gw.keys_dir / 'custodian.json'}",
        devices=int(n_dev),
        studies=int(n_std),
        instances=int(n_ins),
        stored_bytes=int(size),
        audit_events=int(n_aud),
        ledger=ledger_line(gw),
        to_reconcile=_to_reconcile(gw),
    )


def _to_reconcile(gw: Gateway) -> tuple[tuple[str, str], ...]:
    cipher = gw.db.cipher
    if cipher is None:
        return ()
    return tuple(
        (r.study_uid, r.reconcile or "flagged") for r in Search(gw.db, cipher).to_reconcile()
    )


@dataclass(frozen=True)
class DeviceView:
    """One registered device as ``device list`` (or an admin page's table) shows it."""

    id: int
    ae_title: str
    networks: tuple[str, ...]
    name: str
    active: bool
    posture_policy: str | None  # None: not enrolled; NO_POLICY: not required
    require_tls: bool
    certificates: int
    user_identity: str | None  # described, e.g. "passcode (user mr3t)"


def device_views(gw: Gateway) -> list[DeviceView]:
    """Every device with its posture policy, TLS requirement, certificates and identity."""
    from gateway.credentials import CredentialStore
    from gateway.identity import describe

    policies = gw.posture.policies_by_device()
    creds = CredentialStore(gw.db, gw.audit, gw.clock)
    views = []
    for d in gw.devices.list():
        c = creds.get(d.id)
        views.append(
            DeviceView(
                id=d.id,
                ae_title=d.ae_title,
                networks=tuple(str(n) for n in d.networks),
                name=d.name,
                active=d.active,
                posture_policy=policies.get(d.id),
                require_tls=c.require_tls,
                certificates=len(c.fingerprints),
                user_identity=describe(c.identity) if c.identity else None,
            )
        )
    return views
