"""Opening the index database with settings that make a commit durable.

SQLite runs in WAL mode with ``synchronous=FULL``: a committed transaction has been fsync'd
to the write-ahead log before ``commit()`` returns, which is what lets ingest acknowledge an
instance right after committing its row. Write transactions start with ``BEGIN IMMEDIATE``,
so two processes (``ztbridge up`` and a CLI command) never interleave read-then-write steps
such as appending to the audit chain. Within a process, writers are serialized by a lock.

``fast_write`` runs prebuilt statements on a dedicated DBAPI connection: on the ingest hot
path SQLAlchemy's per-statement machinery cost ~1 ms per instance, the SQL itself ~0.3 ms.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql import Executable
from sqlalchemy.sql.dml import Insert

from gateway.errors import StorageError
from gateway.index import migrate


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_manual_transactions(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE instead of pysqlite's deferred one.
    dbapi_connection.isolation_level = None


class Rows(Protocol):
    """The part of a query result the gateway uses: iterate rows, or take the first."""

    def first(self) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...


class Tx(Protocol):
    """A transaction that runs prebuilt statements: a SQLAlchemy Connection or a FastTx."""

    def execute(self, statement: Any, parameters: Any = ..., /) -> Any: ...


class _Row:
    """A result row with attribute access, like SQLAlchemy's Row, for the fast path."""

    __slots__ = ("_map",)

    def __init__(self, names: tuple[str, ...], values: tuple[Any, ...]) -> None:
        self._map = dict(zip(names, values, strict=True))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._map[name]
        except KeyError:
            raise AttributeError(name) from None


class _Result:
    def __init__(self, cursor: Any) -> None:
        names = tuple(d[0] for d in cursor.description) if cursor.description else ()
        self._rows = [_Row(names, tuple(r)) for r in cursor.fetchall()] if names else []

    def first(self) -> _Row | None:
        return self._rows[0] if self._rows else None

    def __iter__(self) -> Iterator[_Row]:
        return iter(self._rows)


class FastTx:
    """Prebuilt SQLAlchemy statements, compiled once per dialect, run on a raw cursor."""

    def __init__(self, db: Database, cursor: Any) -> None:
        self._db = db
        self._cursor = cursor

    def execute(self, statement: Any, parameters: Mapping[str, Any] | None = None) -> _Result:
        sql, order, defaults = self._db._compiled(statement, parameters or {})
        params = {**defaults, **(parameters or {})}
        args: Any = tuple(params[k] for k in order) if order is not None else params
        self._cursor.execute(sql, args)
        return _Result(self._cursor)


class Database:
    """The index engine plus a write lock; ``write()`` is the only way to change rows."""

    def __init__(self, url: str, cipher: Any = None, *, upgrade: bool = True) -> None:
        """Open the index; with ``upgrade`` (the default) bring its schema to head first.

        ``cipher`` (an ``IndexCipher``) seals and blinds identifying attributes; revisions
        that seal values already stored need it, and so does ingest.
        """
        self.url = url
        self.cipher = cipher
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False}
        try:
            self.engine: Engine = create_engine(url, **kwargs)
            self._writer: Engine = create_engine(url, **kwargs)
            if self.is_sqlite:
                event.listen(self.engine, "connect", _sqlite_pragmas)
                event.listen(self._writer, "connect", _sqlite_pragmas)
                event.listen(self._writer, "connect", _sqlite_manual_transactions)
                event.listen(
                    self._writer, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE")
                )
        except SQLAlchemyError as e:
            raise StorageError(f"cannot open the index at {url}: {e}") from e
        if upgrade:
            self.upgrade()
        else:
            migrate.needs_upgrade(url)  # still refuses an index newer than this code
        self._write_lock = threading.Lock()
        self._raw: Any = None
        # Keyed by id(): only module-level (immortal) statements may be passed to FastTx; the
        # statement is kept in the value as well so its id can never be reused.
        self._statements: dict[
            tuple[int, tuple[str, ...]], tuple[str, Any, dict[str, Any], Executable]
        ] = {}

    def upgrade(self) -> tuple[str | None, str]:
        """Bring the schema to this code's head revision (see ``gateway.index.migrate``);
        returns the revisions before and after. A no-op when already at head."""
        if not migrate.needs_upgrade(self.url):
            head = migrate.head()
            return head, head
        return migrate.upgrade(self.url, self.cipher)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that commits (durably) on success and rolls back on any error."""
        with self._write_lock:
            try:
                with self._writer.begin() as conn:
                    yield conn
            except SQLAlchemyError as e:
                raise StorageError(f"index write failed: {e}") from e

    def _compiled(
        self, statement: Executable, parameters: Mapping[str, Any]
    ) -> tuple[str, Any, dict[str, Any]]:
        keys = tuple(sorted(parameters)) if isinstance(statement, Insert) else ()
        cache_key = (id(statement), keys)
        found = self._statements.get(cache_key)
        if found is None:
            compiled = statement.compile(  # type: ignore[attr-defined]
                dialect=self.engine.dialect, column_keys=list(keys) if keys else None
            )
            defaults = {
                k: v
                for k, v in compiled.construct_params(dict(parameters)).items()
                if k not in parameters
            }
            order = list(compiled.positiontup) if compiled.positional else None  # type: ignore[arg-type]
            found = (str(compiled), order, defaults, statement)
            self._statements[cache_key] = found
        return found[0], found[1], found[2]

    @contextmanager
    def fast_write(self) -> Iterator[FastTx]:
        """A write transaction on the dedicated connection; commit on success (durable)."""
        with self._write_lock:
            try:
                if self._raw is None:
                    self._raw = self._writer.raw_connection()
                dbapi = self._raw.driver_connection
                cursor = dbapi.cursor()
                if self.is_sqlite:
                    cursor.execute("BEGIN IMMEDIATE")
                try:
                    yield FastTx(self, cursor)
                except BaseException:
                    if self.is_sqlite:
                        cursor.execute("ROLLBACK")
                    else:
                        dbapi.rollback()
                    raise
                if self.is_sqlite:
                    cursor.execute("COMMIT")
                else:
                    dbapi.commit()
            except SQLAlchemyError as e:
                raise StorageError(f"index write failed: {e}") from e
            except Exception as e:
                if type(e).__module__.startswith(("sqlite3", "psycopg")):
                    self._raw = None
                    raise StorageError(f"index write failed: {e}") from e
                raise

    @contextmanager
    def fast_read(self) -> Iterator[FastTx]:
        """A short read on the dedicated connection (serialized with writes; microseconds)."""
        with self._write_lock:
            if self._raw is None:
                self._raw = self._writer.raw_connection()
            try:
                yield FastTx(self, self._raw.driver_connection.cursor())
            except Exception as e:
                if type(e).__module__.startswith(("sqlite3", "psycopg")):
                    raise StorageError(f"index read failed: {e}") from e
                raise
            finally:
                if not self.is_sqlite:
                    self._raw.driver_connection.rollback()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only connection."""
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as e:
            raise StorageError(f"index read failed: {e}") from e

    def close(self) -> None:
        """Dispose of pooled connections."""
        with self._write_lock:
            if self._raw is not None:
                self._raw.close()
                self._raw = None
        self.engine.dispose()
        self._writer.dispose()
