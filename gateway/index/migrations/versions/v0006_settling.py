"""Revision 6: ``settling``, the ingest watermark below which every instance row is durable.

Ingest commits an instance's row while its ciphertext is still being flushed (the two fsyncs
overlap) and acknowledges only once both are done (``gateway.settling``). Every ingest
transaction records ``settled_below``: no row with a smaller id can point at an object that
is not durable. After a crash, only rows at or above it are checked against the store.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the one-row settling table; every existing row was written durable-first."""
    table = op.create_table(
        "settling",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("settled_below", sa.Integer, nullable=False),
    )
    top = op.get_bind().execute(sa.text("SELECT COALESCE(MAX(id), 0) FROM instances")).scalar()
    op.bulk_insert(table, [{"id": 1, "settled_below": int(top or 0) + 1}])


def downgrade() -> None:
    """Not supported: an index is never downgraded (restore a backup instead)."""
    raise NotImplementedError("downgrading the index is not supported; restore a backup")
