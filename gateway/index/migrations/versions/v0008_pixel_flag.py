"""Revision 8: ``instances.pixel_flag``, pixel geometry that disagrees with the Pixel Data.

Set by ingest from ``gateway.pixels.check_geometry`` ("short", "excess" or "invalid"); NULL
when the geometry agrees, when there is no Pixel Data, and for rows stored before the check
(decoders call ``check_geometry`` themselves whatever the column says).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the nullable pixel_flag column to instances."""
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("pixel_flag", sa.String(16), nullable=True))


def downgrade() -> None:
    """Not supported: an index is never downgraded (restore a backup instead)."""
    raise NotImplementedError("downgrading the index is not supported; restore a backup")
