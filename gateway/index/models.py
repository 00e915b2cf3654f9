"""Table definitions (SQLAlchemy Core), portable between SQLite and PostgreSQL.

The live schema. Databases are built and changed only by the Alembic revisions in
``gateway/index/migrations/`` (a test checks that head matches these definitions); a change
here needs a new revision.

Core rather than ORM objects: ingest inserts one row per instance on the hot path, and plain
``insert()`` statements cost a fraction of ORM unit-of-work bookkeeping.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

UID = String(64)

devices = Table(
    "devices",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ae_title", String(16), nullable=False, unique=True),
    Column("name", String(200), nullable=False, default=""),
    Column("networks", JSON, nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", String(40), nullable=False),
    # SQLite: never reuse a removed device's id (it names the device in the audit log).
    sqlite_autoincrement=True,
)

# --- the QIDO-shaped levels (PS3.18 Table 6.7.1-2, 6.7.1-2a) ----------------------------
# Columns ending in ``_sealed`` hold a DICOM JSON ``Value`` list sealed with AES-256-GCM under
# the index key (gateway/index/sealing.py), bound to table, column and row identity (for
# patients the patient_key, for studies the Study UID, for series the Series UID, for
# instances "SOP UID/version"). ``*_blind`` columns are keyed blind indexes for exact
# matches. UIDs, dates, times, numbers, modalities and counts stay in clear (README: "What is
# in clear on disk").

# One row per patient identity: Patient ID with its issuer (blinded); an instance without a
# Patient ID gets a patient row of its own per study (``unidentified``).
patients = Table(
    "patients",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("patient_key", String(64), nullable=False, unique=True),
    Column("pid_blind", String(64), nullable=False, index=True),
    Column("unidentified", Boolean, nullable=False),
    Column("patient_id_sealed", LargeBinary, nullable=True),
    Column("issuer_sealed", LargeBinary, nullable=True),
    Column("name_sealed", LargeBinary, nullable=True),
    Column("birth_date_sealed", LargeBinary, nullable=True),
    Column("sex_sealed", LargeBinary, nullable=True),
    Column("created_at", String(40), nullable=False),
)

# Study-level attributes come from the study's first instance; the counts and the list of
# modalities are maintained by ingest in the same transaction as each instance row.
studies = Table(
    "studies",
    metadata,
    Column("study_uid", UID, primary_key=True),
    Column("created_at", String(40), nullable=False),
    Column("patient_ref", Integer, ForeignKey("patients.id"), nullable=False, index=True),
    Column("pid_blind", String(64), nullable=False, index=True),
    Column("study_date", String(8), nullable=True, index=True),
    Column("study_time", String(16), nullable=True),
    Column("accession_blind", String(64), nullable=True, index=True),
    Column("accession_sealed", LargeBinary, nullable=True),
    Column("description_sealed", LargeBinary, nullable=True),
    Column("referring_sealed", LargeBinary, nullable=True),
    Column("study_id_sealed", LargeBinary, nullable=True),
    Column("modalities", String(200), nullable=False),
    Column("num_series", Integer, nullable=False),
    Column("num_instances", Integer, nullable=False),
    # Why the study needs a person's attention, e.g. "patient-id-missing"; NULL: nothing.
    Column("reconcile", String(32), nullable=True, index=True),
)

series = Table(
    "series",
    metadata,
    Column("series_uid", UID, primary_key=True),
    Column("study_uid", UID, ForeignKey("studies.study_uid"), nullable=False, index=True),
    Column("modality", String(16), nullable=True),
    Column("series_number", Integer, nullable=True),
    Column("series_date", String(8), nullable=True),
    Column("series_time", String(16), nullable=True),
    Column("description_sealed", LargeBinary, nullable=True),
    Column("num_instances", Integer, nullable=False),
    Column("created_at", String(40), nullable=False),
)
Index("ix_series_modality", series.c.modality, series.c.study_uid)

study_keys = Table(
    "study_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("study_uid", UID, ForeignKey("studies.study_uid"), nullable=False, index=True),
    Column("kem", String(32), nullable=False),
    Column("custodian_wrap", LargeBinary, nullable=False),
    Column("created_at", String(40), nullable=False),
)

# One HPKE wrap of a study key per recipient (docs/ledger.md, "Key wraps per recipient"):
# "custodian" always, "user:<0x address, lower case>" for a patient linked to the study's Patient
# ID and every doctor it is shared with. Written in the ingest transaction (gateway/keywraps.py);
# rows of homes written before this table fall back to ``study_keys.custodian_wrap``.
key_wraps = Table(
    "key_wraps",
    metadata,
    Column("key_id", String(32), ForeignKey("study_keys.key_id"), primary_key=True),
    Column("recipient", String(80), primary_key=True),
    Column("kem", String(32), nullable=False),
    Column("wrap", LargeBinary, nullable=False),
    Column("created_at", String(40), nullable=False),
)

instances = Table(
    "instances",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sop_instance_uid", UID, nullable=False),
    Column("version", Integer, nullable=False),
    Column("study_uid", UID, ForeignKey("studies.study_uid"), nullable=False),
    Column("series_uid", UID, nullable=False),
    Column("sop_class_uid", UID, nullable=False),
    Column("transfer_syntax", UID, nullable=False),
    Column("cid", String(100), nullable=False),
    # The header object (gateway/header.py): the data set without bulk data, sealed on its
    # own. NULL for rows stored before it existed: readers then cut the header from the
    # object itself.
    Column("header_cid", String(100), nullable=True),
    Column("stored_size", Integer, nullable=False),
    Column("size", Integer, nullable=False),
    # SHA-256 of the data set exactly as the sender encoded it (the file meta group is ours).
    Column("sha256", String(64), nullable=False),
    Column("key_id", String(32), ForeignKey("study_keys.key_id"), nullable=False),
    Column("instance_number", Integer, nullable=True),
    # The indexed attributes (gateway/metadata.py) as DICOM JSON, sealed.
    Column("metadata_sealed", LargeBinary, nullable=False),
    Column("flag", String(32), nullable=True),
    Column("received_at", String(40), nullable=False),
    Column("origin", String(16), nullable=False),
    Column("calling_ae", String(16), nullable=True),
    Column("device_id", Integer, nullable=True),
    # Pixel geometry that disagrees with the Pixel Data (gateway/pixels.py: "short", "excess"
    # or "invalid"); NULL when it agrees, there is none, or the row predates the check.
    Column("pixel_flag", String(16), nullable=True),
    UniqueConstraint("sop_instance_uid", "version", name="uq_instance_version"),
)
Index("ix_instances_study", instances.c.study_uid, instances.c.series_uid)
Index("ix_instances_sop", instances.c.sop_instance_uid)

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("ts", String(40), nullable=False),
    Column("kind", String(48), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("detail", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

# One row: the head of the audit chain. Updated in the same transaction as each append, it
# serializes writers (SELECT ... FOR UPDATE on PostgreSQL) and lets verification notice a
# truncated tail, which a chain alone cannot.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)


# Device posture (docs/posture.md). One row per enrolled device: the policy it is judged by
# ("none": posture not required) and the Ed25519 public key its reports must verify with.
# The last refused attempt is kept so an admission refusal can say why no fresh report exists.
device_posture = Table(
    "device_posture",
    metadata,
    Column("device_id", Integer, ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    Column("policy", String(64), nullable=False),
    Column("public_key", String(64), nullable=True),
    Column("enrolled_at", String(40), nullable=False),
    Column("last_refused_at", String(40), nullable=True),
    Column("last_refused", Text, nullable=True),
)

# Accepted (signature-verified) reports with their verdict. The newest by issue time is the
# device's current posture; older rows are kept as long as a replay could still look fresh,
# so the (device, nonce) key doubles as the replay guard.
posture_reports = Table(
    "posture_reports",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", Integer, ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
    Column("nonce", String(64), nullable=False),
    Column("issued_ms", BigInteger, nullable=False),
    Column("received_at", String(40), nullable=False),
    Column("policy", String(64), nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("reasons", JSON, nullable=False),
    Column("notes", JSON, nullable=False),
    Column("report", Text, nullable=False),
    Column("signature", String(100), nullable=False),
    UniqueConstraint("device_id", "nonce", name="uq_posture_nonce"),
)
Index("ix_posture_latest", posture_reports.c.device_id, posture_reports.c.issued_ms)

# Every nonce accepted from a device, kept for the longest report age any policy may allow
# (7 days) plus the largest future skew (1 h), whatever the policies say today: report rows
# are pruned to today's policies, and a policy made more lenient after a restart, or a clock
# stepped back, must not make a pruned report replayable. A few dozen bytes a report.
posture_nonces = Table(
    "posture_nonces",
    metadata,
    Column("device_id", Integer, ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    Column("nonce", String(64), primary_key=True),
    Column("issued_ms", BigInteger, nullable=False),
)
Index("ix_posture_nonces_issued", posture_nonces.c.issued_ms)

# DICOM TLS and user identity, per device (gateway/credentials.py). Rows go with their device
# (ON DELETE CASCADE).
device_tls = Table(
    "device_tls",
    metadata,
    Column("device_id", Integer, ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    Column("require_tls", Boolean, nullable=False, default=False),
)

# Every client certificate issued to a device; admission accepts a TLS peer only if its
# certificate's SHA-256 is here, active, for the calling AE title's device.
device_certificates = Table(
    "device_certificates",
    metadata,
    Column("fingerprint", String(64), primary_key=True),
    Column(
        "device_id",
        Integer,
        ForeignKey("devices.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("serial", String(40), nullable=False),
    Column("not_after", String(40), nullable=False),
    Column("issued_at", String(40), nullable=False),
    Column("revoked_at", String(40), nullable=True),
)

# What a device must prove with DICOM User Identity Negotiation (gateway/identity.py).
device_identity = Table(
    "device_identity",
    metadata,
    Column("device_id", Integer, ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    Column("kind", String(16), nullable=False),  # "passcode" | "jwt"
    Column("username", String(200), nullable=True),
    Column("passcode_hash", Text, nullable=True),  # argon2id PHC string
    Column("jwt_issuer", String(500), nullable=True),
    Column("jwt_audience", String(200), nullable=True),
    Column("jwt_subject", String(200), nullable=True),
    Column("jwt_public_key", Text, nullable=True),  # PEM SubjectPublicKeyInfo
)

# --- ledger and anchoring (docs/ledger.md) ------------------------------------------------

# Where the registry contract lives: one row per chain it was deployed to. The chain is
# recognised by its chain id and the hash of the block that deployed the contract (a reset or
# foreign chain has another block there; the genesis hash is not used because anvil mints a
# new genesis block at every restart from a --state file and may present it).
ledger_deployments = Table(
    "ledger_deployments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("backend", String(16), nullable=False),
    Column("chain_id", Integer, nullable=False),
    Column("deploy_block_hash", String(66), nullable=False),
    Column("address", String(42), nullable=False),
    Column("deploy_block", Integer, nullable=False),
    Column("rpc_url", String(500), nullable=True),
    Column("admin", String(42), nullable=False),
    Column("sender", String(42), nullable=False),
    Column("custodian", String(42), nullable=False),
    Column("created_at", String(40), nullable=False),
    UniqueConstraint("backend", "chain_id", "deploy_block_hash", name="uq_deployment_chain"),
)

# The outbox of study anchors: one row per sealed batch, written in the same commit as the
# batch's membership rows. ``state``: pending -> anchored (or conflict: the record id exists
# on-chain with another root, which only a bug or a foreign writer can cause).
anchor_batches = Table(
    "anchor_batches",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_uid", UID, nullable=False, index=True),
    Column("batch_no", Integer, nullable=False),
    Column("record_id", String(64), nullable=False, unique=True),
    Column("owner", String(42), nullable=False),
    Column("merkle_root", String(64), nullable=False),
    Column("manifest_cid", String(100), nullable=False),
    Column("manifest_key_id", String(32), nullable=False),
    Column("manifest_key_wrap", LargeBinary, nullable=False),
    Column("capsule", LargeBinary, nullable=False),
    Column("instance_count", Integer, nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("deployment_id", Integer, nullable=True),
    Column("tx_hash", String(66), nullable=True),
    Column("block_number", Integer, nullable=True),
    Column("gas_used", Integer, nullable=True),
    Column("anchored_at", String(40), nullable=True),
    UniqueConstraint("study_uid", "batch_no", name="uq_batch_study_no"),
)
Index("ix_anchor_batches_state", anchor_batches.c.state, anchor_batches.c.id)

# Who owns a study on-chain once it was transferred from the custodian to its patient
# (gateway/anchoring/transfer.py): later batches are sealed and anchored to this account
# directly. No row: the custodian owns the study. The HPKE key is the one the registry holds.
study_owners = Table(
    "study_owners",
    metadata,
    Column("study_uid", UID, ForeignKey("studies.study_uid"), primary_key=True),
    Column("owner", String(42), nullable=False),
    Column("recipient", String(80), nullable=False),
    Column("kem", String(32), nullable=False),
    Column("public_key", LargeBinary, nullable=False),
    Column("transferred_at", String(40), nullable=False),
)

# One row (id 1): every instance row with a smaller id points at a durable object
# (gateway/settling.py). Rows at or above it may have committed while their ciphertext was
# still being flushed; after a crash they are checked against the store.
settling = Table(
    "settling",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("settled_below", Integer, nullable=False),
)

# Which batch each instance went into (an instance is in exactly one batch).
anchor_batch_members = Table(
    "anchor_batch_members",
    metadata,
    Column("instance_id", Integer, ForeignKey("instances.id"), primary_key=True),
    Column("batch_id", Integer, ForeignKey("anchor_batches.id"), nullable=False, index=True),
)

# The outbox of audit anchors: contiguous sequence ranges, per deployment (each chain's
# contract insists the ranges it holds start at 1 and never leave a gap).
audit_anchors = Table(
    "audit_anchors",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("deployment_id", Integer, nullable=False),
    Column("from_seq", Integer, nullable=False),
    Column("to_seq", Integer, nullable=False),
    Column("root", String(64), nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("tx_hash", String(66), nullable=True),
    Column("block_number", Integer, nullable=True),
    Column("gas_used", Integer, nullable=True),
    Column("anchored_at", String(40), nullable=True),
    UniqueConstraint("deployment_id", "from_seq", name="uq_audit_anchor_range"),
)

# --- accounts (gateway/accounts/, revision 7) ---------------------------------------------
# Patient, doctor and staff accounts. Secrets are never stored in clear: the password as an
# argon2id PHC string, the TOTP secret sealed under the index key, the private keys sealed
# under a key derived from the password (``keys_sealed``) and escrowed to the custodian's
# HPKE key (``keys_escrow``). ``chain_state``: "pending" until the registry mirrors the row
# (addUser, suspendUser, reinstateUser), then "synced"; "none" for roles the contract lacks.
users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("display_name", String(200), nullable=False),
    Column("suspended", Boolean, nullable=False),
    Column("eth_address", String(42), nullable=False, unique=True),
    Column("hpke_kem", String(32), nullable=False),
    Column("hpke_public", LargeBinary, nullable=False),
    Column("keys_escrow", LargeBinary, nullable=False),
    Column("keys_sealed", LargeBinary, nullable=True),
    Column("password_hash", Text, nullable=True),
    Column("totp_secret_sealed", LargeBinary, nullable=True),
    # The last TOTP time step accepted (RFC 6238 5.2); -1: none yet.
    Column("totp_last_step", BigInteger, nullable=False),
    Column("chain_state", String(16), nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("enrolled_at", String(40), nullable=True),
    sqlite_autoincrement=True,
)

# Ten single-use codes per enrollment, SHA-256 of each (they are random, 80 bits).
recovery_codes = Table(
    "recovery_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("used_at", String(40), nullable=True),
)
Index("ix_recovery_codes_user", recovery_codes.c.user_id)

# One-time enrollment (and recovery) links: the token's SHA-256, and the account's private
# keys sealed under a key derived from the token itself until a password replaces it.
enrollment_tokens = Table(
    "enrollment_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("purpose", String(16), nullable=False),
    Column("keys_sealed", LargeBinary, nullable=False),
    Column("totp_secret_sealed", LargeBinary, nullable=True),
    Column("created_at", String(40), nullable=False),
    Column("expires_at", String(40), nullable=False),
    Column("used_at", String(40), nullable=True),
)
Index("ix_enrollment_tokens_user", enrollment_tokens.c.user_id)

# Browser sessions, access tokens and refresh tokens: the SHA-256 of the opaque id only.
# ``family`` ties a login's rotations together (one refresh-token family, or one browser
# session across its id rotations); ending a family ends every row of it.
auth_sessions = Table(
    "auth_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("family", String(64), nullable=False),
    Column("stage", String(16), nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("last_seen_at", String(40), nullable=False),
    Column("expires_at", String(40), nullable=False),
    Column("used_at", String(40), nullable=True),
    Column("ended_at", String(40), nullable=True),
    Column("ended_reason", String(32), nullable=True),
)
Index("ix_auth_sessions_user", auth_sessions.c.user_id)
Index("ix_auth_sessions_family", auth_sessions.c.family)

# Failed logins per (account, address) and per address, for the capped exponential delay.
login_throttle = Table(
    "login_throttle",
    metadata,
    Column("key", String(160), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last_failure_at", String(40), nullable=False),
)

# A patient account tied to a DICOM Patient ID (with its issuer, or any issuer). The Patient
# ID is sealed; ``match_key`` ("pkey:" + the patients.patient_key blind, or "pid:" + the
# Patient ID blind when no issuer is given) keeps one identity to one account.
patient_links = Table(
    "patient_links",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("match_key", String(80), nullable=False, unique=True),
    Column("pid_blind", String(64), nullable=False),
    Column("patient_id_sealed", LargeBinary, nullable=False),
    Column("issuer_sealed", LargeBinary, nullable=True),
    Column("created_at", String(40), nullable=False),
)
Index("ix_patient_links_pid", patient_links.c.pid_blind)
Index("ix_patient_links_user", patient_links.c.user_id)

# A patient's share of a study with a doctor, mirrored from the registry's grant/revoke.
shares = Table(
    "shares",
    metadata,
    Column("study_uid", UID, ForeignKey("studies.study_uid"), primary_key=True),
    Column("doctor_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("patient_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("granted_at", String(40), nullable=False),
    Column("expires_at", String(40), nullable=True),
    Column("tx_hash", String(66), nullable=True),
)
Index("ix_shares_doctor", shares.c.doctor_id)
