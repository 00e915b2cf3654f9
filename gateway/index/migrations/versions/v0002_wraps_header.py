"""Revision 2: ``instances.header_cid`` and ``key_wraps`` (a study key wrapped per recipient).

Both belong to other parts of issue 7 (the sealed dataset header object, and wraps for the
custodian and, once linked, the patient); they are created here so one revision chain serves
every part.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the nullable header CID column and the key_wraps table."""
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("header_cid", sa.String(100), nullable=True))
    op.create_table(
        "key_wraps",
        sa.Column("key_id", sa.String(32), sa.ForeignKey("study_keys.key_id"), primary_key=True),
        sa.Column("recipient", sa.String(80), primary_key=True),
        sa.Column("kem", sa.String(32), nullable=False),
        sa.Column("wrap", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
    )


def downgrade() -> None:
    """Not supported: an index is never downgraded (restore a backup instead)."""
    raise NotImplementedError("downgrading the index is not supported; restore a backup")
