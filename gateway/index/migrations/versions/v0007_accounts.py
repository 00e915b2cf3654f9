"""Revision 7: accounts (gateway/accounts/): users and their credentials, TOTP state,
recovery codes, enrollment tokens, sessions and tokens, login throttling, patient links and
shares.

Self-contained on purpose: it only creates tables, so it can be renumbered at a merge without
touching anything else.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_UID = sa.String(64)


def _user_fk() -> sa.ForeignKey:
    return sa.ForeignKey("users.id", ondelete="CASCADE")


def upgrade() -> None:
    """Create the account tables."""
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("suspended", sa.Boolean, nullable=False),
        sa.Column("eth_address", sa.String(42), nullable=False, unique=True),
        sa.Column("hpke_kem", sa.String(32), nullable=False),
        sa.Column("hpke_public", sa.LargeBinary, nullable=False),
        sa.Column("keys_escrow", sa.LargeBinary, nullable=False),
        sa.Column("keys_sealed", sa.LargeBinary, nullable=True),
        sa.Column("password_hash", sa.Text, nullable=True),
        sa.Column("totp_secret_sealed", sa.LargeBinary, nullable=True),
        sa.Column("totp_last_step", sa.BigInteger, nullable=False),
        sa.Column("chain_state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("enrolled_at", sa.String(40), nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "recovery_codes",
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer, _user_fk(), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("used_at", sa.String(40), nullable=True),
    )
    op.create_index("ix_recovery_codes_user", "recovery_codes", ["user_id"])
    op.create_table(
        "enrollment_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer, _user_fk(), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("keys_sealed", sa.LargeBinary, nullable=False),
        sa.Column("totp_secret_sealed", sa.LargeBinary, nullable=True),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("expires_at", sa.String(40), nullable=False),
        sa.Column("used_at", sa.String(40), nullable=True),
    )
    op.create_index("ix_enrollment_tokens_user", "enrollment_tokens", ["user_id"])
    op.create_table(
        "auth_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer, _user_fk(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("family", sa.String(64), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("last_seen_at", sa.String(40), nullable=False),
        sa.Column("expires_at", sa.String(40), nullable=False),
        sa.Column("used_at", sa.String(40), nullable=True),
        sa.Column("ended_at", sa.String(40), nullable=True),
        sa.Column("ended_reason", sa.String(32), nullable=True),
    )
    op.create_index("ix_auth_sessions_user", "auth_sessions", ["user_id"])
    op.create_index("ix_auth_sessions_family", "auth_sessions", ["family"])
    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(160), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_failure_at", sa.String(40), nullable=False),
    )
    op.create_table(
        "patient_links",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.Integer, _user_fk(), nullable=False),
        sa.Column("match_key", sa.String(80), nullable=False, unique=True),
        sa.Column("pid_blind", sa.String(64), nullable=False),
        sa.Column("patient_id_sealed", sa.LargeBinary, nullable=False),
        sa.Column("issuer_sealed", sa.LargeBinary, nullable=True),
        sa.Column("created_at", sa.String(40), nullable=False),
    )
    op.create_index("ix_patient_links_pid", "patient_links", ["pid_blind"])
    op.create_index("ix_patient_links_user", "patient_links", ["user_id"])
    op.create_table(
        "shares",
        sa.Column("study_uid", _UID, sa.ForeignKey("studies.study_uid"), primary_key=True),
        sa.Column("doctor_id", sa.Integer, _user_fk(), primary_key=True),
        sa.Column("patient_id", sa.Integer, _user_fk(), nullable=False),
        sa.Column("granted_at", sa.String(40), nullable=False),
        sa.Column("expires_at", sa.String(40), nullable=True),
        sa.Column("tx_hash", sa.String(66), nullable=True),
    )
    op.create_index("ix_shares_doctor", "shares", ["doctor_id"])


def downgrade() -> None:
    """Not supported: an index is never downgraded (restore a backup instead)."""
    raise NotImplementedError("downgrading the index is not supported; restore a backup")
