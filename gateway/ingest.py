"""The one way an instance enters ztbridge: C-STORE, ``ztbridge import`` and STOW-RS all call
``Ingestor.ingest``.

validate → encrypt (AES-256-GCM under the study key) → content store (durable) → index row +
audit event (one durable commit) → receipt. Nothing is acknowledged before both the ciphertext
and its row are on stable storage; a crash in between leaves at most an unreferenced
ciphertext object, never a row without its object. Bad input never raises: it returns a
receipt with the DICOM status to answer and the reason, which is also logged and audited.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, NamedTuple

from sqlalchemy import bindparam, insert, select

from gateway import crypto
from gateway.audit import AuditEvent, AuditLog
from gateway.clock import Clock
from gateway.dataset import DEFLATED, Scan, file_meta, refuse_file_meta, scan
from gateway.deflated import InflateLimits, inflate_checked
from gateway.dimse_status import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_DATASET_MISMATCH,
    STATUS_OUT_OF_RESOURCES,
)
from gateway.dimse_status import STATUS_SUCCESS as STATUS_SUCCESS  # re-exported
from gateway.errors import DatasetRefusedError, StorageError
from gateway.header import header_sections
from gateway.index.database import Database, Tx
from gateway.index.models import instances, studies, study_keys
from gateway.index.qido import QidoWriter
from gateway.keys import StudyKey, StudyKeyCache
from gateway.keywraps import NO_RECIPIENTS, RecipientDirectory, insert_rows, new_key_rows
from gateway.logsafe import shown
from gateway.metadata import WANTED, first_strings, read_indexed
from gateway.pixels import GeometryVerdict, check_geometry, facts_from_doc
from gateway.settling import Settling, Withdrawn, record_watermark, withdraw
from gateway.store.base import ContentStore, PendingObject
from gateway.validation import required_identifiers

log = logging.getLogger("ztbridge.ingest")

#: Studies whose patient is remembered for the pre-check (a few hundred bytes each).
_PATIENT_CACHE_SIZE = 4096

# Built once: constructing a statement costs more than executing it on SQLite.
_VERSIONS = select(instances.c.version, instances.c.sha256, instances.c.id).where(
    instances.c.sop_instance_uid == bindparam("sop")
)
_CID_OF = select(instances.c.cid, instances.c.id).where(
    instances.c.sop_instance_uid == bindparam("sop"), instances.c.version == bindparam("version")
)
_STUDY_PATIENT = select(studies.c.pid_blind).where(studies.c.study_uid == bindparam("study"))
_STUDY_EXISTS = select(studies.c.study_uid).where(studies.c.study_uid == bindparam("study"))
_INSERT_INSTANCE = insert(instances).returning(instances.c.id)
_INSERT_KEY = insert(study_keys)


@dataclass(frozen=True)
class Origin:
    """Who handed us the instance, for the index and the audit log."""

    kind: Literal["c-store", "import", "stow"]
    actor: str
    calling_ae: str | None = None
    device_id: int | None = None


@dataclass(frozen=True)
class Incoming:
    """An encoded data set exactly as received, without file meta information.

    May be a view of the receive buffer (no copy); it must stay valid for the ingest call.
    """

    dataset: bytes | memoryview
    transfer_syntax: str
    declared_sop_class: str | None = None
    declared_sop_instance: str | None = None
    source_ae: str | None = None


class Outcome(StrEnum):
    """What ingest did with an instance."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    NEW_VERSION = "new-version"
    REFUSED = "refused"


@dataclass(frozen=True)
class Receipt:
    """The result of one ingest: the DIMSE status to answer, and what happened."""

    outcome: Outcome
    status: int
    sop_instance_uid: str | None = None
    study_uid: str | None = None
    cid: str | None = None
    version: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the sender may consider the instance safely stored."""
        return self.outcome is not Outcome.REFUSED


class _Examined(NamedTuple):
    """What the checks before any storage found out about an instance."""

    plain: bytes | memoryview  # the data set as scanned (the header alone, when deflated)
    layout: Scan
    doc: dict[str, Any]
    geometry: GeometryVerdict
    strings: dict[str, str]
    ids: dict[str, str]


def _patient_mismatch(patient_id: str) -> DatasetRefusedError:
    # The value itself is not named: the reason goes to the log and the audit log, and the
    # index holds no Patient ID in clear.
    which = "an empty Patient ID" if not patient_id else "the Patient ID"
    return DatasetRefusedError(
        f"{which} differs from the patient already stored for this study; correct the"
        " Patient ID at the modality (or the Study Instance UID)",
        STATUS_DATASET_MISMATCH,
    )


def _sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


class Ingestor:
    """Validates, encrypts, stores and indexes instances. Thread-safe."""

    def __init__(
        self,
        db: Database,
        store: ContentStore,
        keys: StudyKeyCache,
        audit: AuditLog,
        clock: Clock,
        max_instance_bytes: int,
        recipients: RecipientDirectory = NO_RECIPIENTS,
        require_patient_id: bool = False,
        settling: Settling | None = None,
        inflate_limits: InflateLimits = InflateLimits(),
    ) -> None:
        self._db = db
        #: rows committed while their ciphertext is still being flushed (gateway/settling.py)
        self.settling = settling or Settling()
        self._recipients = recipients  # who besides the custodian gets each new study key
        self._store = store
        self._keys = keys
        self._audit = audit
        self._clock = clock
        self._max_bytes = max_instance_bytes
        self._require_patient_id = require_patient_id
        self._inflate_limits = inflate_limits
        if db.cipher is None:
            raise StorageError("ingest needs the index opened with its index key (cipher)")
        self._qido = QidoWriter(db.cipher)
        # study UID -> blind index of its Patient ID (never the Patient ID itself)
        self._patients: OrderedDict[str, str] = OrderedDict()
        self._patients_lock = threading.Lock()
        self._hasher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ztbridge-hash")

    def close(self) -> None:
        """Stop the hashing threads."""
        self._hasher.shutdown(wait=True)

    def ingest(self, incoming: Incoming, origin: Origin) -> Receipt:
        """Store one instance; never raises for bad input or a full disk (see Receipt)."""
        try:
            return self._ingest(incoming, origin)
        except DatasetRefusedError as e:
            return self._refused(e.reason, e.status, origin, incoming.declared_sop_instance)
        except StorageError as e:
            log.error("storage failure during ingest: %s", e)
            return self._refused(
                f"storage failure: {e}",
                STATUS_OUT_OF_RESOURCES,
                origin,
                incoming.declared_sop_instance,
            )
        except Exception as e:  # a bug must still be answered, audited and logged
            log.exception("unexpected error during ingest")
            return self._refused(
                f"internal error: {type(e).__name__}: {e}",
                STATUS_CANNOT_UNDERSTAND,
                origin,
                incoming.declared_sop_instance,
            )

    @property
    def max_instance_bytes(self) -> int:
        """The largest data set accepted, so the DICOM edge can stop buffering past it."""
        return self._max_bytes

    def refuse(self, reason: str, status: int, origin: Origin, sop_uid: str | None) -> Receipt:
        """Refuse an instance that never reached ``ingest`` whole (the DICOM edge stopped
        buffering it, e.g. past the size limit): logged and audited like any refusal."""
        return self._refused(reason, status, origin, sop_uid)

    def _refused(self, reason: str, status: int, origin: Origin, sop_uid: str | None) -> Receipt:
        log.warning("refused instance %s from %s: %s", shown(sop_uid), origin.actor, reason)
        try:
            self._audit.record(
                AuditEvent(
                    "instance.refused",
                    origin.actor,
                    sop_uid or "",
                    "refused",
                    {"reason": reason, "status": f"0x{status:04X}", "origin": origin.kind},
                )
            )
        except StorageError as e:
            log.error("could not audit a refusal: %s", e)
        return Receipt(Outcome.REFUSED, status, sop_uid, reason=reason)

    def identify(self, incoming: Incoming) -> dict[str, str]:
        """The identifiers ``ingest`` would key this instance on, checked exactly as
        ``ingest`` checks them, without storing anything (STOW-RS checks every part of a
        request before it stores the first). Raises ``DatasetRefusedError``."""
        return self._examine(incoming).ids

    def _examine(self, incoming: Incoming) -> _Examined:
        """Size, transfer syntax, one scan, identifiers: every check that needs no index."""
        raw = incoming.dataset
        ts = incoming.transfer_syntax
        if len(raw) > self._max_bytes:
            raise DatasetRefusedError(
                f"instance of {len(raw)} bytes exceeds the limit of {self._max_bytes}",
                STATUS_OUT_OF_RESOURCES,
            )
        if ts in DEFLATED:  # bounded memory: only the header is kept (gateway/deflated.py)
            inflated = inflate_checked(raw, self._inflate_limits)
            plain: bytes | memoryview = inflated.header
            layout = scan(plain, ts, WANTED)
            pixels, fragments = inflated.pixel_length, inflated.pixel_fragments
        else:
            plain = raw
            layout = scan(plain, ts, WANTED)
            refuse_file_meta(plain, ts)
            pixels = layout.pixel_length if layout.pixel_offset < len(plain) else None
            fragments = layout.pixel_fragments
        doc = read_indexed(plain, layout)
        geometry = check_geometry(facts_from_doc(doc, pixels, fragments, ts))
        strings = first_strings(doc)
        ids = required_identifiers(
            strings,
            incoming.declared_sop_class,
            incoming.declared_sop_instance,
            self._require_patient_id,
        )
        return _Examined(plain, layout, doc, geometry, strings, ids)

    def _ingest(self, incoming: Incoming, origin: Origin) -> Receipt:
        raw = incoming.dataset
        ts = incoming.transfer_syntax
        plain, layout, doc, geometry, strings, ids = self._examine(incoming)
        sop_uid, study_uid = ids["SOPInstanceUID"], ids["StudyInstanceUID"]
        # The hash runs on the second core (hashlib releases the GIL) while this thread
        # encrypts and content-addresses; it is needed early only for a UID seen before.
        digest = self._hasher.submit(_sha256_hex, raw)

        patient = self._qido.cipher.patient_id_blind(ids["PatientID"])
        self._precheck_patient(study_uid, patient, ids["PatientID"])
        previous = self._versions(sop_uid)
        if previous and digest.result() in {sha for sha, _ in previous.values()}:
            return self._duplicate(sop_uid, study_uid, digest.result(), origin)

        meta = file_meta(ids["SOPClassUID"], sop_uid, ts, incoming.source_ae or origin.calling_ae)
        key, key_is_new = self._keys.issue(study_uid)
        ciphertext = crypto.seal_parts(key.key, bytes.fromhex(key.key_id), [meta, raw])
        source = incoming.source_ae or origin.calling_ae
        header = header_sections(meta, ts, plain, layout, ids["SOPClassUID"], sop_uid, source)
        sealed_header = crypto.seal_parts(key.key, bytes.fromhex(key.key_id), header)
        # One append for both (one flush); the flush runs while SQL executes.
        pending, header_pending = self._store.put_many_nowait([ciphertext, sealed_header])
        cid = pending.cid
        dataset_sha = digest.result()
        # Wrapped before the transaction: HPKE per recipient, only for a new study key.
        issuer = strings.get("IssuerOfPatientID", "")
        linked = (
            self._recipients.recipients_for(ids["PatientID"], issuer, study_uid)
            if key_is_new
            else ()
        )
        wraps = new_key_rows(key, linked, self._clock.now().isoformat()) if key_is_new else []

        instance_id: int | None = None  # our row, once inserted (registered as unsettled)
        copy_id: int | None = None  # an identical copy's row, which may still be settling
        try:
            with self._db.fast_write() as conn:
                self._check_patient(study_uid, patient, ids["PatientID"], conn)
                versions = self._versions(sop_uid, conn)
                same = [v for v, (sha, _) in versions.items() if sha == dataset_sha]
                if same:  # an identical copy landed meanwhile
                    version = same[0]
                    outcome = Outcome.DUPLICATE
                    cid, copy_id = self._landed_meanwhile(conn, sop_uid, version, cid, origin)
                else:
                    version = max(versions, default=0) + 1
                    outcome = Outcome.STORED if version == 1 else Outcome.NEW_VERSION
                    now = self._clock.now().isoformat()
                    if key_is_new:
                        self._ensure_study(conn, ids, key, doc)
                        insert_rows(conn, wraps)  # key_wraps: custodian + linked recipients
                    inserted = conn.execute(
                        _INSERT_INSTANCE,
                        dict(
                            sop_instance_uid=sop_uid,
                            version=version,
                            study_uid=study_uid,
                            series_uid=ids["SeriesInstanceUID"],
                            sop_class_uid=ids["SOPClassUID"],
                            transfer_syntax=ts,
                            cid=cid,
                            header_cid=header_pending.cid,
                            stored_size=len(ciphertext),
                            size=len(meta) + len(raw),
                            sha256=dataset_sha,
                            key_id=key.key_id,
                            flag="new-version" if version > 1 else None,
                            pixel_flag=geometry.flag,
                            received_at=now,
                            origin=origin.kind,
                            calling_ae=origin.calling_ae,
                            device_id=origin.device_id,
                            **self._qido.instance_columns(sop_uid, version, doc),
                        ),
                    ).first()
                    if inserted is None:  # RETURNING gave nothing: the driver is not ours
                        raise StorageError("the index returned no id for the new instance row")
                    instance_id = int(inserted.id)
                    record_watermark(conn, self.settling.open(instance_id))
                    if version == 1:
                        self._qido.count_instance(
                            conn, study_uid, ids["SeriesInstanceUID"], doc, now
                        )
                    detail: dict[str, Any] = {"cid": cid, "version": version, "origin": origin.kind}
                    if version > 1:
                        detail["flag"] = "new-version: same SOP Instance UID, different content"
                    if geometry.flag is not None:
                        detail["pixel_flag"] = f"{geometry.flag}: {geometry.reason}"
                    self._audit.append(
                        conn, AuditEvent("instance.stored", origin.actor, sop_uid, "ok", detail)
                    )
        except BaseException:
            if instance_id is not None:  # rolled back: the id was never visible to anyone
                self.settling.close(instance_id, durable=True)
            raise
        if copy_id is not None:
            self._await_copy(copy_id)
        if instance_id is not None:
            # COMMIT ran while the pack flush did (gateway/settling.py): answer only once the
            # ciphertext is durable too; if it cannot become so, the row goes.
            row = Withdrawn(instance_id, sop_uid, version, study_uid, key.key_id)
            self._settle(row, ids["SeriesInstanceUID"], (pending, header_pending))
        if key_is_new and outcome is not Outcome.DUPLICATE:  # only a key whose row committed
            self._keys.remember(study_uid, key)
        self._remember_patient(study_uid, patient)
        self._qido.committed(ids["SeriesInstanceUID"])
        if geometry.flag is not None and outcome is not Outcome.DUPLICATE:
            log.warning(
                "instance %s stored with pixel data flagged %s (not to be decoded as is): %s",
                shown(sop_uid),
                geometry.flag,
                geometry.reason,
            )
        if outcome is Outcome.NEW_VERSION:
            log.warning(
                "instance %s arrived again with different content: kept as version %d",
                shown(sop_uid),
                version,
            )
        return Receipt(outcome, STATUS_SUCCESS, sop_uid, study_uid, cid, version)

    def _settle(
        self, row: Withdrawn, series_uid: str, puts: tuple[PendingObject, PendingObject]
    ) -> None:
        """Wait for the row's objects to be durable; if they cannot be, withdraw the row
        (it was never acknowledged) and raise, so the instance is refused."""
        try:
            for put in puts:
                put.wait()
        except StorageError as e:
            try:
                with self._db.fast_write() as conn:
                    withdraw(
                        conn, self._audit, row, series_uid, f"its ciphertext flush failed: {e}"
                    )
            except StorageError as e2:
                # Left registered: the watermark stays below it, so the next start checks it.
                log.error(
                    "instance %s: flush failed and its row could not be withdrawn (%s);"
                    " restart the gateway to reconcile the index with the store",
                    shown(row.sop_instance_uid),
                    e2,
                )
                raise e from None
            self._qido.forget(series_uid)
            self.settling.close(row.instance_id, durable=False)
            raise
        self.settling.close(row.instance_id, durable=True)

    def _await_copy(self, instance_id: int) -> None:
        """An identical copy is answered only once that copy is durable: its row may have
        committed a moment ago, while its own flush was still running."""
        if not self.settling.wait(instance_id):
            raise StorageError(
                "an identical copy of this instance was being stored and did not become"
                " durable; send it again"
            )

    def _landed_meanwhile(
        self, conn: Tx, sop_uid: str, version: int, orphan: str, origin: Origin
    ) -> tuple[str, int | None]:
        """An identical copy committed between the pre-check and this transaction (another
        association sent the same instance at the same moment): answer with the copy that is
        indexed, and audit the duplicate like any other.

        The ciphertext just put under ``orphan`` is referenced by no row. It is left in the
        store, as a crash between put and commit would leave it (the store is append-only and
        content-addressed, so deleting it would need a collector that knows no other row
        shares its blocks), and named in the event so that a later collector, or an auditor
        counting objects, can account for it.
        """
        row = conn.execute(_CID_OF, {"sop": sop_uid, "version": version}).first()
        self._audit.append(
            conn,
            AuditEvent(
                "instance.duplicate",
                origin.actor,
                sop_uid,
                "ok",
                {
                    "origin": origin.kind,
                    "note": "identical content committed meanwhile by another sender",
                    "unreferenced_cid": orphan,
                },
            ),
        )
        return (str(row.cid), int(row.id)) if row is not None else (orphan, None)

    def _ensure_study(
        self, conn: Tx, ids: dict[str, str], key: StudyKey, doc: dict[str, Any]
    ) -> None:
        """With a fresh study key: the study row if it is new, and the key's custodian wrap.

        A cached key means both rows were committed with an earlier instance, so the common
        case costs no statement here.
        """
        now = self._clock.now().isoformat()
        study_uid = ids["StudyInstanceUID"]
        exists = conn.execute(_STUDY_EXISTS, {"study": study_uid}).first()
        if exists is None:
            self._qido.new_study(conn, study_uid, doc, now)
        conn.execute(
            _INSERT_KEY,
            {
                "key_id": key.key_id,
                "study_uid": study_uid,
                "kem": key.kem,
                "custodian_wrap": key.custodian_wrap,
                "created_at": now,
            },
        )

    def _precheck_patient(self, study_uid: str, patient: str, patient_id: str) -> None:
        """The patient check before any work, from memory when the study was seen lately.

        Why a cache: this read ran for every instance and cost a round trip to the index
        (~0.2 ms of a ~4 ms instance). A study's patient never changes once committed, and the
        check inside the write transaction stays authoritative, so a cached answer can only
        save work, never admit a wrong patient.
        """
        with self._patients_lock:
            known = self._patients.get(study_uid)
            if known is not None:
                self._patients.move_to_end(study_uid)
        if known is None:
            self._check_patient(study_uid, patient, patient_id)
        elif known != patient:
            raise _patient_mismatch(patient_id)

    def _remember_patient(self, study_uid: str, patient: str) -> None:
        with self._patients_lock:
            self._patients[study_uid] = patient
            self._patients.move_to_end(study_uid)
            while len(self._patients) > _PATIENT_CACHE_SIZE:
                self._patients.popitem(last=False)

    def _check_patient(
        self, study_uid: str, patient: str, patient_id: str, conn: Tx | None = None
    ) -> None:
        """One study belongs to one patient: a study key and, later, grants are per patient.

        Checked before storing (no ciphertext for a refusal) and again inside the write
        transaction, where it is authoritative. Compared as blind indexes (``patient``):
        the index holds no Patient ID in clear.
        """
        params = {"study": study_uid}
        if conn is not None:
            row = conn.execute(_STUDY_PATIENT, params).first()
        else:
            with self._db.fast_read() as c:
                row = c.execute(_STUDY_PATIENT, params).first()
        if row is not None and row.pid_blind != patient:
            raise _patient_mismatch(patient_id)

    def _versions(self, sop_uid: str, conn: Tx | None = None) -> dict[int, tuple[str, int]]:
        """The stored versions of an instance: version -> (SHA-256, row id)."""
        params = {"sop": sop_uid}
        if conn is not None:
            return {r.version: (r.sha256, r.id) for r in conn.execute(_VERSIONS, params)}
        with self._db.fast_read() as c:
            return {r.version: (r.sha256, r.id) for r in c.execute(_VERSIONS, params)}

    def _duplicate(self, sop_uid: str, study_uid: str, sha: str, origin: Origin) -> Receipt:
        with self._db.read() as conn:
            row = conn.execute(
                select(instances.c.cid, instances.c.version, instances.c.id)
                .where(
                    instances.c.sop_instance_uid == sop_uid,
                    instances.c.sha256 == sha,
                )
                .order_by(instances.c.version)
                .limit(1)
            ).first()
        if row is not None:
            self._await_copy(int(row.id))
        self._audit.record(
            AuditEvent(
                "instance.duplicate",
                origin.actor,
                sop_uid,
                "ok",
                {"origin": origin.kind, "note": "identical content already stored"},
            )
        )
        return Receipt(
            Outcome.DUPLICATE,
            STATUS_SUCCESS,
            sop_uid,
            study_uid,
            row.cid if row else None,
            row.version if row else None,
        )
