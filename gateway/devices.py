"""The registry of devices allowed to send: modalities and sending workstations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network

from sqlalchemy import Connection, delete, insert, select
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from gateway.audit import AuditEvent, AuditLog
from gateway.clock import Clock
from gateway.errors import InvalidInputError, NotFoundError, StorageError
from gateway.index.database import Database
from gateway.index.models import devices
from gateway.settings import valid_ae_title

Network = IPv4Network | IPv6Network


@dataclass(frozen=True)
class Device:
    """A registered device as admission sees it."""

    id: int
    ae_title: str
    name: str
    networks: tuple[Network, ...]
    active: bool


def parse_networks(values: list[str]) -> tuple[Network, ...]:
    """CIDR ranges or single addresses; refuses anything else with the offending value."""
    if not values:
        raise InvalidInputError("give at least one allowed address or range (--ip 10.0.0.0/24)")
    out = []
    for value in values:
        try:
            out.append(ip_network(value.strip(), strict=False))
        except ValueError as e:
            raise InvalidInputError(
                f"{value!r} is not an IP address or CIDR range (e.g. 10.0.0.5 or 10.0.0.0/24)"
            ) from e
    return tuple(out)


def _device(row: object) -> Device:
    r = row._mapping  # type: ignore[attr-defined]
    return Device(
        r["id"], r["ae_title"], r["name"], parse_networks(list(r["networks"])), bool(r["active"])
    )


class DeviceRegistry:
    """Adds, lists, finds and removes devices; every change is audited."""

    def __init__(self, db: Database, audit: AuditLog, clock: Clock) -> None:
        self._db = db
        self._audit = audit
        self._clock = clock

    def add(
        self,
        ae_title: str,
        networks: list[str],
        name: str,
        actor: str,
        also: Callable[[Connection, int], None] | None = None,
    ) -> Device:
        """Register a device; refuses a duplicate or malformed AE title.

        ``also(conn, device_id)`` runs inside the same transaction (e.g. posture enrollment),
        so a device is never left half-registered.
        """
        try:
            ae = valid_ae_title(ae_title)
        except ValueError as e:
            raise InvalidInputError(f"AE title {ae_title!r}: {e}") from e
        nets = parse_networks(networks)
        try:
            with self._db.write() as conn:
                result = conn.execute(
                    insert(devices).values(
                        ae_title=ae,
                        name=name,
                        networks=[str(n) for n in nets],
                        active=True,
                        created_at=self._clock.now().isoformat(),
                    )
                )
                device_id = int(result.inserted_primary_key[0])  # type: ignore[index]
                self._audit.append(
                    conn,
                    AuditEvent(
                        "device.added",
                        actor,
                        ae,
                        "ok",
                        {"id": device_id, "networks": [str(n) for n in nets], "name": name},
                    ),
                )
                if also is not None:
                    also(conn, device_id)
        except StorageError as e:
            if isinstance(e.__cause__, SAIntegrityError):
                raise InvalidInputError(f"a device with AE title {ae!r} already exists") from e
            raise
        return Device(device_id, ae, name, nets, True)

    def list(self) -> list[Device]:
        """Every device, by id."""
        with self._db.read() as conn:
            return [_device(r) for r in conn.execute(select(devices).order_by(devices.c.id))]

    def by_ae(self, ae_title: str) -> Device | None:
        """The device with this AE title, if registered."""
        with self._db.read() as conn:
            row = conn.execute(
                select(devices).where(devices.c.ae_title == ae_title.strip())
            ).first()
        return _device(row) if row else None

    def find(self, ref: str) -> Device:
        """The device with this id or AE title; NotFoundError naming how to list them."""
        found = next(
            (d for d in self.list() if str(d.id) == ref or d.ae_title == ref.strip()), None
        )
        if found is None:
            raise NotFoundError(f"no device with id or AE title {ref!r} ('ztbridge device list')")
        return found

    def remove(self, ref: str, actor: str) -> Device:
        """Remove by id or AE title."""
        found = next(
            (d for d in self.list() if str(d.id) == ref or d.ae_title == ref.strip()), None
        )
        if found is None:
            raise NotFoundError(f"no device with id or AE title {ref!r} ('ztbridge device list')")
        with self._db.write() as conn:
            conn.execute(delete(devices).where(devices.c.id == found.id))
            self._audit.append(
                conn, AuditEvent("device.removed", actor, found.ae_title, "ok", {"id": found.id})
            )
        return found
