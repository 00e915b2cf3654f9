"""The index schema is built and changed by Alembic revisions, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, insert, inspect, select, text

from gateway.audit import AuditLog
from gateway.clock import SystemClock
from gateway.dataset import scan, split_part10
from gateway.devices import DeviceRegistry
from gateway.errors import StorageError
from gateway.index import migrate
from gateway.index.database import Database
from gateway.index.migrate import IndexTooNewError
from gateway.index.models import metadata
from gateway.index.sealing import IndexCipher
from gateway.metadata import WANTED, first_strings, read_indexed, to_json
from gateway.search import Search, StudyQuery
from tests.support.dicomgen import make_ct_series


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


def _legacy_with_an_instance(url: str, tmp_path: Path) -> tuple[str, str]:
    """A revision-1 index holding one study and instance as e35439c's ingest wrote them."""
    from gateway.index.migrations.versions import v0001_initial as legacy

    f = make_ct_series(tmp_path / "ct", 1, rows=8, columns=8, patient_id="LEGACY-7").files[0]
    part = split_part10(f.read_bytes())
    doc = read_indexed(part.dataset, scan(part.dataset, part.transfer_syntax, WANTED))
    ids = first_strings(doc)
    t = legacy.metadata.tables
    engine = create_engine(url)
    legacy.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            insert(t["studies"]),
            {"study_uid": ids["StudyInstanceUID"], "patient_id": "LEGACY-7", "created_at": "t0"},
        )
        conn.execute(
            insert(t["study_keys"]),
            {"key_id": "k" * 32, "study_uid": ids["StudyInstanceUID"], "kem": "x25519",
             "custodian_wrap": b"w", "created_at": "t0"},
        )  # fmt: skip
        conn.execute(
            insert(t["instances"]),
            {"sop_instance_uid": ids["SOPInstanceUID"], "version": 1,
             "study_uid": ids["StudyInstanceUID"], "series_uid": ids["SeriesInstanceUID"],
             "sop_class_uid": ids["SOPClassUID"], "transfer_syntax": part.transfer_syntax,
             "patient_id": "LEGACY-7", "cid": "bafy", "stored_size": 1, "size": 1,
             "sha256": "0" * 64, "key_id": "k" * 32, "metadata_json": to_json(doc),
             "flag": None, "received_at": "t1", "origin": "import"},
        )  # fmt: skip
    engine.dispose()
    return ids["StudyInstanceUID"], ids["SOPInstanceUID"]


def test_existing_rows_are_moved_to_levels_and_sealed(url: str, tmp_path: Path) -> None:
    study_uid, sop_uid = _legacy_with_an_instance(url, tmp_path)
    cipher = IndexCipher(b"\x11" * 32)
    db = Database(url, cipher)
    try:
        search = Search(db, cipher)
        [found] = search.studies(StudyQuery(patient_id="LEGACY-7"))
        assert (found.study_uid, found.created_at, found.num_instances) == (study_uid, "t0", 1)
        assert (found.patient_name, found.modalities) == ("TEST^SYNTHETIC", ("CT",))
        [series_row] = search.series(study_uid)
        [inst] = search.instances(study_uid, series_row.series_uid)
        assert inst.sop_instance_uid == sop_uid
        assert inst.metadata["00100020"]["Value"] == ["LEGACY-7"]
    finally:
        db.close()
    assert _diff(url) == []


def test_sealing_existing_rows_needs_the_key_and_changes_nothing_without(
    url: str, tmp_path: Path
) -> None:
    _legacy_with_an_instance(url, tmp_path)
    with pytest.raises(StorageError, match="needs the index"):
        Database(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.BASELINE
        assert "alembic_version" not in inspect(conn).get_table_names()
        assert conn.execute(text("SELECT patient_id FROM instances")).scalars().all() == [
            "LEGACY-7"
        ]
    engine.dispose()


def test_a_removed_device_id_is_never_reused(url: str, tmp_path: Path) -> None:
    """Before revision 4, SQLite handed a removed newest device's id to the next device."""
    from gateway.index.migrations.versions import v0001_initial as legacy

    engine = create_engine(url)
    legacy.metadata.create_all(engine)
    engine.dispose()
    db = Database(url)
    try:
        registry = DeviceRegistry(db, AuditLog(db, SystemClock()), SystemClock())
        registry.add("CT01", ["127.0.0.1"], "", "test")
        second = registry.add("CT02", ["127.0.0.1"], "", "test")
        registry.remove("CT02", "test")
        third = registry.add("CT03", ["127.0.0.1"], "", "test")
        assert third.id > second.id
    finally:
        db.close()


def test_device_ids_removed_before_the_upgrade_stay_retired(tmp_path: Path) -> None:
    """An old SQLite index whose newest device was removed: the floor comes from the audit."""
    from gateway.index.migrations.versions import v0001_initial as legacy

    url = f"sqlite:///{tmp_path / 'i.sqlite3'}"
    engine = create_engine(url)
    legacy.metadata.create_all(engine)
    t = legacy.metadata.tables
    with engine.begin() as conn:
        conn.execute(
            insert(t["devices"]),
            {
                "id": 1,
                "ae_title": "A",
                "name": "",
                "networks": [],
                "active": True,
                "created_at": "t",
            },
        )
        conn.execute(
            insert(t["audit_events"]),
            [
                {"seq": n, "ts": "t", "kind": "device.added", "actor": "x", "subject": ae,
                 "outcome": "ok", "detail": json.dumps({"id": n}), "prev_hash": "", "hash": ""}
                for n, ae in ((1, "A"), (2, "B"))
            ],
        )  # fmt: skip
    engine.dispose()
    db = Database(url)
    try:
        with db.write() as conn:
            conn.execute(
                insert(metadata.tables["devices"]),
                {"ae_title": "C", "name": "", "networks": [], "active": True, "created_at": "t"},
            )
        with db.read() as conn:
            ids = conn.execute(select(metadata.tables["devices"].c.id)).scalars().all()
    finally:
        db.close()
    assert sorted(ids) == [1, 3]
