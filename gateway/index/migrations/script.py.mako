"""${message}"""

from __future__ import annotations

from alembic import op

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade() -> None:
    """TODO."""


def downgrade() -> None:
    """Not supported: an index is never downgraded (restore a backup instead)."""
    raise NotImplementedError("downgrading the index is not supported; restore a backup")
