"""What each device must prove beyond its AE title and address: TLS, certificate, identity.

Kept beside the device registry (not in it) so a device row stays what the first admission
checks need, and so each kind of credential can change on its own. Every change is audited.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, delete, insert, select, update

from gateway.audit import AuditEvent, AuditLog
from gateway.clock import Clock
from gateway.identity import JwtRequirement, PasscodeRequirement, Requirement
from gateway.index.database import Database
from gateway.index.models import device_certificates, device_identity, device_tls, devices
from gateway.pki import Issued


@dataclass(frozen=True)
class DeviceCredentials:
    """Admission's view of a device's TLS and identity requirements."""

    require_tls: bool = False
    fingerprints: frozenset[str] = field(default_factory=frozenset)
    identity: Requirement | None = None


@dataclass(frozen=True)
class CertificateRecord:
    """One certificate issued to a device."""

    fingerprint: str
    serial: str
    not_after: str
    issued_at: str
    revoked_at: str | None


def _requirement(row: object) -> Requirement | None:
    if row is None:
        return None
    r = row._mapping  # type: ignore[attr-defined]
    if r["kind"] == "passcode":
        return PasscodeRequirement(r["username"], r["passcode_hash"])
    return JwtRequirement(r["jwt_issuer"], r["jwt_audience"], r["jwt_public_key"], r["jwt_subject"])


class CredentialStore:
    """Reads and changes device credentials."""

    def __init__(self, db: Database, audit: AuditLog, clock: Clock) -> None:
        self._db = db
        self._audit = audit
        self._clock = clock

    def get(self, device_id: int) -> DeviceCredentials:
        """The device's requirements and its active certificate fingerprints."""
        with self._db.read() as conn:
            tls = conn.execute(
                select(device_tls.c.require_tls).where(device_tls.c.device_id == device_id)
            ).first()
            prints = conn.execute(
                select(device_certificates.c.fingerprint).where(
                    device_certificates.c.device_id == device_id,
                    device_certificates.c.revoked_at.is_(None),
                )
            ).all()
            ident = conn.execute(
                select(device_identity).where(device_identity.c.device_id == device_id)
            ).first()
        return DeviceCredentials(
            require_tls=bool(tls.require_tls) if tls else False,
            fingerprints=frozenset(r.fingerprint for r in prints),
            identity=_requirement(ident),
        )

    def owner_of(self, fingerprint: str) -> str | None:
        """AE title of the device an active certificate was issued to, if any (for logs)."""
        with self._db.read() as conn:
            row = conn.execute(
                select(devices.c.ae_title)
                .join(device_certificates, device_certificates.c.device_id == devices.c.id)
                .where(
                    device_certificates.c.fingerprint == fingerprint,
                    device_certificates.c.revoked_at.is_(None),
                )
            ).first()
        return str(row.ae_title) if row else None

    def certificates(self, device_id: int) -> list[CertificateRecord]:
        """Every certificate issued to the device, oldest first."""
        with self._db.read() as conn:
            rows = conn.execute(
                select(device_certificates)
                .where(device_certificates.c.device_id == device_id)
                .order_by(device_certificates.c.issued_at)
            ).all()
        return [
            CertificateRecord(r.fingerprint, r.serial, r.not_after, r.issued_at, r.revoked_at)
            for r in rows
        ]

    def set_require_tls(self, device_id: int, ae: str, required: bool, actor: str) -> None:
        """Whether the device may connect only over TLS."""
        with self._db.write() as conn:
            conn.execute(delete(device_tls).where(device_tls.c.device_id == device_id))
            conn.execute(insert(device_tls).values(device_id=device_id, require_tls=required))
            self._audit.append(
                conn,
                AuditEvent("device.tls", actor, ae, "ok", {"id": device_id, "require": required}),
            )

    def add_certificate(
        self, device_id: int, ae: str, issued: Issued, actor: str, revoke_others: bool
    ) -> int:
        """Record a certificate issued to the device; optionally revoke its others.

        Returns how many certificates were revoked.
        """
        now = self._clock.now().isoformat()
        with self._db.write() as conn:
            revoked = _revoke_active(conn, device_id, now) if revoke_others else 0
            conn.execute(
                insert(device_certificates).values(
                    fingerprint=issued.fingerprint,
                    device_id=device_id,
                    serial=issued.serial,
                    not_after=issued.not_after.isoformat(),
                    issued_at=now,
                )
            )
            self._audit.append(
                conn,
                AuditEvent(
                    "device.certificate.issued",
                    actor,
                    ae,
                    "ok",
                    {
                        "id": device_id,
                        "fingerprint": issued.fingerprint,
                        "serial": issued.serial,
                        "not_after": issued.not_after.isoformat(),
                        "revoked_others": revoked,
                    },
                ),
            )
        return int(revoked)

    def revoke_certificates(self, device_id: int, ae: str, actor: str) -> int:
        """Revoke every active certificate of the device; returns how many."""
        now = self._clock.now().isoformat()
        with self._db.write() as conn:
            n = _revoke_active(conn, device_id, now)
            self._audit.append(
                conn,
                AuditEvent(
                    "device.certificate.revoked", actor, ae, "ok", {"id": device_id, "count": n}
                ),
            )
        return int(n)

    def set_identity(self, device_id: int, ae: str, req: Requirement | None, actor: str) -> None:
        """Require (or with None, stop requiring) a user identity from the device."""
        with self._db.write() as conn:
            conn.execute(delete(device_identity).where(device_identity.c.device_id == device_id))
            detail: dict[str, object] = {"id": device_id, "kind": req.kind if req else None}
            if isinstance(req, PasscodeRequirement):
                conn.execute(
                    insert(device_identity).values(
                        device_id=device_id,
                        kind="passcode",
                        username=req.username,
                        passcode_hash=req.passcode_hash,
                    )
                )
                detail["username"] = req.username
            elif isinstance(req, JwtRequirement):
                conn.execute(
                    insert(device_identity).values(
                        device_id=device_id,
                        kind="jwt",
                        jwt_issuer=req.issuer,
                        jwt_audience=req.audience,
                        jwt_subject=req.subject,
                        jwt_public_key=req.public_key_pem,
                    )
                )
                detail.update(issuer=req.issuer, audience=req.audience, subject=req.subject)
            self._audit.append(conn, AuditEvent("device.identity", actor, ae, "ok", detail))


def _revoke_active(conn: Connection, device_id: int, now: str) -> int:
    """Mark every unrevoked certificate of the device revoked at ``now``; how many."""
    return int(
        conn.execute(
            update(device_certificates)
            .where(
                device_certificates.c.device_id == device_id,
                device_certificates.c.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        ).rowcount
    )
