"""Searching the index: studies, a study's series, a series' instances (what QIDO-RS needs).

On the read path only: every query runs on a pooled read connection, never under ingest's
write lock, so a search never delays an acknowledgement. Results are decrypted attribute
objects; the caller never sees sealed bytes or blind indexes.

How each filter is matched (the sealed columns are explained in gateway/index/sealing.py):

* Patient ID (with or without issuer) and Accession Number: a keyed blind index, one indexed
  equality, exact match only (as QIDO single-value matching).
* Study date range, modality (ModalitiesInStudy, through the series table), Study UID: clear
  columns, indexed.
* Patient name with ``*`` and ``?`` wildcards (case-insensitive, on each name group): the
  names are sealed, so the rows left after every other filter and the ``visible`` restriction
  are decrypted and matched here. That is cheap for what a patient or a doctor may see (a few
  studies to a few hundred); for an administrator's search over everything it costs one
  decryption per patient (bench/search.py measures 10,000 studies).

``visible`` is the access decision's output: ``ALL``, or the patient keys
(``IndexCipher.patient_key``) and Study UIDs a caller may see; rows outside it are never
read, let alone decrypted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, and_, exists, false, func, or_, select

from gateway.errors import NotFoundError
from gateway.index.database import Database
from gateway.index.models import (
    anchor_batch_members,
    anchor_batches,
    instances,
    patients,
    series,
    studies,
)
from gateway.index.qido import instance_row_id
from gateway.index.sealing import IndexCipher, open_cipher
from gateway.settings import Settings

_MAX_LIMIT = 10_000


@dataclass(frozen=True)
class Visible:
    """What a caller may see: patients (by patient key) and studies (by UID), united."""

    patient_keys: frozenset[str] = frozenset()
    study_uids: frozenset[str] = frozenset()


#: No restriction (the custodian, an administrator, the CLI).
ALL: Visible | None = None


@dataclass(frozen=True)
class StudyQuery:
    """Filters of a study search; None means "any"."""

    patient_id: str | None = None
    issuer: str | None = None
    patient_name: str | None = None
    date_from: str | None = None  # YYYYMMDD, inclusive
    date_to: str | None = None  # YYYYMMDD, inclusive
    modality: str | None = None
    accession: str | None = None
    study_uid: str | None = None
    reconcile_only: bool = False
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True)
class StudyRecord:
    """One study's QIDO attributes, decrypted."""

    study_uid: str
    patient_id: str
    issuer: str | None
    patient_name: str | None
    birth_date: str | None
    sex: str | None
    study_date: str | None
    study_time: str | None
    accession: str | None
    description: str | None
    referring_physician: str | None
    study_id: str | None
    modalities: tuple[str, ...]
    num_series: int
    num_instances: int
    reconcile: str | None
    created_at: str
    anchored: str = ""  # "anchored" | "pending" | "" (filled by study_detail / the CLI)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        out = dict(self.__dict__)
        out["modalities"] = list(self.modalities)
        return out


@dataclass(frozen=True)
class SeriesRecord:
    """One series' QIDO attributes, decrypted."""

    series_uid: str
    study_uid: str
    modality: str | None
    series_number: int | None
    series_date: str | None
    series_time: str | None
    description: str | None
    num_instances: int

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class InstanceRecord:
    """One instance (the newest version of its SOP Instance UID) with its indexed metadata."""

    sop_instance_uid: str
    version: int
    series_uid: str
    sop_class_uid: str
    instance_number: int | None
    transfer_syntax: str
    size: int
    cid: str
    received_at: str
    metadata: dict[str, Any] = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class StudyDetail:
    """A study with its series."""

    study: StudyRecord
    series: list[SeriesRecord]


def _first(values: list[Any]) -> str | None:
    if not values:
        return None
    v = values[0]
    if isinstance(v, dict):
        return "=".join(v.get(k, "") for k in ("Alphabetic", "Ideographic", "Phonetic")).rstrip("=")
    return None if v is None else str(v)


def wildcard(pattern: str) -> re.Pattern[str]:
    """A DICOM wildcard (``*`` any run, ``?`` one character) as a case-insensitive regex."""
    parts = (".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _name_matches(pattern: re.Pattern[str], names: list[Any]) -> bool:
    for v in names:
        groups = v.values() if isinstance(v, dict) else [str(v)]
        if any(pattern.fullmatch(g) for g in groups):
            return True
    return False


_STUDY_COLUMNS = (
    studies.c.study_uid,
    studies.c.created_at,
    studies.c.study_date,
    studies.c.study_time,
    studies.c.accession_sealed,
    studies.c.description_sealed,
    studies.c.referring_sealed,
    studies.c.study_id_sealed,
    studies.c.modalities,
    studies.c.num_series,
    studies.c.num_instances,
    studies.c.reconcile,
    patients.c.patient_key,
    patients.c.patient_id_sealed,
    patients.c.issuer_sealed,
    patients.c.name_sealed,
    patients.c.birth_date_sealed,
    patients.c.sex_sealed,
)


class Search:
    """Read-only queries over the index, decrypting with the index cipher."""

    def __init__(self, db: Database, cipher: IndexCipher) -> None:
        self._db = db
        self._c = cipher

    # --- studies ---------------------------------------------------------------------------

    def _restrict(self, query: Select[Any], visible: Visible | None) -> Select[Any]:
        if visible is None:
            return query
        clauses = []
        if visible.patient_keys:
            clauses.append(patients.c.patient_key.in_(sorted(visible.patient_keys)))
        if visible.study_uids:
            clauses.append(studies.c.study_uid.in_(sorted(visible.study_uids)))
        return query.where(or_(*clauses) if clauses else false())

    def _study_select(
        self, q: StudyQuery, visible: Visible | None, columns: tuple[Any, ...] = _STUDY_COLUMNS
    ) -> Select[Any]:
        query: Any = select(*columns).join(patients, patients.c.id == studies.c.patient_ref)
        query = self._restrict(query, visible)
        if q.patient_id is not None:
            query = query.where(studies.c.pid_blind == self._c.patient_id_blind(q.patient_id))
            if q.issuer is not None:
                key = self._c.patient_key(q.patient_id, q.issuer, "")
                query = query.where(patients.c.patient_key == key)
        if q.accession is not None:
            query = query.where(studies.c.accession_blind == self._c.accession_blind(q.accession))
        if q.study_uid is not None:
            query = query.where(studies.c.study_uid == q.study_uid)
        if q.date_from:
            query = query.where(studies.c.study_date >= q.date_from)
        if q.date_to:
            query = query.where(studies.c.study_date <= q.date_to)
        if q.modality:
            query = query.where(
                exists().where(
                    and_(series.c.study_uid == studies.c.study_uid, series.c.modality == q.modality)
                )
            )
        if q.reconcile_only:
            query = query.where(studies.c.reconcile.is_not(None))
        ordered: Select[Any] = query.order_by(studies.c.study_date.desc(), studies.c.study_uid)
        return ordered

    def _open(self, table: str, column: str, row: str, sealed: bytes | None) -> list[Any]:
        return self._c.open_values(table, column, row, sealed)

    def _record(self, r: Any, names: list[Any] | None = None) -> StudyRecord:
        pk, uid = r.patient_key, r.study_uid
        if names is None:
            names = self._open("patients", "name", pk, r.name_sealed)
        return StudyRecord(
            study_uid=uid,
            patient_id=_first(self._open("patients", "patient_id", pk, r.patient_id_sealed)) or "",
            issuer=_first(self._open("patients", "issuer", pk, r.issuer_sealed)),
            patient_name=_first(names),
            birth_date=_first(self._open("patients", "birth_date", pk, r.birth_date_sealed)),
            sex=_first(self._open("patients", "sex", pk, r.sex_sealed)),
            study_date=r.study_date,
            study_time=r.study_time,
            accession=_first(self._open("studies", "accession", uid, r.accession_sealed)),
            description=_first(self._open("studies", "description", uid, r.description_sealed)),
            referring_physician=_first(self._open("studies", "referring", uid, r.referring_sealed)),
            study_id=_first(self._open("studies", "study_id", uid, r.study_id_sealed)),
            modalities=tuple(m for m in r.modalities.split("\\") if m),
            num_series=r.num_series,
            num_instances=r.num_instances,
            reconcile=r.reconcile,
            created_at=r.created_at,
        )

    def studies(self, q: StudyQuery, visible: Visible | None = ALL) -> list[StudyRecord]:
        """Studies matching every filter, newest study date first."""
        limit = max(0, min(q.limit, _MAX_LIMIT))
        offset = max(0, q.offset)
        with self._db.read() as conn:
            if not q.patient_name:
                query = self._study_select(q, visible)
                rows = conn.execute(query.limit(limit).offset(offset)).all()
                return [self._record(r) for r in rows]
            # Names are sealed: match on a narrow query (UID, patient key, sealed name), one
            # decryption per patient, then read the full rows of the page only.
            pattern = wildcard(q.patient_name)
            narrow = self._study_select(
                q, visible, (studies.c.study_uid, patients.c.patient_key, patients.c.name_sealed)
            )
            names: dict[str, bool] = {}
            page: list[str] = []
            skipped = 0
            for r in conn.execute(narrow):
                hit = names.get(r.patient_key)
                if hit is None:
                    found = self._open("patients", "name", r.patient_key, r.name_sealed)
                    hit = names[r.patient_key] = _name_matches(pattern, found)
                if not hit:
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                page.append(r.study_uid)
                if len(page) >= limit:
                    break
            if not page:
                return []
            full = self._study_select(StudyQuery(), None).where(studies.c.study_uid.in_(page))
            by_uid = {r.study_uid: r for r in conn.execute(full)}
            return [self._record(by_uid[u]) for u in page]

    def anchor_state(self, study_uids: Iterable[str]) -> dict[str, str]:
        """Per study: "anchored" when every instance is in an anchored batch, else "pending"."""
        uids = sorted(set(study_uids))
        if not uids:
            return {}
        unbatched = (
            select(instances.c.study_uid, func.count())
            .where(
                instances.c.study_uid.in_(uids),
                ~exists().where(
                    and_(
                        anchor_batch_members.c.instance_id == instances.c.id,
                        anchor_batches.c.id == anchor_batch_members.c.batch_id,
                        anchor_batches.c.state == "anchored",
                    )
                ),
            )
            .group_by(instances.c.study_uid)
        )
        with self._db.read() as conn:
            open_counts = {r[0]: r[1] for r in conn.execute(unbatched)}
        return {u: "pending" if open_counts.get(u) else "anchored" for u in uids}

    def study_detail(self, study_uid: str, visible: Visible | None = ALL) -> StudyDetail:
        """One study with its series; ``NotFoundError`` if absent or not visible."""
        found = self.studies(StudyQuery(study_uid=study_uid, limit=1), visible)
        if not found:
            raise NotFoundError(f"no study {study_uid} in the index")
        record = found[0]
        state = self.anchor_state([study_uid])[study_uid]
        record = StudyRecord(**{**record.__dict__, "anchored": state})
        return StudyDetail(record, self.series(study_uid, visible))

    def _visible_study(self, study_uid: str, visible: Visible | None) -> None:
        if visible is None:
            return
        if not self.studies(StudyQuery(study_uid=study_uid, limit=1), visible):
            raise NotFoundError(f"no study {study_uid} in the index")

    # --- series and instances -----------------------------------------------------------------

    def series(self, study_uid: str, visible: Visible | None = ALL) -> list[SeriesRecord]:
        """The series of a study, by series number."""
        self._visible_study(study_uid, visible)
        query = (
            select(series)
            .where(series.c.study_uid == study_uid)
            .order_by(series.c.series_number, series.c.series_uid)
        )
        with self._db.read() as conn:
            rows = conn.execute(query).all()
        return [
            SeriesRecord(
                series_uid=r.series_uid,
                study_uid=r.study_uid,
                modality=r.modality,
                series_number=r.series_number,
                series_date=r.series_date,
                series_time=r.series_time,
                description=_first(
                    self._open("series", "description", r.series_uid, r.description_sealed)
                ),
                num_instances=r.num_instances,
            )
            for r in rows
        ]

    def instances(
        self, study_uid: str, series_uid: str, visible: Visible | None = ALL
    ) -> list[InstanceRecord]:
        """The instances of a series (newest version of each), by instance number."""
        self._visible_study(study_uid, visible)
        newest = (
            select(instances.c.sop_instance_uid, func.max(instances.c.version).label("v"))
            .where(instances.c.study_uid == study_uid, instances.c.series_uid == series_uid)
            .group_by(instances.c.sop_instance_uid)
            .subquery()
        )
        query = (
            select(instances)
            .join(
                newest,
                and_(
                    newest.c.sop_instance_uid == instances.c.sop_instance_uid,
                    newest.c.v == instances.c.version,
                ),
            )
            .order_by(instances.c.instance_number, instances.c.sop_instance_uid)
        )
        with self._db.read() as conn:
            rows = conn.execute(query).all()
        return [self._instance(r) for r in rows]

    def _instance(self, r: Any) -> InstanceRecord:
        row_id = instance_row_id(r.sop_instance_uid, r.version)
        metadata = json.loads(self._c.open("instances", "metadata", row_id, r.metadata_sealed))
        return InstanceRecord(
            sop_instance_uid=r.sop_instance_uid,
            version=r.version,
            series_uid=r.series_uid,
            sop_class_uid=r.sop_class_uid,
            instance_number=r.instance_number,
            transfer_syntax=r.transfer_syntax,
            size=r.size,
            cid=r.cid,
            received_at=r.received_at,
            metadata=metadata,
        )

    def to_reconcile(self, limit: int = 1000) -> list[StudyRecord]:
        """Studies flagged for a person's attention (e.g. stored without a Patient ID), for
        ``ztbridge status`` and the admin page."""
        return self.studies(StudyQuery(reconcile_only=True, limit=limit))

    def iter_all(self, batch: int = 500) -> Iterator[StudyRecord]:
        """Every study, in pages (for exports and reports)."""
        offset = 0
        while True:
            page = self.studies(StudyQuery(limit=batch, offset=offset))
            yield from page
            if len(page) < batch:
                return
            offset += batch


def open_search(settings: Settings) -> tuple[Search, Database]:
    """A ``Search`` over the index the settings name (the caller closes the Database).

    Refuses an embedded index that does not exist rather than creating an empty one.
    """
    if not settings.index.url and not (settings.home / "index.sqlite3").exists():
        raise NotFoundError(
            f"no index in {settings.home}: run 'ztbridge up' or 'ztbridge import' first"
        )
    cipher = open_cipher(settings)
    db = Database(settings.index_url, cipher)
    return Search(db, cipher), db
