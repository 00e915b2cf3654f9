"""Ingest core benchmark: ``Ingestor.ingest`` in process, no network, one thread.

Prints figures, never pass/fail. What it isolates is the per-instance cost of the pipeline
itself (validate, encrypt, store, index rows, audit, commit) so a change to the index can be
compared before/after: run it with PYTHONPATH pointing at each checkout (it uses only APIs
that existed before the QIDO index did)::

    git archive e35439c | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old .venv/bin/python bench/ingest_core.py
    PYTHONPATH=$PWD     .venv/bin/python bench/ingest_core.py

Reports wall ms per instance (median, mean) and CPU ms per instance, for ``--count``
instances of ``--size`` x ``--size`` 16-bit CT in ``--series`` series of one study, on a
fresh embedded (SQLite) home with the ledger off.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from gateway.dataset import split_part10
    from gateway.ingest import Incoming, Origin
    from gateway.service import open_gateway
    from gateway.settings import load_settings
    from tests.support.dicomgen import make_ct_series

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--series", type=int, default=3)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ztbridge-bench-core-") as tmp:
        root = Path(tmp)
        per = args.count // args.series
        files: list[Path] = []
        study = None
        for s in range(args.series):
            series = make_ct_series(
                root / f"s{s}", per, rows=args.size, columns=args.size, study_uid=study,
                patient_id="BENCH-1", seed=s,
            )  # fmt: skip
            study = study or str(__import__("pydicom").dcmread(series.files[0]).StudyInstanceUID)
            files.extend(series.files)
        parts = [split_part10(f.read_bytes()) for f in files]
        settings = load_settings(
            home=root / "home", custodian_passphrase="bench-passphrase", ledger={"enabled": False}
        )
        gw = open_gateway(settings)
        origin = Origin(kind="import", actor="bench")
        times = []
        cpu0 = time.process_time()
        wall0 = time.perf_counter()
        try:
            for p in parts:
                t0 = time.perf_counter()
                receipt = gw.ingestor.ingest(
                    Incoming(p.dataset, p.transfer_syntax, p.sop_class, p.sop_instance), origin
                )
                times.append((time.perf_counter() - t0) * 1000)
                assert receipt.ok, receipt.reason
        finally:
            wall = time.perf_counter() - wall0
            cpu = time.process_time() - cpu0
            gw.close()
        n = len(parts)
        print(
            f"{n} instances ({args.size}x{args.size}, {args.series} series):"
            f" median {statistics.median(times):.3f} ms, mean {wall / n * 1000:.3f} ms wall,"
            f" {cpu / n * 1000:.3f} ms CPU per instance; {n / wall:.0f} inst/s"
        )


if __name__ == "__main__":
    main()
