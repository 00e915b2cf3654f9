"""Writing the QIDO-shaped rows (patients, studies, series) and the sealed instance columns.

Ingest calls this inside its write transaction; the migration that builds these tables for an
index written before them (revision 0003) calls the same code, so both fill them alike.

Cheap on the hot path: a patient and a study row are written once (when the study is new),
a series row once (a cache of series known to be committed saves the lookup), and the common
instance costs two counter UPDATEs plus one AES-GCM seal of its metadata JSON.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update

from gateway.index.database import Tx
from gateway.index.models import patients, series, studies
from gateway.index.sealing import IndexCipher
from gateway.metadata import INDEXED, to_json

_TAG = {keyword: f"{tag:08X}" for tag, (keyword, _) in INDEXED.items()}
#: Why a study is listed for reconciliation.
RECONCILE_NO_PATIENT_ID = "patient-id-missing"
_SERIES_CACHE_SIZE = 4096

_PATIENT_BY_KEY = select(patients.c.id).where(patients.c.patient_key == bindparam("pkey"))
_INSERT_PATIENT = insert(patients)
_INSERT_STUDY = insert(studies)
_SERIES_EXISTS = select(series.c.series_uid).where(series.c.series_uid == bindparam("suid"))
_INSERT_SERIES = insert(series)
_STUDY_MODALITIES = select(studies.c.modalities).where(studies.c.study_uid == bindparam("suid"))
_BUMP_SERIES = (
    update(series)
    .where(series.c.series_uid == bindparam("suid"))
    .values(num_instances=series.c.num_instances + 1)
)
_BUMP_STUDY = (
    update(studies)
    .where(studies.c.study_uid == bindparam("suid"))
    .values(num_instances=studies.c.num_instances + 1)
)
_STUDY_GAINS_SERIES = (
    update(studies)
    .where(studies.c.study_uid == bindparam("suid"))
    .values(
        num_instances=studies.c.num_instances + 1,
        num_series=studies.c.num_series + 1,
        modalities=bindparam("mods"),
    )
)


def values(doc: Mapping[str, Any], keyword: str) -> list[Any]:
    """The DICOM JSON ``Value`` list of an indexed attribute ([] when absent or empty)."""
    entry = doc.get(_TAG[keyword])
    return list(entry.get("Value", [])) if entry else []


def first_text(doc: Mapping[str, Any], keyword: str) -> str | None:
    """The first value as text (a person name's alphabetic group); None when empty."""
    found = values(doc, keyword)
    if not found or found[0] in (None, "", {}):
        return None
    first = found[0]
    return str(first.get("Alphabetic", "")) if isinstance(first, dict) else str(first)


def first_int(doc: Mapping[str, Any], keyword: str) -> int | None:
    """The first value of an IS/US attribute, or None."""
    found = values(doc, keyword)
    return found[0] if found and isinstance(found[0], int) else None


_DA = re.compile(r"^[0-9]{8}$")


def date_value(doc: Mapping[str, Any], keyword: str) -> str | None:
    """A DA value kept only when well-formed (YYYYMMDD), so range searches compare alike."""
    found = first_text(doc, keyword)
    return found if found and _DA.match(found) else None


def time_value(doc: Mapping[str, Any], keyword: str) -> str | None:
    """A TM value, at most 16 characters (PS3.5 TM), else None."""
    found = first_text(doc, keyword)
    return found if found and len(found) <= 16 else None


def modalities_with(current: str, modality: str | None) -> str:
    """ModalitiesInStudy ("\\"-joined, sorted) with ``modality`` added."""
    found = {m for m in current.split("\\") if m}
    if modality:
        found.add(modality)
    return "\\".join(sorted(found))[:200]


def instance_row_id(sop_uid: str, version: int) -> str:
    """The row identity sealed instance values are bound to."""
    return f"{sop_uid}/{version}"


class QidoWriter:
    """Writes the level rows of each instance; thread-safe (its cache has a lock)."""

    def __init__(self, cipher: IndexCipher) -> None:
        self.cipher = cipher
        self._series: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def new_study(self, conn: Tx, study_uid: str, doc: Mapping[str, Any], now: str) -> None:
        """The patient row (unless known) and the study row, from the study's first instance."""
        c = self.cipher
        patient_id = first_text(doc, "PatientID") or ""
        issuer = first_text(doc, "IssuerOfPatientID") or ""
        pkey = c.patient_key(patient_id, issuer, study_uid)
        row = conn.execute(_PATIENT_BY_KEY, {"pkey": pkey}).first()
        if row is None:
            conn.execute(
                _INSERT_PATIENT,
                {
                    "patient_key": pkey,
                    "pid_blind": c.patient_id_blind(patient_id),
                    "unidentified": not patient_id,
                    "patient_id_sealed": c.seal_values(
                        "patients", "patient_id", pkey, values(doc, "PatientID")
                    ),
                    "issuer_sealed": c.seal_values(
                        "patients", "issuer", pkey, values(doc, "IssuerOfPatientID")
                    ),
                    "name_sealed": c.seal_values(
                        "patients", "name", pkey, values(doc, "PatientName")
                    ),
                    "birth_date_sealed": c.seal_values(
                        "patients", "birth_date", pkey, values(doc, "PatientBirthDate")
                    ),
                    "sex_sealed": c.seal_values("patients", "sex", pkey, values(doc, "PatientSex")),
                    "created_at": now,
                },
            )
            row = conn.execute(_PATIENT_BY_KEY, {"pkey": pkey}).first()
        accession = first_text(doc, "AccessionNumber")
        conn.execute(
            _INSERT_STUDY,
            {
                "study_uid": study_uid,
                "created_at": now,
                "patient_ref": row.id,
                "pid_blind": c.patient_id_blind(patient_id),
                "study_date": date_value(doc, "StudyDate"),
                "study_time": time_value(doc, "StudyTime"),
                "accession_blind": c.accession_blind(accession) if accession else None,
                "accession_sealed": c.seal_values(
                    "studies", "accession", study_uid, values(doc, "AccessionNumber")
                ),
                "description_sealed": c.seal_values(
                    "studies", "description", study_uid, values(doc, "StudyDescription")
                ),
                "referring_sealed": c.seal_values(
                    "studies", "referring", study_uid, values(doc, "ReferringPhysicianName")
                ),
                "study_id_sealed": c.seal_values(
                    "studies", "study_id", study_uid, values(doc, "StudyID")
                ),
                "modalities": "",
                "num_series": 0,
                "num_instances": 0,
                "reconcile": None if patient_id else RECONCILE_NO_PATIENT_ID,
            },
        )

    def instance_columns(
        self, sop_uid: str, version: int, doc: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The instance row's QIDO columns: its number and the sealed metadata JSON."""
        sealed = self.cipher.seal(
            "instances", "metadata", instance_row_id(sop_uid, version), to_json(doc).encode()
        )
        return {"instance_number": first_int(doc, "InstanceNumber"), "metadata_sealed": sealed}

    def count_instance(
        self, conn: Tx, study_uid: str, series_uid: str, doc: Mapping[str, Any], now: str
    ) -> None:
        """A new instance (not a new version) in its series and study: counts, the series
        row when it is the series' first, ModalitiesInStudy."""
        with self._lock:
            known = series_uid in self._series
        if known or conn.execute(_SERIES_EXISTS, {"suid": series_uid}).first() is not None:
            conn.execute(_BUMP_SERIES, {"suid": series_uid})
            conn.execute(_BUMP_STUDY, {"suid": study_uid})
            return
        modality = first_text(doc, "Modality")
        conn.execute(
            _INSERT_SERIES,
            {
                "series_uid": series_uid,
                "study_uid": study_uid,
                "modality": modality[:16] if modality else None,
                "series_number": first_int(doc, "SeriesNumber"),
                "series_date": date_value(doc, "SeriesDate"),
                "series_time": time_value(doc, "SeriesTime"),
                "description_sealed": self.cipher.seal_values(
                    "series", "description", series_uid, values(doc, "SeriesDescription")
                ),
                "num_instances": 1,
                "created_at": now,
            },
        )
        current = conn.execute(_STUDY_MODALITIES, {"suid": study_uid}).first()
        mods = modalities_with(current.modalities if current else "", modality)
        conn.execute(_STUDY_GAINS_SERIES, {"suid": study_uid, "mods": mods})

    def forget(self, series_uid: str) -> None:
        """A series whose row may be gone (an instance was withdrawn): look it up again."""
        with self._lock:
            self._series.pop(series_uid, None)

    def committed(self, series_uid: str) -> None:
        """Remember a series whose row has committed (only then may the lookup be skipped)."""
        with self._lock:
            self._series[series_uid] = None
            self._series.move_to_end(series_uid)
            while len(self._series) > _SERIES_CACHE_SIZE:
                self._series.popitem(last=False)


_DROP_SERIES_INSTANCE = (
    update(series)
    .where(series.c.series_uid == bindparam("suid"))
    .values(num_instances=series.c.num_instances - 1)
)
_SERIES_COUNT = select(series.c.num_instances).where(series.c.series_uid == bindparam("suid"))
_DELETE_EMPTY_SERIES = delete(series).where(
    series.c.series_uid == bindparam("suid"), series.c.num_instances <= 0
)
_STUDY_LOSES_INSTANCE = (
    update(studies)
    .where(studies.c.study_uid == bindparam("suid"))
    .values(num_instances=studies.c.num_instances - 1)
)
_STUDY_LOSES_SERIES = (
    update(studies)
    .where(studies.c.study_uid == bindparam("suid"))
    .values(num_series=studies.c.num_series - 1)
)


def uncount_instance(conn: Tx, study_uid: str, series_uid: str) -> None:
    """Undo ``count_instance`` for an instance row that is withdrawn (never acknowledged):
    the counts drop, and a series left empty goes (its study keeps its row: the modality
    that was never answered sends the study again)."""
    conn.execute(_DROP_SERIES_INSTANCE, {"suid": series_uid})
    conn.execute(_STUDY_LOSES_INSTANCE, {"suid": study_uid})
    left = conn.execute(_SERIES_COUNT, {"suid": series_uid}).first()
    if left is not None and left.num_instances <= 0:
        conn.execute(_DELETE_EMPTY_SERIES, {"suid": series_uid})
        conn.execute(_STUDY_LOSES_SERIES, {"suid": study_uid})
