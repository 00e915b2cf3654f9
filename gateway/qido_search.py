"""QIDO-RS searches over the index: studies, series and instances, matched per PS3.4 C.2.2.2.

The read path of ``gateway.search`` (pooled read connections, never ingest's write lock),
for any attribute the index keeps, at the three levels:

* study: StudyInstanceUID, StudyDate, StudyTime, AccessionNumber, StudyDescription,
  ReferringPhysicianName, StudyID, ModalitiesInStudy, the patient's PatientName, PatientID,
  IssuerOfPatientID, PatientBirthDate, PatientSex, and the counts;
* series: SeriesInstanceUID, Modality, SeriesNumber, SeriesDescription, SeriesDate,
  SeriesTime, NumberOfSeriesRelatedInstances;
* instance: every attribute of ``gateway.metadata.INDEXED`` the instance carries.

How a query runs: the visible set (the access decision's output) and the keys a clear column
or a blind index can answer (Study UIDs, PatientID and AccessionNumber by blind index, the
StudyDate range, ModalitiesInStudy, Series UIDs) narrow the rows in SQL; the rows left are
decrypted and every key is matched by ``gateway.matching`` (names, descriptions and the rest
are sealed, so they can only be compared after opening, and only inside what the caller may
see). A query over series or instances first matches the study-level keys, then its own.
Everything that matched is counted (``total``) before the page is cut (``offset``,
``limit``), so the caller can say that a result was cut; rows outside the visible set are
never read, counted or decrypted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, and_, exists, false, func, or_, select

from gateway.index.database import Database
from gateway.index.models import instances, patients, series, studies
from gateway.index.qido import instance_row_id
from gateway.index.sealing import IndexCipher
from gateway.matching import Term
from gateway.metadata import INDEXED
from gateway.search import Visible

#: Attributes of a record: keyword -> DICOM JSON ``Value`` list ([] when empty).
Attributes = dict[str, list[Any]]

STUDY_KEYS = frozenset(
    {
        "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyDescription",
        "ReferringPhysicianName", "StudyID", "ModalitiesInStudy", "PatientName", "PatientID",
        "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    }
)  # fmt: skip
SERIES_KEYS = frozenset(
    {
        "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "SeriesDate",
        "SeriesTime", "NumberOfSeriesRelatedInstances",
    }
)  # fmt: skip
INSTANCE_KEYS = frozenset(kw for kw, _ in INDEXED.values()) - STUDY_KEYS - SERIES_KEYS
LEVEL_KEYS = {
    "study": STUDY_KEYS,
    "series": STUDY_KEYS | SERIES_KEYS,
    "instance": STUDY_KEYS | SERIES_KEYS | INSTANCE_KEYS,
}
_MAX_LIMIT = 10_000


@dataclass(frozen=True)
class QidoQuery:
    """Parsed keys (``gateway.matching.Term``) by keyword, the page, the path's scope."""

    terms: Mapping[str, Term] = field(default_factory=dict)
    limit: int = 100
    offset: int = 0
    study_uid: str | None = None
    series_uid: str | None = None

    def at(self, keys: frozenset[str]) -> list[Term]:
        """The non-universal terms on attributes of one level."""
        return [t for k, t in self.terms.items() if k in keys and not t.universal]


@dataclass(frozen=True)
class QidoPage:
    """One page of matches (attributes per record, in order) and how many matched in all."""

    records: list[Attributes]
    total: int


def _page(found: list[Attributes], q: QidoQuery) -> QidoPage:
    offset = max(0, q.offset)
    limit = max(0, min(q.limit, _MAX_LIMIT))
    return QidoPage(found[offset : offset + limit], len(found))


def _keep(attrs: Attributes, terms: Iterable[Term]) -> bool:
    return all(t.matches(attrs.get(t.keyword, [])) for t in terms)


def _opt(v: Any) -> list[Any]:
    return [] if v is None or v == "" else [v]


class QidoSearch:
    """QIDO-RS over the index, decrypting with the index cipher (see the module docstring)."""

    def __init__(self, db: Database, cipher: IndexCipher) -> None:
        self._db = db
        self._c = cipher

    # --- studies ---------------------------------------------------------------------------

    def _study_select(self, q: QidoQuery, visible: Visible | None) -> Select[Any]:
        query: Any = select(studies, patients).join(
            patients, patients.c.id == studies.c.patient_ref
        )
        if visible is not None:
            clauses = []
            if visible.patient_keys:
                clauses.append(patients.c.patient_key.in_(sorted(visible.patient_keys)))
            if visible.study_uids:
                clauses.append(studies.c.study_uid.in_(sorted(visible.study_uids)))
            query = query.where(or_(*clauses) if clauses else false())
        if q.study_uid is not None:
            query = query.where(studies.c.study_uid == q.study_uid)
        for t in q.at(STUDY_KEYS):
            query = self._narrow_study(query, t)
        ordered: Select[Any] = query.order_by(studies.c.study_date.desc(), studies.c.study_uid)
        return ordered

    def _narrow_study(self, query: Any, t: Term) -> Any:
        """SQL that keeps every row the term could match (a speed-up, never the definition)."""
        kw = t.keyword
        if kw == "StudyInstanceUID" and t.kind in ("single", "list"):
            return query.where(studies.c.study_uid.in_(t.values))
        if kw == "PatientID" and t.kind == "single":
            return query.where(studies.c.pid_blind == self._c.patient_id_blind(t.values[0]))
        if kw == "AccessionNumber" and t.kind == "single":
            return query.where(studies.c.accession_blind == self._c.accession_blind(t.values[0]))
        if kw == "StudyDate" and t.kind == "single":
            return query.where(studies.c.study_date == t.values[0])
        if kw == "StudyDate" and t.kind == "range":
            query = query.where(studies.c.study_date.is_not(None))
            if t.low:
                query = query.where(studies.c.study_date >= t.low)
            if t.high:
                query = query.where(studies.c.study_date <= t.high)
            return query
        if kw == "ModalitiesInStudy" and t.kind in ("single", "list"):
            return query.where(
                exists().where(
                    and_(series.c.study_uid == studies.c.study_uid, series.c.modality.in_(t.values))
                )
            )
        return query

    def _patient_attrs(self, r: Any) -> Attributes:
        o, pk = self._c.open_values, r.patient_key
        return {
            "PatientName": o("patients", "name", pk, r.name_sealed),
            "PatientID": o("patients", "patient_id", pk, r.patient_id_sealed),
            "IssuerOfPatientID": o("patients", "issuer", pk, r.issuer_sealed),
            "PatientBirthDate": o("patients", "birth_date", pk, r.birth_date_sealed),
            "PatientSex": o("patients", "sex", pk, r.sex_sealed),
        }

    def _study_attrs(self, r: Any, patient: Attributes) -> Attributes:
        o, uid = self._c.open_values, r.study_uid
        return {
            **patient,
            "StudyInstanceUID": [uid],
            "StudyDate": _opt(r.study_date),
            "StudyTime": _opt(r.study_time),
            "AccessionNumber": o("studies", "accession", uid, r.accession_sealed),
            "StudyDescription": o("studies", "description", uid, r.description_sealed),
            "ReferringPhysicianName": o("studies", "referring", uid, r.referring_sealed),
            "StudyID": o("studies", "study_id", uid, r.study_id_sealed),
            "ModalitiesInStudy": [m for m in r.modalities.split("\\") if m],
            "NumberOfStudyRelatedSeries": [r.num_series],
            "NumberOfStudyRelatedInstances": [r.num_instances],
        }

    def _matching_studies(self, q: QidoQuery, visible: Visible | None) -> list[Attributes]:
        terms = q.at(STUDY_KEYS)
        with self._db.read() as conn:
            rows = conn.execute(self._study_select(q, visible)).all()
        patient_terms = [t for t in terms if t.keyword.startswith("Patient")]
        found = []
        people: dict[str, Attributes | None] = {}  # one decryption per patient
        for r in rows:
            if r.patient_key not in people:
                patient = self._patient_attrs(r)
                people[r.patient_key] = patient if _keep(patient, patient_terms) else None
            person = people[r.patient_key]
            if person is None:
                continue
            attrs = self._study_attrs(r, person)
            if _keep(attrs, terms):
                found.append(attrs)
        return found

    def studies(self, q: QidoQuery, visible: Visible | None) -> QidoPage:
        """Studies matching every study-level key, newest study date first."""
        return _page(self._matching_studies(q, visible), q)

    # --- series ----------------------------------------------------------------------------

    def _matching_series(
        self, q: QidoQuery, visible: Visible | None
    ) -> list[tuple[Attributes, Attributes]]:
        """(study attributes, series attributes) of every matching series."""
        parents = {a["StudyInstanceUID"][0]: a for a in self._matching_studies(q, visible)}
        if not parents:
            return []
        query: Any = select(series).where(series.c.study_uid.in_(sorted(parents)))
        if q.series_uid is not None:
            query = query.where(series.c.series_uid == q.series_uid)
        terms = q.at(SERIES_KEYS)
        for t in terms:
            if t.keyword == "SeriesInstanceUID" and t.kind in ("single", "list"):
                query = query.where(series.c.series_uid.in_(t.values))
            if t.keyword == "Modality" and t.kind in ("single", "list"):
                query = query.where(series.c.modality.in_(t.values))
        order = {uid: i for i, uid in enumerate(parents)}
        with self._db.read() as conn:
            rows = conn.execute(query.order_by(series.c.series_number, series.c.series_uid)).all()
        found = []
        for r in sorted(rows, key=lambda r: order[r.study_uid]):
            attrs = {
                "SeriesInstanceUID": [r.series_uid],
                "Modality": _opt(r.modality),
                "SeriesNumber": _opt(r.series_number),
                "SeriesDescription": self._c.open_values(
                    "series", "description", r.series_uid, r.description_sealed
                ),
                "SeriesDate": _opt(r.series_date),
                "SeriesTime": _opt(r.series_time),
                "NumberOfSeriesRelatedInstances": [r.num_instances],
            }
            if _keep(attrs, terms):
                found.append((parents[r.study_uid], attrs))
        return found

    def series(self, q: QidoQuery, visible: Visible | None) -> QidoPage:
        """Series matching the study- and series-level keys: each record carries its study's
        attributes too (PS3.18 asks for them when searching all series)."""
        found = [{**st, **se} for st, se in self._matching_series(q, visible)]
        return _page(found, q)

    # --- instances -------------------------------------------------------------------------

    def instances(self, q: QidoQuery, visible: Visible | None) -> QidoPage:
        """Instances (the newest version of each) matching the keys of every level; each
        record carries its series' and study's attributes."""
        matched = self._matching_series(q, visible)
        parents = {se["SeriesInstanceUID"][0]: (st, se) for st, se in matched}
        if not parents:
            return QidoPage([], 0)
        newest = (
            select(instances.c.sop_instance_uid, func.max(instances.c.version).label("v"))
            .where(instances.c.series_uid.in_(sorted(parents)))
            .group_by(instances.c.sop_instance_uid)
            .subquery()
        )
        query: Any = select(instances).join(
            newest,
            and_(
                newest.c.sop_instance_uid == instances.c.sop_instance_uid,
                newest.c.v == instances.c.version,
            ),
        )
        terms = q.at(INSTANCE_KEYS)
        for t in terms:
            if t.keyword == "SOPInstanceUID" and t.kind in ("single", "list"):
                query = query.where(instances.c.sop_instance_uid.in_(t.values))
            if t.keyword == "SOPClassUID" and t.kind in ("single", "list"):
                query = query.where(instances.c.sop_class_uid.in_(t.values))
        order = {uid: i for i, uid in enumerate(parents)}
        with self._db.read() as conn:
            rows = conn.execute(
                query.order_by(instances.c.instance_number, instances.c.sop_instance_uid)
            ).all()
        found = []
        for r in sorted(rows, key=lambda r: order[r.series_uid]):
            row_id = instance_row_id(r.sop_instance_uid, r.version)
            doc = json.loads(self._c.open("instances", "metadata", row_id, r.metadata_sealed))
            attrs = instance_attributes(doc)
            attrs["SOPInstanceUID"] = [r.sop_instance_uid]
            attrs["SOPClassUID"] = [r.sop_class_uid]
            attrs["InstanceAvailability"] = ["ONLINE"]
            if _keep(attrs, terms):
                st, se = parents[r.series_uid]
                found.append({**st, **se, **attrs})
        return _page(found, q)


def instance_attributes(doc: Mapping[str, Any]) -> Attributes:
    """The instance-level attributes of an indexed metadata document (DICOM JSON by tag)."""
    out: Attributes = {}
    for tag, (keyword, _) in INDEXED.items():
        if keyword not in INSTANCE_KEYS:
            continue
        entry = doc.get(f"{tag:08X}")
        out[keyword] = list(entry.get("Value", [])) if entry else []
    return out
