"""Revision 3: QIDO-shaped levels (patients, studies, series) and PHI sealed at rest.

Schema: new tables ``patients`` and ``series``; ``studies`` gains its QIDO attributes and
counts and loses ``patient_id`` (in clear) for ``pid_blind`` and a patient row; ``instances``
gains ``instance_number`` and ``metadata_sealed`` and loses ``patient_id`` and
``metadata_json`` (both in clear).

Data: every existing instance's JSON is read once, in id order, and the level rows are built
by the same code ingest uses (``gateway.index.qido``), then its JSON is sealed. This needs the
index key: the gateway passes its cipher when it opens the index (``ztbridge up`` and every
command that opens the gateway, or ``ztbridge db upgrade``). An index with instances opened
without the key is refused before anything changes.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context, op

from gateway.errors import StorageError

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_BATCH = 500


def _create_levels() -> None:
    op.create_table(
        "patients",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("patient_key", sa.String(64), nullable=False, unique=True),
        sa.Column("pid_blind", sa.String(64), nullable=False),
        sa.Column("unidentified", sa.Boolean, nullable=False),
        sa.Column("patient_id_sealed", sa.LargeBinary, nullable=True),
        sa.Column("issuer_sealed", sa.LargeBinary, nullable=True),
        sa.Column("name_sealed", sa.LargeBinary, nullable=True),
        sa.Column("birth_date_sealed", sa.LargeBinary, nullable=True),
        sa.Column("sex_sealed", sa.LargeBinary, nullable=True),
        sa.Column("created_at", sa.String(40), nullable=False),
    )
    op.create_index("ix_patients_pid_blind", "patients", ["pid_blind"])
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("patient_ref", sa.Integer, nullable=True))
        batch.add_column(sa.Column("pid_blind", sa.String(64), nullable=True))
        batch.add_column(sa.Column("study_date", sa.String(8), nullable=True))
        batch.add_column(sa.Column("study_time", sa.String(16), nullable=True))
        batch.add_column(sa.Column("accession_blind", sa.String(64), nullable=True))
        for name in ("accession", "description", "referring", "study_id"):
            batch.add_column(sa.Column(f"{name}_sealed", sa.LargeBinary, nullable=True))
        batch.add_column(sa.Column("modalities", sa.String(200), nullable=False, server_default=""))
        batch.add_column(sa.Column("num_series", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("num_instances", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("reconcile", sa.String(32), nullable=True))
    op.create_table(
        "series",
        sa.Column("series_uid", sa.String(64), primary_key=True),
        sa.Column("study_uid", sa.String(64), sa.ForeignKey("studies.study_uid"), nullable=False),
        sa.Column("modality", sa.String(16), nullable=True),
        sa.Column("series_number", sa.Integer, nullable=True),
        sa.Column("series_date", sa.String(8), nullable=True),
        sa.Column("series_time", sa.String(16), nullable=True),
        sa.Column("description_sealed", sa.LargeBinary, nullable=True),
        sa.Column("num_instances", sa.Integer, nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
    )
    op.create_index("ix_series_study_uid", "series", ["study_uid"])
    op.create_index("ix_series_modality", "series", ["modality", "study_uid"])
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("instance_number", sa.Integer, nullable=True))
        batch.add_column(sa.Column("metadata_sealed", sa.LargeBinary, nullable=True))


def _fill(conn: sa.Connection, cipher: Any) -> None:
    """Build the level rows and seal each instance's JSON, from the stored JSON."""
    import json

    from gateway.index.qido import QidoWriter

    meta = sa.MetaData()
    instances = sa.Table("instances", meta, autoload_with=conn)
    studies = sa.Table("studies", meta, autoload_with=conn)
    first = conn.execute(sa.select(instances.c.id).limit(1)).first()
    if first is None:
        return
    if cipher is None:
        raise StorageError(
            "upgrading this index seals the patient data already in it and needs the index"
            " key: open it through ztbridge (ztbridge db upgrade, or ztbridge up), which"
            " loads the key named by index.key"
        )
    writer = QidoWriter(cipher)
    created = {
        r.study_uid: r.created_at
        for r in conn.execute(sa.select(studies.c.study_uid, studies.c.created_at))
    }
    # The study rows exist already (from revision 1) and are referenced by instances and keys:
    # each is updated in place from its first instance (see _Recorder).
    done: set[str] = set()
    last = 0
    while True:
        rows = conn.execute(
            sa.select(
                instances.c.id,
                instances.c.sop_instance_uid,
                instances.c.version,
                instances.c.study_uid,
                instances.c.series_uid,
                instances.c.received_at,
                instances.c.metadata_json,
            )
            .where(instances.c.id > last)
            .order_by(instances.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            break
        for r in rows:
            last = r.id
            doc = json.loads(r.metadata_json)
            if r.study_uid not in done:
                _refill_study(conn, writer, studies, r.study_uid, doc, created)
                done.add(r.study_uid)
            columns = writer.instance_columns(r.sop_instance_uid, r.version, doc)
            conn.execute(instances.update().where(instances.c.id == r.id).values(**columns))
            if r.version == 1:
                writer.count_instance(conn, r.study_uid, r.series_uid, doc, r.received_at)
                writer.committed(r.series_uid)


def _refill_study(
    conn: sa.Connection,
    writer: Any,
    studies: sa.Table,
    study_uid: str,
    doc: dict[str, Any],
    created: dict[str, str],
) -> None:
    """Write the study's QIDO columns as ingest would have, keeping its creation time."""
    scratch = _Capture()
    writer.new_study(_Recorder(conn, scratch), study_uid, doc, created.get(study_uid, ""))
    values = dict(scratch.study or {})
    values.pop("study_uid", None)
    values["created_at"] = created.get(study_uid, values.get("created_at", ""))
    conn.execute(studies.update().where(studies.c.study_uid == study_uid).values(**values))


class _Capture:
    study: dict[str, Any] | None = None


class _Recorder:
    """Runs the writer's statements, except the study INSERT, which it captures: the old
    study row is updated in place instead (instances and keys reference it)."""

    def __init__(self, conn: sa.Connection, capture: _Capture) -> None:
        self._conn = conn
        self._capture = capture

    def execute(self, statement: Any, parameters: Any = None, /) -> Any:
        table = getattr(statement, "table", None)
        if isinstance(statement, sa.Insert) and table is not None and table.name == "studies":
            self._capture.study = dict(parameters)
            return None
        return self._conn.execute(statement, parameters)


def _finish() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("patient_id")
        batch.alter_column("patient_ref", existing_type=sa.Integer, nullable=False)
        batch.alter_column("pid_blind", existing_type=sa.String(64), nullable=False)
        batch.alter_column("modalities", existing_type=sa.String(200), server_default=None)
        batch.alter_column("num_series", existing_type=sa.Integer, server_default=None)
        batch.alter_column("num_instances", existing_type=sa.Integer, server_default=None)
        batch.create_foreign_key("fk_studies_patient_ref", "patients", ["patient_ref"], ["id"])
    op.create_index("ix_studies_patient_ref", "studies", ["patient_ref"])
    op.create_index("ix_studies_pid_blind", "studies", ["pid_blind"])
    op.create_index("ix_studies_study_date", "studies", ["study_date"])
    op.create_index("ix_studies_accession_blind", "studies", ["accession_blind"])
    op.create_index("ix_studies_reconcile", "studies", ["reconcile"])
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("patient_id")
        batch.drop_column("metadata_json")
        batch.alter_column("metadata_sealed", existing_type=sa.LargeBinary, nullable=False)


def upgrade() -> None:
    """Create the levels, fill and seal from the stored JSON, drop the clear columns."""
    conn = op.get_bind()
    cipher = context.config.attributes.get("cipher")
    _create_levels()
    _fill(conn, cipher)
    _finish()


def downgrade() -> None:
    """Not supported: an index is never downgraded (restore a backup instead)."""
    raise NotImplementedError("downgrading the index is not supported; restore a backup")
