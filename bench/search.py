"""Search benchmark: the QIDO-shaped index at 10,000 studies, with PHI sealed.

Prints figures, never pass/fail. Fills a fresh index directly (through the same
``QidoWriter`` ingest uses, without content objects): ``--studies`` studies for half as many
patients, each study with 1-3 series of a few instances, study dates over ten years, five
modalities, unique accession numbers. Then times typical searches (median of ``--repeat``
runs, in ms): the newest page, exact Patient ID, exact accession, a date range, modality
and date, a patient-name wildcard over everything (decrypts one name per patient) and
within a visible set of 50 studies (what a doctor's or patient's search decrypts), one
study's detail, and a series' instances. Also prints the per-value cost of sealing, opening
and blinding.

Run::

    .venv/bin/python bench/search.py                       # SQLite, 10,000 studies
    .venv/bin/python bench/search.py --url postgresql+psycopg://...  # an empty database
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert

from gateway.index.database import Database
from gateway.index.models import instances, studies, study_keys
from gateway.index.qido import QidoWriter
from gateway.index.sealing import IndexCipher
from gateway.search import Search, StudyQuery, Visible

FAMILY = ["SMITH", "JONES", "GARCIA", "MULLER", "DUPONT", "ROSSI", "KOWALSKI", "TANAKA", "NGUYEN"]
GIVEN = ["ANNA", "BEN", "CARLA", "DAVID", "EVA", "FRANK", "GINA", "HUGO", "IRIS", "JON"]
MODALITIES = ["CT", "MR", "CR", "US", "DX"]


def _pn(v: str) -> dict[str, Any]:
    return {"vr": "PN", "Value": [{"Alphabetic": v}]}


def _doc(rng: random.Random, patient: int, study: int, series_no: int, inst: int) -> dict[str, Any]:
    year = 2016 + study % 10
    date = f"{year}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    return {
        "00080020": {"vr": "DA", "Value": [date]},
        "00080030": {"vr": "TM", "Value": ["101500"]},
        "00080050": {"vr": "SH", "Value": [f"ACC{study:07d}"]},
        "00080060": {"vr": "CS", "Value": [MODALITIES[(study + series_no) % 5]]},
        "00080090": _pn("REFERRER^DR"),
        "00081030": {"vr": "LO", "Value": [f"STUDY {study}"]},
        "0008103E": {"vr": "LO", "Value": [f"SERIES {series_no}"]},
        "00100010": _pn(f"{FAMILY[patient % 9]}^{GIVEN[patient % 10]}^{patient}"),
        "00100020": {"vr": "LO", "Value": [f"PID{patient:07d}"]},
        "00100030": {"vr": "DA", "Value": ["19700101"]},
        "00100040": {"vr": "CS", "Value": ["F" if patient % 2 else "M"]},
        "00200010": {"vr": "SH", "Value": [str(study)]},
        "00200011": {"vr": "IS", "Value": [series_no]},
        "00200013": {"vr": "IS", "Value": [inst]},
    }


def fill(db: Database, writer: QidoWriter, count: int) -> tuple[float, list[str], str, str]:
    """Insert ``count`` studies; returns (seconds, study UIDs, a series UID, its study)."""
    rng = random.Random(7)
    uids: list[str] = []
    t0 = time.perf_counter()
    some_series = some_study = ""
    for s in range(count):
        patient = s // 2
        study_uid = f"1.2.826.0.1.3680043.10.{s}"
        uids.append(study_uid)
        with db.write() as conn:
            first = _doc(rng, patient, s, 1, 1)
            writer.new_study(conn, study_uid, first, "2026-01-01T00:00:00+00:00")
            key_id = secrets.token_hex(16)
            conn.execute(
                insert(study_keys),
                {"key_id": key_id, "study_uid": study_uid, "kem": "x25519",
                 "custodian_wrap": b"w", "created_at": "t"},
            )  # fmt: skip
            for series_no in range(1, 1 + 1 + s % 3):
                series_uid = f"{study_uid}.{series_no}"
                for inst in range(1, 4):
                    doc = _doc(rng, patient, s, series_no, inst)
                    sop = f"{series_uid}.{inst}"
                    conn.execute(
                        insert(instances),
                        {"sop_instance_uid": sop, "version": 1, "study_uid": study_uid,
                         "series_uid": series_uid, "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
                         "transfer_syntax": "1.2.840.10008.1.2.1", "cid": "bafy", "stored_size": 1,
                         "size": 1, "sha256": "0" * 64, "key_id": key_id,
                         "received_at": "t", "origin": "import",
                         **writer.instance_columns(sop, 1, doc)},
                    )  # fmt: skip
                    writer.count_instance(conn, study_uid, series_uid, doc, "t")
                some_series, some_study = series_uid, study_uid
    return time.perf_counter() - t0, uids, some_series, some_study


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median wall time in ms over ``repeat`` runs, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--url", default="", help="SQLAlchemy URL of an EMPTY database")
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="ztbridge-bench-search-")
    url = args.url or f"sqlite:///{Path(tmp.name) / 'index.sqlite3'}"
    cipher = IndexCipher(secrets.token_bytes(32))
    db = Database(url, cipher)
    writer = QidoWriter(cipher)
    seconds, uids, series_uid, series_study = fill(db, writer, args.studies)
    with db.read() as conn:
        n_inst = conn.execute(instances.select().with_only_columns(instances.c.id)).all()
        n_studies = len(conn.execute(studies.select()).all())
    print(f"index: {url.split('@')[-1]}")
    print(
        f"filled {n_studies} studies, {args.studies // 2} patients, {len(n_inst)} instances in"
        f" {seconds:.1f} s ({seconds / len(n_inst) * 1e6:.0f} us per instance row incl. seals)"
    )
    search = Search(db, cipher)
    visible = Visible(study_uids=frozenset(random.Random(1).sample(uids, 50)))
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("newest 100 studies", lambda: search.studies(StudyQuery(limit=100))),
        ("PatientID exact", lambda: search.studies(StudyQuery(patient_id="PID0001234"))),
        ("AccessionNumber exact", lambda: search.studies(StudyQuery(accession="ACC0004321"))),
        (
            "StudyDate one month (100)",
            lambda: search.studies(StudyQuery(date_from="20200301", date_to="20200331")),
        ),
        (
            "Modality MR + year (100)",
            lambda: search.studies(
                StudyQuery(modality="MR", date_from="20210101", date_to="20211231")
            ),
        ),
        (
            "PatientName SMITH* over all (100)",
            lambda: search.studies(StudyQuery(patient_name="SMITH*")),
        ),
        (
            "PatientName *ZZZ* over all, no hit",
            lambda: search.studies(StudyQuery(patient_name="*ZZZ*")),
        ),
        (
            "PatientName S* in 50 visible",
            lambda: search.studies(StudyQuery(patient_name="S*"), visible),
        ),
        ("all 50 visible studies", lambda: search.studies(StudyQuery(), visible)),
        ("study detail", lambda: search.study_detail(uids[len(uids) // 2])),
        ("series instances", lambda: search.instances(series_study, series_uid)),
    ]
    print(f"\n{'query':<40} {'median ms':>10} {'rows':>6}")
    for label, fn in cases:
        ms, result = timed(fn, args.repeat)
        rows = len(result) if isinstance(result, list) else 1
        print(f"{label:<40} {ms:>10.2f} {rows:>6}")
    n = 20_000
    value = b'[{"Alphabetic":"SMITH^ANNA^1234"}]'
    t0 = time.perf_counter()
    sealed = [cipher.seal("patients", "name", str(i), value) for i in range(n)]
    seal_us = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for i, s in enumerate(sealed):
        cipher.open("patients", "name", str(i), s)
    open_us = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for i in range(n):
        cipher.patient_id_blind(f"PID{i}")
    blind_us = (time.perf_counter() - t0) / n * 1e6
    print(f"\nper value: seal {seal_us:.1f} us, open {open_us:.1f} us, blind {blind_us:.1f} us")
    db.close()
    tmp.cleanup()


if __name__ == "__main__":
    main()
