"""Account services on a real SQLite index, with an injected clock and cheap argon2."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway import crypto
from gateway.accounts.users import Accounts
from gateway.audit import AuditLog
from gateway.clock import FixedClock
from gateway.index.database import Database
from gateway.index.sealing import IndexCipher
from gateway.keys import CustodianPublic
from gateway.settings import Settings, load_settings

# Cheap parameters for tests only; the defaults (OWASP's) are checked in test_passwords.
CHEAP = {"argon2_memory_kib": 8, "argon2_time_cost": 1, "argon2_parallelism": 1}
PASSWORD = "correct horse battery staple"


@dataclass
class World:
    db: Database
    audit: AuditLog
    clock: FixedClock
    settings: Settings
    custodian: crypto.KeyPair
    accounts: Accounts

    def fresh_accounts(self) -> Accounts:
        """Another process's service on the same index (its own key ring)."""
        public = CustodianPublic(self.custodian.kem, self.custodian.public)
        return Accounts(self.db, self.audit, self.clock, self.settings, public)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC))


@pytest.fixture(scope="session")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index at head, made once: each test copies it (the migrations cost ~1 s)."""
    path = tmp_path_factory.mktemp("template") / "index.sqlite3"
    Database(f"sqlite:///{path}").close()
    return path


@pytest.fixture
def world(tmp_path: Path, clock: FixedClock, migrated: Path) -> Iterator[World]:
    shutil.copyfile(migrated, tmp_path / "index.sqlite3")
    db = Database(f"sqlite:///{tmp_path / 'index.sqlite3'}", IndexCipher(secrets.token_bytes(32)))
    settings = load_settings(home=tmp_path / "home", accounts=CHEAP)
    custodian = crypto.generate_keypair("x25519")
    audit = AuditLog(db, clock)
    public = CustodianPublic(custodian.kem, custodian.public)
    w = World(db, audit, clock, settings, custodian, Accounts(db, audit, clock, settings, public))
    yield w
    db.close()
