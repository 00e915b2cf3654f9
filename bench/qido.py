"""QIDO-RS benchmark: ``/studies?PatientID=`` and ``/studies?PatientName=A*`` at 10,000 studies.

Prints figures and checks the bar of issue #10 (median under 20 ms); never a test. Fills a
fresh index with bench/search.py's generator (``--studies`` studies, PHI sealed, through the
same ``QidoWriter`` ingest uses), then times what a QIDO request costs past authentication:
``gateway.qido_search`` on the caller's visible set plus the DICOM JSON rendering of
``portal.dicomweb`` (query parsing, required return keys, RetrieveURL), for callers who see
2 studies (a patient), 50 and 1,000 (doctors with that many shares) and all of them (no
real caller: QIDO is for patients and doctors; shown for scale). Median of ``--repeat``.

Run::

    .venv/bin/python bench/qido.py
    .venv/bin/python bench/qido.py --url postgresql+psycopg://...   # an empty database
"""

from __future__ import annotations

import argparse
import importlib.util
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

from gateway.index.database import Database
from gateway.index.qido import QidoWriter
from gateway.index.sealing import IndexCipher
from gateway.qido_search import QidoSearch
from gateway.search import Visible
from portal.dicomweb import dicomjson
from portal.dicomweb.query import Scope, parse, return_keys

ROOT = Path(__file__).resolve().parents[1]
BAR_MS = 20.0


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("bench_search", ROOT / "bench" / "search.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def request(qido: QidoSearch, visible: Visible, items: list[tuple[str, str]]) -> int:
    """One /studies request past authentication: parse, search, render; the result count."""
    scope = Scope("study")
    parsed = parse(items, scope)
    page = qido.studies(parsed.query, visible)
    keys = return_keys(scope, parsed)
    root = "https://gateway/dicom-web"
    body = [
        dicomjson.render({**a, "RetrieveURL": [f"{root}/studies/{a['StudyInstanceUID'][0]}"]}, keys)
        for a in page.records
    ]
    return len(body)


def timed(fn: Callable[[], int], repeat: int) -> tuple[float, int]:
    """Median ms over ``repeat`` runs, and the last result count."""
    times, n = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--url", default="", help="SQLAlchemy URL of an EMPTY database")
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="ztbridge-bench-qido-")
    url = args.url or f"sqlite:///{Path(tmp.name) / 'index.sqlite3'}"
    cipher = IndexCipher(secrets.token_bytes(32))
    db = Database(url, cipher)
    seconds, uids, _, _ = _generator().fill(db, QidoWriter(cipher), args.studies)
    print(f"index: {url.split('@')[-1]}; {len(uids)} studies filled in {seconds:.1f} s")
    qido = QidoSearch(db, cipher)
    rng = random.Random(3)
    patient = 1234  # bench/search.py: patient p has studies 2p and 2p + 1
    callers = {
        "patient (2 visible)": Visible(study_uids=frozenset(uids[2 * patient : 2 * patient + 2])),
        "doctor (50 visible)": Visible(study_uids=frozenset(rng.sample(uids, 50))),
        "doctor (1,000 visible)": Visible(study_uids=frozenset(rng.sample(uids, 1000))),
        "everything (10,000, scale)": Visible(study_uids=frozenset(uids)),
    }
    queries = {
        "PatientID=": [("PatientID", f"PID{patient:07d}")],
        "PatientName=A*": [("PatientName", "A*")],
        "PatientName=S*": [("PatientName", "S*")],
    }
    print(f"\n{'caller':<28} {'query':<18} {'median ms':>10} {'results':>8}  bar {BAR_MS:.0f} ms")
    misses = []
    for who, visible in callers.items():
        for label, items in queries.items():
            ms, n = timed(lambda v=visible, i=items: request(qido, v, i), args.repeat)
            real = not who.startswith("everything")
            verdict = ("ok" if ms < BAR_MS else "MISSED") if real else "-"
            if verdict == "MISSED":
                misses.append(f"{who} {label}")
            print(f"{who:<28} {label:<18} {ms:>10.2f} {n:>8}  {verdict}")
    print("\nbar met for every real caller" if not misses else f"\nbar missed: {misses}")
    db.close()
    tmp.cleanup()


if __name__ == "__main__":
    main()
