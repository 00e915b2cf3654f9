"""Bringing an index's schema to the revision this code expects (Alembic, run in process).

Three starting points are recognised on open:

* an empty database: upgraded from nothing to head;
* a database written before migrations existed (commit e35439c: ztbridge's tables, no
  ``alembic_version``): stamped at revision 1, which is a frozen copy of that schema, then
  upgraded;
* a database at a revision this code does not know (written by a newer ztbridge): refused
  with an ``IndexTooNewError``, never touched.

The upgrade runs in one transaction (SQLite and PostgreSQL both have transactional DDL), so a
failed revision leaves the index as it was. On SQLite it runs on its own connection with
foreign keys off, as SQLite's table-rebuild procedure requires (a rebuilt parent table would
otherwise cascade its deletes into the children), then checks every foreign key before
committing. Revisions that seal existing values need the index cipher; it is passed in
``config.attributes["cipher"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, event, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from gateway.errors import StorageError

_SCRIPTS = Path(__file__).with_name("migrations")
#: The revision that is the schema ztbridge wrote before migrations existed.
BASELINE = "0001"
#: A table only ztbridge's own schema has: its presence without ``alembic_version`` marks an
#: index written before migrations existed.
_LEGACY_MARKER = "audit_head"


class IndexTooNewError(StorageError):
    """The index was written by a newer ztbridge (a revision this code does not know)."""


def _config(connection: Connection | None = None, cipher: Any = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    cfg.attributes["connection"] = connection
    cfg.attributes["cipher"] = cipher
    return cfg


def head() -> str:
    """The newest revision this code knows."""
    found = ScriptDirectory.from_config(_config()).get_current_head()
    assert found is not None
    return found


def known_revisions() -> set[str]:
    """Every revision this code ships."""
    return {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}


def current_revision(connection: Connection) -> str | None:
    """The index's revision; ``BASELINE`` for a pre-migration index; None when empty."""
    rev = MigrationContext.configure(connection).get_current_revision()
    if rev is None and _LEGACY_MARKER in inspect(connection).get_table_names():
        return BASELINE
    return rev


def _check_known(rev: str | None, url: str) -> None:
    if rev is not None and rev not in known_revisions():
        raise IndexTooNewError(
            f"the index at {_safe(url)} is at schema revision {rev}, which this ztbridge does"
            f" not know (it knows up to {head()}): it was written by a newer ztbridge. Run"
            " that version, or restore a backup taken before the upgrade"
        )


def _safe(url: str) -> str:
    return url.split("@")[-1]


def _sqlite_migration_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=OFF")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def needs_upgrade(url: str) -> bool:
    """Whether the index is behind this code (raises ``IndexTooNewError`` when ahead)."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            rev = current_revision(conn)
    except SQLAlchemyError as e:
        raise StorageError(f"cannot read the index schema revision at {_safe(url)}: {e}") from e
    finally:
        engine.dispose()
    _check_known(rev, url)
    return rev != head()


def _engine(url: str) -> Any:
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False}
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_migration_pragmas)
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    return engine


def upgrade(url: str, cipher: Any = None) -> tuple[str | None, str]:
    """Upgrade the index at ``url`` to head in one transaction; returns (from, to).

    Safe to call concurrently from two processes: on SQLite the transaction starts with
    ``BEGIN IMMEDIATE`` and on PostgreSQL it takes an advisory lock, and the revision is read
    again under that lock, so the second caller finds the work done.
    """
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(7270107)"))
            before = current_revision(conn)
            _check_known(before, url)
            target = head()
            if before == target:
                return before, target
            cfg = _config(conn, cipher)
            stamped = MigrationContext.configure(conn).get_current_revision()
            if before == BASELINE and stamped is None:
                command.stamp(cfg, BASELINE)
            command.upgrade(cfg, "head")
            if conn.dialect.name == "sqlite":
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise StorageError(
                        f"index upgrade would leave {len(broken)} broken foreign keys"
                        f" (first: {tuple(broken[0])}); nothing was changed"
                    )
            return before, target
    except SQLAlchemyError as e:
        raise StorageError(f"cannot upgrade the index at {_safe(url)}: {e}") from e
    finally:
        engine.dispose()
