"""Index schema operations a person asks for (``ztbridge db upgrade`` / ``db current``, or an
admin page): thin, so the CLI and a page share them.

Opening the gateway (``ztbridge up`` and every command) already upgrades the index; these
exist to do it deliberately (before a deployment, with a backup at hand) and to look.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.errors import StorageError
from gateway.index import migrate
from gateway.index.database import Database
from gateway.index.sealing import open_cipher
from gateway.settings import Settings


@dataclass(frozen=True)
class Revision:
    """Where an index's schema stands against this code."""

    current: str | None  # None: no index yet
    head: str
    known: bool  # False: written by a newer ztbridge

    @property
    def up_to_date(self) -> bool:
        """Whether nothing is left to upgrade."""
        return self.current == self.head


def index_revision(settings: Settings) -> Revision:
    """The index's revision, without changing anything (and without the index key)."""
    engine = create_engine(settings.index_url)
    try:
        with engine.connect() as conn:
            current = migrate.current_revision(conn)
    except SQLAlchemyError as e:
        raise StorageError(f"cannot read the index revision: {e}") from e
    finally:
        engine.dispose()
    return Revision(
        current, migrate.head(), current is None or current in migrate.known_revisions()
    )


def upgrade_index(settings: Settings) -> tuple[str | None, str]:
    """Upgrade the index to this code's head with the index key at hand; (from, to)."""
    db = Database(settings.index_url, open_cipher(settings), upgrade=False)
    try:
        return db.upgrade()
    finally:
        db.close()
