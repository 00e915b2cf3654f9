"""Revision 4: a removed device's id is never handed out again (SQLite AUTOINCREMENT).

SQLite's plain INTEGER PRIMARY KEY reuses max(id)+1, so after removing the newest device the
next one got its id, and two devices shared one id in the audit log. AUTOINCREMENT keeps the
highest id ever used in ``sqlite_sequence``. The table is rebuilt (SQLite cannot add it in
place), with foreign keys off (see ``gateway.index.migrate``) so the children's ON DELETE
CASCADE does not fire, and the sequence is seeded with the highest device id any table or
any ``device.added`` audit event names, so ids removed before this revision stay retired.
PostgreSQL's sequences never reuse a value: nothing to do there.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_REFERENCES = (
    "devices",
    "device_posture",
    "posture_reports",
    "posture_nonces",
    "device_tls",
    "device_certificates",
    "device_identity",
)


def upgrade() -> None:
    """Rebuild ``devices`` with AUTOINCREMENT on SQLite and seed its sequence."""
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        return
    floor = 0
    for table in _REFERENCES:
        column = "id" if table == "devices" else "device_id"
        found = conn.exec_driver_sql(f"SELECT MAX({column}) FROM {table}").scalar()
        floor = max(floor, int(found or 0))
    found = conn.exec_driver_sql("SELECT MAX(device_id) FROM instances").scalar()
    floor = max(floor, int(found or 0))
    # Removed devices live on only in the audit log: every "device.added" event names its id.
    for (detail,) in conn.exec_driver_sql(
        "SELECT detail FROM audit_events WHERE kind = 'device.added'"
    ):
        try:
            floor = max(floor, int(json.loads(detail).get("id", 0)))
        except (ValueError, TypeError, AttributeError):
            continue
    op.execute(
        "CREATE TABLE devices_new ("
        " id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,"
        " ae_title VARCHAR(16) NOT NULL,"
        " name VARCHAR(200) NOT NULL,"
        " networks JSON NOT NULL,"
        " active BOOLEAN NOT NULL,"
        " created_at VARCHAR(40) NOT NULL,"
        " UNIQUE (ae_title))"
    )
    op.execute(
        "INSERT INTO devices_new (id, ae_title, name, networks, active, created_at)"
        " SELECT id, ae_title, name, networks, active, created_at FROM devices"
    )
    op.execute("DROP TABLE devices")
    op.execute("ALTER TABLE devices_new RENAME TO devices")
    op.execute("DELETE FROM sqlite_sequence WHERE name = 'devices'")
    conn.execute(
        sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('devices', :floor)"),
        {"floor": floor},
    )


def downgrade() -> None:
    """Not supported: an index is never downgraded (restore a backup instead)."""
    raise NotImplementedError("downgrading the index is not supported; restore a backup")
