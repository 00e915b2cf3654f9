"""The gateway context: every long-lived part, built once from settings and passed around.

Like Orthanc's ServerContext, this is what the SCP, the CLI and (later) the portal hold; it
owns the index, the content store, the audit log, the device registry, the study key cache
and the ingest pipeline, and closes them in order.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from gateway.accounts.links import LinkedRecipients
from gateway.anchoring.service import Anchoring
from gateway.audit import AuditLog
from gateway.clock import Clock, SystemClock
from gateway.deflated import InflateLimits
from gateway.devices import DeviceRegistry
from gateway.errors import ConfigError, StorageError, StoreLockedError
from gateway.index.database import Database
from gateway.index.sealing import open_cipher
from gateway.ingest import Ingestor
from gateway.keys import CustodianPublic, StudyKeyCache, ensure_custodian
from gateway.keywraps import RecipientDirectory
from gateway.ledger.accounts import GatewayAccounts, ensure_accounts
from gateway.posture.policy import PolicySet, load_policies
from gateway.posture.service import PostureService
from gateway.settings import Settings
from gateway.settling import Settling, recover
from gateway.store.base import ContentStore
from gateway.store.blockstore import PackBlockStore

if TYPE_CHECKING:
    from gateway.accounts.links import PatientLinks
    from gateway.accounts.users import Accounts

log = logging.getLogger("ztbridge")


StoreAccess = Literal["write", "read"]


def open_store(settings: Settings, access: StoreAccess = "write") -> ContentStore:
    """The content store the settings name.

    Only one process may write the embedded store (``ztbridge up`` or ``ztbridge import``);
    any number may read it alongside, which is what export and verify do.
    """
    return PackBlockStore(
        settings.home / "store",
        pack_max_bytes=settings.store.pack_max_mb << 20,
        runway_bytes=settings.store.runway_mb << 20,
        read_only=access == "read",
    )


@dataclass
class Gateway:
    """Everything a running ztbridge holds."""

    settings: Settings
    clock: Clock
    db: Database
    store: ContentStore
    audit: AuditLog
    devices: DeviceRegistry
    custodian: CustodianPublic
    keys: StudyKeyCache
    ingestor: Ingestor
    posture: PostureService
    generated_passphrase: str | None = field(default=None, repr=False)
    accounts: GatewayAccounts | None = field(default=None, repr=False)
    anchoring: Anchoring | None = None

    @cached_property
    def users(self) -> Accounts:
        """The account service (one per process: it holds the sessions' unlocked keys)."""
        from gateway.accounts.users import Accounts

        return Accounts(self.db, self.audit, self.clock, self.settings, self.custodian)

    @cached_property
    def patient_links(self) -> PatientLinks:
        """Patient accounts to DICOM Patient IDs."""
        from gateway.accounts.links import PatientLinks

        return PatientLinks(self.db, self.audit, self.clock)

    @property
    def keys_dir(self) -> Path:
        """Where key files live."""
        return self.settings.home / "keys"

    def close(self) -> None:
        """Close the pipeline, the shared ledger session, the store, then the index."""
        self.ingestor.close()
        if self.anchoring is not None:
            self.anchoring.close_session()
        self.store.close()
        self.db.close()


def posture_policies(settings: Settings) -> PolicySet:
    """The posture policies in force: posture.policy_file, else $home/posture-policy.toml if
    it exists, else the built-in ``default`` (which config/posture-policy.example.toml shows)."""
    path = settings.posture.policy_file
    if path is None:
        candidate = settings.home / "posture-policy.toml"
        path = candidate if candidate.is_file() else None
    policies = load_policies(path)
    policies.require(settings.posture.default_policy)
    return policies


def open_gateway(
    settings: Settings,
    clock: Clock | None = None,
    store_access: StoreAccess = "write",
    recipients: RecipientDirectory | None = None,
) -> Gateway:
    """Create the home folder and keys on first use, then open every part.

    ``recipients``: who besides the custodian gets a wrap of each new study key; by default
    the patient accounts linked to the study's Patient ID (``accounts.links``).
    """
    clock = clock or SystemClock()
    home = settings.home
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise ConfigError(f"cannot create the data folder {home} (ZTBRIDGE_HOME): {e}") from e
    if not os.access(home, os.W_OK):
        raise ConfigError(f"the data folder {home} is not writable (ZTBRIDGE_HOME)")
    passphrase = (
        settings.custodian_passphrase.get_secret_value() if settings.custodian_passphrase else None
    )
    policies = posture_policies(settings)
    custodian, generated = ensure_custodian(home / "keys", settings.crypto.kem, passphrase)
    accounts = ensure_accounts(home / "keys", custodian) if settings.ledger.enabled else None
    db = Database(settings.index_url, open_cipher(settings))
    try:
        store = open_store(settings, store_access)
    except StoreLockedError as e:
        db.close()
        if store_access == "write":
            raise StoreLockedError(
                f"{e}. Another ztbridge process (probably 'ztbridge up') is writing this data"
                " folder: stop it first, or send the files to it with a DICOM sender"
                " (e.g. storescu) instead"
            ) from e
        raise
    except StorageError:
        db.close()
        raise
    audit = AuditLog(db, clock)
    settling = Settling()
    if store_access == "write":
        try:  # rows a crash left committed but without a durable object (never acknowledged)
            recover(db, store, audit)
        except BaseException:
            store.close()
            db.close()
            raise
    keys = StudyKeyCache(custodian, clock, settings.ingest.study_key_idle_seconds)
    ingestor = Ingestor(
        db,
        store,
        keys,
        audit,
        clock,
        settings.ingest.max_instance_mb << 20,
        recipients if recipients is not None else LinkedRecipients(db, clock),
        require_patient_id=settings.ingest.require_patient_id,
        settling=settling,
        inflate_limits=InflateLimits(
            max_inflated_bytes=settings.ingest.max_inflated_mb << 20,
            max_ratio=settings.ingest.max_inflate_ratio,
        ),
    )
    devices = DeviceRegistry(db, audit, clock)
    anchoring = None
    if accounts is not None:
        anchoring = Anchoring(
            settings, db, store, custodian, audit, clock, accounts, horizon=settling.horizon
        )
    return Gateway(
        settings=settings,
        clock=clock,
        db=db,
        store=store,
        audit=audit,
        devices=devices,
        custodian=custodian,
        keys=keys,
        ingestor=ingestor,
        posture=PostureService(db, audit, clock, devices, policies, settings.posture),
        generated_passphrase=generated,
        accounts=accounts,
        anchoring=anchoring,
    )
