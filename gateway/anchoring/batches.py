"""Sealing batches: a study's not-yet-anchored instances become one manifest and one outbox row.

Per batch (never per instance, and never on the ingest path): read the batch's index rows and
the study keys' wraps (``key_wraps``, through ``gateway.keywraps.wraps_for``), build the
manifest, encrypt it under a fresh manifest key, store it in the content store, wrap the
manifest key to the custodian and seal the capsule to the record owner, then write the outbox
row and the membership rows in ONE commit. A crash before that commit leaves at most an
unreferenced manifest object; the instances stay unbatched and are sealed again later.

Nothing here reads the ingest's in-memory key cache: the capsule carries the owner's own wrap
of every study key the batch uses, read from the index, so what it holds does not depend on
timing (a restart, an idle eviction). Why a fresh manifest key rather than the study key
(docs/ledger.md, "Keys"): a batch can span several study keys (a study resumed under a new
key), and the gateway holds no plaintext study key outside ingest; a per-batch key is always
at hand. It reaches the owner inside the capsule, and the custodian through its wrap in the row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, exists, func, insert, select

from gateway import crypto
from gateway.anchoring.manifest import (
    Capsule,
    KeyWrap,
    Manifest,
    ManifestEntry,
    capsule_info,
    manifest_key_info,
    record_id,
)
from gateway.clock import Clock
from gateway.errors import StorageError
from gateway.index.database import Database
from gateway.index.models import anchor_batch_members, anchor_batches, instances
from gateway.keys import CustodianPublic
from gateway.keywraps import CUSTODIAN, MissingKeyWrapError, wraps_for
from gateway.logsafe import shown
from gateway.store.base import ContentStore

log = logging.getLogger("ztbridge.anchoring")

_NOT_BATCHED = ~exists().where(anchor_batch_members.c.instance_id == instances.c.id)
# Grouped in SQL: a sweep during a long push returns one row per study, not per instance.
# ``received_at`` is ISO 8601 in UTC from one clock, so its text order is its time order.
_UNBATCHED_SINCE = (
    select(
        instances.c.study_uid,
        func.max(instances.c.received_at).label("last_at"),
        func.min(instances.c.id).label("first_id"),
    )
    .where(instances.c.id > bindparam("low"), _NOT_BATCHED)
    .group_by(instances.c.study_uid)
)
_MAX_ID = select(func.coalesce(func.max(instances.c.id), 0))
_BATCH_ROWS = (
    select(
        instances.c.id,
        instances.c.cid,
        instances.c.sha256,
        instances.c.size,
        instances.c.sop_class_uid,
        instances.c.sop_instance_uid,
        instances.c.version,
        instances.c.key_id,
    )
    .where(
        instances.c.study_uid == bindparam("study"),
        instances.c.id < bindparam("horizon"),
        _NOT_BATCHED,
    )
    .order_by(instances.c.id)
)
#: ``horizon`` when no row is settling: above any id an index will hold.
_NO_HORIZON = 1 << 62
_LAST_BATCH_NO = select(func.coalesce(func.max(anchor_batches.c.batch_no), 0)).where(
    anchor_batches.c.study_uid == bindparam("study")
)


@dataclass(frozen=True)
class RecordOwner:
    """Whom a record belongs to on-chain: an account, the HPKE key its capsule is sealed to,
    and its recipient name in ``key_wraps`` (``custodian`` or ``user:0x…``), whose wraps of
    the study keys go into the capsule."""

    address: str
    public: bytes
    kem: crypto.KemName
    recipient: str = CUSTODIAN


@dataclass(frozen=True)
class Scan:
    """Unbatched instances seen by one sweep.

    ``last_arrival``: study -> latest ``received_at`` among its unbatched instances;
    ``first_unbatched``: the lowest unbatched instance id (None if none); ``max_id``: the
    highest instance id at the time.
    """

    last_arrival: dict[str, datetime]
    first_unbatched: int | None
    max_id: int


@dataclass(frozen=True)
class SealedBatch:
    """What one seal produced (the row is already committed)."""

    batch_id: int
    study_uid: str
    batch_no: int
    record_id: bytes
    merkle_root: bytes
    manifest_cid: str
    instance_count: int


class BatchSealer:
    """Finds unbatched instances and seals them into batches."""

    def __init__(
        self,
        db: Database,
        store: ContentStore,
        custodian: CustodianPublic,
        record_secret: bytes,
        clock: Clock,
        *,
        horizon: Callable[[], int | None] = lambda: None,
    ) -> None:
        """``horizon``: the lowest instance id whose ciphertext may still be flushing
        (``gateway.settling``): a batch holds only rows below it, never one that might yet
        be withdrawn."""
        self._db = db
        self._store = store
        self._horizon = horizon
        self._custodian = custodian
        self._secret = record_secret
        self._clock = clock

    def scan(self, low: int = 0) -> Scan:
        """Unbatched instances with an id above ``low`` (0: all of them)."""
        last: dict[str, datetime] = {}
        first: int | None = None
        with self._db.read() as conn:
            max_id = int(conn.execute(_MAX_ID).scalar_one())
            for row in conn.execute(_UNBATCHED_SINCE, {"low": low}):
                last[row.study_uid] = datetime.fromisoformat(row.last_at)
                first = row.first_id if first is None else min(first, row.first_id)
        return Scan(last, first, max_id)

    def seal(
        self, study_uid: str, owner: RecordOwner, fallback: RecordOwner | None = None
    ) -> SealedBatch | None:
        """Seal every unbatched instance of ``study_uid`` into one batch; None if none.

        ``fallback`` (the custodian): the owner when ``owner`` (a patient the study was
        transferred to) lacks a wrap of a study key the batch uses, e.g. a key made after a
        restart for a Patient ID the directory does not link. The contract takes such a record
        into the patient's study as custodian-owned, pending a transfer (run it again).
        """
        with self._db.read() as conn:
            horizon = self._horizon()
            rows = conn.execute(
                _BATCH_ROWS,
                {"study": study_uid, "horizon": _NO_HORIZON if horizon is None else horizon},
            ).all()
            if not rows:
                return None
            batch_no = int(conn.execute(_LAST_BATCH_NO, {"study": study_uid}).scalar_one()) + 1
            key_ids = sorted({r.key_id for r in rows})
            custodian_wraps = wraps_for(conn, key_ids, CUSTODIAN)
            owner_wraps = (
                custodian_wraps
                if owner.recipient == CUSTODIAN
                else wraps_for(conn, key_ids, owner.recipient)
            )
        lacking = [k for k in key_ids if k not in owner_wraps]
        if lacking and fallback is not None and fallback.recipient == CUSTODIAN:
            log.warning(
                "study %s: its owner %s holds no wrap of %d study key(s); this batch goes to"
                " the custodian, pending a transfer",
                study_uid,
                owner.address,
                len(lacking),
            )
            owner, owner_wraps = fallback, custodian_wraps
            lacking = [k for k in key_ids if k not in owner_wraps]
        if lacking:  # sealing now would anchor a record its owner could not read
            raise MissingKeyWrapError(
                f"the record owner {owner.recipient} has no wrap of study key(s)"
                f" {', '.join(lacking)}; add it (gateway.keywraps.add_recipient) first"
            )
        entries = tuple(
            ManifestEntry(
                cid=r.cid,
                sha256=bytes.fromhex(r.sha256),
                size=int(r.size),
                sop_class=r.sop_class_uid,
                sop_instance=r.sop_instance_uid,
                version=int(r.version),
                key_id=r.key_id,
            )
            for r in rows
        )
        rid = record_id(self._secret, study_uid, batch_no)
        now = self._clock.now().isoformat()
        manifest = Manifest(
            record_id=rid,
            study_uid=study_uid,
            batch_no=batch_no,
            created_at=now,
            entries=entries,
            key_wraps=tuple(
                KeyWrap(k, custodian_wraps[k].kem, custodian_wraps[k].wrap)
                for k in key_ids
                if k in custodian_wraps
            ),
        )
        root = manifest.root
        manifest_key, manifest_key_id = crypto.new_data_key(), crypto.new_key_id()
        manifest_cid = self._store.put(
            crypto.seal(manifest_key, manifest_key_id, manifest.to_bytes())
        )
        capsule = Capsule(
            manifest_cid,
            manifest_key_id,
            manifest_key,
            study_key_wraps=tuple((bytes.fromhex(k), owner_wraps[k].wrap) for k in key_ids),
        )
        sealed_capsule = crypto.wrap(owner.public, owner.kem, capsule.to_bytes(), capsule_info(rid))
        key_wrap = crypto.wrap(
            self._custodian.public,
            self._custodian.kem,
            manifest_key,
            manifest_key_info(manifest_key_id.hex()),
        )
        with self._db.write() as conn:
            result = conn.execute(
                insert(anchor_batches).values(
                    study_uid=study_uid,
                    batch_no=batch_no,
                    record_id=rid.hex(),
                    owner=owner.address,
                    merkle_root=root.hex(),
                    manifest_cid=manifest_cid,
                    manifest_key_id=manifest_key_id.hex(),
                    manifest_key_wrap=key_wrap,
                    capsule=sealed_capsule,
                    instance_count=len(rows),
                    created_at=now,
                    state="pending",
                    attempts=0,
                )
            )
            assert result.inserted_primary_key is not None
            batch_id = int(result.inserted_primary_key[0])
            conn.execute(
                insert(anchor_batch_members),
                [{"instance_id": r.id, "batch_id": batch_id} for r in rows],
            )
        log.info(
            "study %s batch %d sealed: %d instance(s), record %s…, root %s…",
            shown(study_uid),
            batch_no,
            len(rows),
            rid.hex()[:12],
            root.hex()[:12],
        )
        return SealedBatch(batch_id, study_uid, batch_no, rid, root, manifest_cid, len(rows))

    def reseal_capsule(self, batch_id: int, owner: RecordOwner, custodian: crypto.KeyPair) -> bytes:
        """The capsule of an existing batch, sealed anew to ``owner`` (a transfer): the same
        manifest key (opened from the custodian's wrap in the row) and ``owner``'s wraps of
        every study key the batch uses (MissingKeyWrapError if one is lacking)."""
        with self._db.read() as conn:
            row = conn.execute(select(anchor_batches).where(anchor_batches.c.id == batch_id)).one()
            key_ids = sorted(
                {
                    r.key_id
                    for r in conn.execute(
                        select(instances.c.key_id)
                        .join(
                            anchor_batch_members,
                            anchor_batch_members.c.instance_id == instances.c.id,
                        )
                        .where(anchor_batch_members.c.batch_id == batch_id)
                    )
                }
            )
            wraps = wraps_for(conn, key_ids, owner.recipient)
        lacking = [k for k in key_ids if k not in wraps]
        if lacking:
            raise MissingKeyWrapError(
                f"{owner.recipient} has no wrap of study key(s) {', '.join(lacking)}"
            )
        manifest_key = crypto.unwrap(
            custodian, bytes(row.manifest_key_wrap), manifest_key_info(row.manifest_key_id)
        )
        capsule = Capsule(
            row.manifest_cid,
            bytes.fromhex(row.manifest_key_id),
            manifest_key,
            study_key_wraps=tuple((bytes.fromhex(k), wraps[k].wrap) for k in key_ids),
        )
        rid = bytes.fromhex(row.record_id)
        return crypto.wrap(owner.public, owner.kem, capsule.to_bytes(), capsule_info(rid))

    def seal_many(
        self,
        studies: Sequence[str],
        owner_of: Callable[[str], RecordOwner],
        fallback: RecordOwner | None = None,
    ) -> list[SealedBatch]:
        """Seal each study in turn; one failure is logged and does not stop the others."""
        sealed = []
        for study in studies:
            try:
                batch = self.seal(study, owner_of(study), fallback)
            except (StorageError, MissingKeyWrapError) as e:
                log.error("could not seal a batch of study %s: %s", study, e)
                continue
            if batch is not None:
                sealed.append(batch)
        return sealed
