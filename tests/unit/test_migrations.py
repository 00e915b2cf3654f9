"""The index schema is built and changed by Alembic revisions, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, insert, select, text

from gateway.index import migrate
from gateway.index.database import Database
from gateway.index.migrate import IndexTooNewError
from gateway.index.models import metadata


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'index.sqlite3'}"


def _diff(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(ctx, metadata))
    finally:
        engine.dispose()


def test_an_empty_database_is_upgraded_to_head_matching_the_models(url: str) -> None:
    db = Database(url)
    db.close()
    with create_engine(url).connect() as conn:
        assert migrate.current_revision(conn) == migrate.head()
    assert _diff(url) == []


def test_upgrade_is_idempotent(url: str) -> None:
    db = Database(url)
    assert db.upgrade() == (migrate.head(), migrate.head())
    db.close()


def test_a_newer_index_is_refused_untouched(url: str) -> None:
    Database(url).close()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(IndexTooNewError, match=r"revision 9999.*newer ztbridge"):
        Database(url)
    with pytest.raises(IndexTooNewError):
        Database(url, upgrade=False)


def test_a_pre_migration_index_is_stamped_and_upgraded(url: str) -> None:
    from gateway.index.migrations.versions import v0001_initial as legacy

    engine = create_engine(url)
    legacy.metadata.create_all(engine)  # what e35439c's create_all built
    with engine.begin() as conn:
        conn.execute(
            insert(legacy.metadata.tables["devices"]),
            {"ae_title": "CT01", "name": "", "networks": [], "active": True, "created_at": "t"},
        )
        assert migrate.current_revision(conn) == migrate.BASELINE
    engine.dispose()
    Database(url).close()
    assert _diff(url) == []
    engine = create_engine(url)
    with engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.head()
        assert conn.execute(select(legacy.metadata.tables["devices"].c.ae_title)).all() == [
            ("CT01",)
        ]
    engine.dispose()
