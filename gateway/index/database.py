"""Opening the index database with settings that make a commit durable.

SQLite runs in WAL mode with ``synchronous=FULL``: a committed transaction has been fsync'd
to the write-ahead log before ``commit()`` returns, which is what lets ingest acknowledge an
instance right after committing its row. Writers are serialized by a process-wide lock (SQLite
allows one writer anyway; the lock avoids busy-retry storms between association threads).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError

from gateway.errors import StorageError
from gateway.index.models import metadata


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Database:
    """The index engine plus a write lock; ``write()`` is the only way to change rows."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False}
        try:
            self.engine: Engine = create_engine(url, **kwargs)
            if self.is_sqlite:
                event.listen(self.engine, "connect", _sqlite_pragmas)
            metadata.create_all(self.engine)
        except SQLAlchemyError as e:
            raise StorageError(f"cannot open the index at {url}: {e}") from e
        self._write_lock = threading.Lock()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that commits (durably) on success and rolls back on any error."""
        with self._write_lock:
            try:
                with self.engine.begin() as conn:
                    yield conn
            except SQLAlchemyError as e:
                raise StorageError(f"index write failed: {e}") from e

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
        self.engine.dispose()
