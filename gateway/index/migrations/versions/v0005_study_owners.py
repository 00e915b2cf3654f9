"""Revision 5: ``study_owners``, the patient a study was handed to (docs/ledger.md).

Written by ``gateway.anchoring.transfer.transfer_study`` once the custodian's study is moved to
its patient on-chain; later batches of the study are then anchored to the patient directly,
with the capsule sealed to the HPKE key recorded here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the study_owners table."""
    op.create_table(
        "study_owners",
        sa.Column("study_uid", sa.String(64), sa.ForeignKey("studies.study_uid"), primary_key=True),
        sa.Column("owner", sa.String(42), nullable=False),
        sa.Column("recipient", sa.String(80), nullable=False),
        sa.Column("kem", sa.String(32), nullable=False),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
        sa.Column("transferred_at", sa.String(40), nullable=False),
    )


def downgrade() -> None:
    """Not supported: an index is never downgraded (restore a backup instead)."""
    raise NotImplementedError("downgrading the index is not supported; restore a backup")
