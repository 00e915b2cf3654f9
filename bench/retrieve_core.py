"""Benchmark: streaming instances out through ``gateway.retrieve`` against a plain read.

Prints figures, never passes or fails. Why it exists: export, verify and WADO-RS all read
through ``retrieve``, which checks every block against its CID, every envelope segment's tag
and the data set's SHA-256 while streaming. This shows what that costs against the simplest
correct alternative, a whole-object read (``store.get``, blocks checked) plus one
``open_sealed``, and that its memory does not grow with the object:

* a CT study: ``--count`` (300) 512x512 16-bit slices (~525 KB each), read one after another;
* one instance of ``--big-gib`` (1) GiB (a multi-frame data set built in memory).

For each: time to first byte (mean per instance for the study), MB/s (10^6 bytes of
plaintext per second, wall time), and the peak RSS of the reading process. Every read runs in
a fresh child process, so a peak is that read's alone (ingest, which holds a whole instance,
runs in the parent): "base" is the child's RSS after imports and unlocking the custodian key,
then the kernel's high-water mark is reset and "peak" is the high-water mark after the read.
The store is in the page cache (it was just written): these are CPU figures, not disk ones.

    .venv/bin/python bench/retrieve_core.py [--count 300] [--big-gib 1] [--dir PATH]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PASSPHRASE = "bench-retrieve-passphrase"


def _settings(home: Path) -> Any:
    from gateway.settings import load_settings

    return load_settings(home=home, custodian_passphrase=PASSPHRASE)


def _big_dataset(size: int) -> tuple[bytes, bytes, str]:
    """(data set header, pixel payload, SOP Instance UID) of a multi-frame 16-bit image."""
    from pydicom.dataset import Dataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset
    from pydicom.uid import generate_uid

    frame = 512 * 512 * 2
    frames = max(1, size // frame)
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "BENCHBIG"
    ds.PatientName = "BENCH^BIG"
    ds.Modality = "CT"
    ds.Rows = ds.Columns = 512
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds)
    length = frames * frame
    pixel_header = b"\xe0\x7f\x10\x00OW\x00\x00" + length.to_bytes(4, "little")
    pattern = bytes(range(256)) * (frame // 256)
    return buf.getvalue() + pixel_header, pattern * frames, str(ds.SOPInstanceUID)


def setup(home: Path, count: int, big_bytes: int) -> dict[str, str]:
    """Ingest the study and the big instance; return their identifiers."""
    from gateway.dataset import split_part10
    from gateway.ingest import Incoming, Origin
    from gateway.service import open_gateway
    from tests.support.dicomgen import make_ct_series

    origin = Origin(kind="import", actor="bench")
    gw = open_gateway(_settings(home))
    try:
        series = make_ct_series(home.parent / "ct", count)
        for f in series.files:
            part = split_part10(f.read_bytes())
            r = gw.ingestor.ingest(Incoming(part.dataset, part.transfer_syntax), origin)
            assert r.ok, r.reason
        header, pixels, big_sop = _big_dataset(big_bytes)
        dataset = header + pixels
        del pixels
        r = gw.ingestor.ingest(Incoming(dataset, "1.2.840.10008.1.2.1"), origin)
        assert r.ok, r.reason
    finally:
        gw.close()
    return {"study": series.study_uid, "big": big_sop}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark (Linux >= 4.0), so the peak reported is the
    read's and not the custodian unlock's (argon2id, 64 MiB) or the imports'."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def child(home: Path, mode: str, what: str, ident: str) -> None:
    """One measured read, in its own process; prints one JSON line."""
    from sqlalchemy import select

    from gateway import crypto
    from gateway.index.database import Database
    from gateway.index.models import instances
    from gateway.keys import unlock_custodian
    from gateway.retrieve import CustodianKeys, InstanceRef, retrieve
    from gateway.store import PackBlockStore

    settings = _settings(home)
    db = Database(settings.index_url)
    store = PackBlockStore(home / "store", read_only=True)
    keys = CustodianKeys(db, unlock_custodian(home / "keys", PASSPHRASE))
    column = instances.c.study_uid if what == "study" else instances.c.sop_instance_uid
    with db.read() as conn:
        rows = conn.execute(select(instances).where(column == ident).order_by(instances.c.id))
        refs = [InstanceRef.from_row(r) for r in rows]
    for ref in refs:
        keys.study_key(ref.key_id)  # unwrapping (HPKE) is not what is measured
    base = _status_kb("VmRSS")
    if not _reset_peak():
        print("warning: cannot reset the RSS peak; it includes setup", file=sys.stderr)
    total = 0
    first: list[float] = []
    start = time.perf_counter()
    for ref in refs:
        t0 = time.perf_counter()
        if mode == "retrieve":
            got_first = False
            for chunk in retrieve(ref, store, keys):
                if not got_first:
                    first.append(time.perf_counter() - t0)
                    got_first = True
                total += len(chunk)
        else:  # plain: whole ciphertext read (blocks checked), one decryption
            plain = crypto.open_sealed(keys.study_key(ref.key_id), store.get(ref.cid))
            first.append(time.perf_counter() - t0)
            total += len(plain)
            del plain
    wall = time.perf_counter() - start
    peak = _status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "instances": len(refs),
                "bytes": total,
                "wall": wall,
                "ttfb": sum(first) / len(first),
                "base_kb": base,
                "peak_kb": peak,
            }
        )
    )
    store.close()
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--big-gib", type=float, default=1.0)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--child", nargs=4, metavar=("HOME", "MODE", "WHAT", "ID"))
    args = parser.parse_args()
    if args.child:
        home, mode, what, ident = args.child
        child(Path(home), mode, what, ident)
        return
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="ztb-retrieve-") as tmp:
        home = Path(tmp) / "home"
        t = time.perf_counter()
        ids = setup(home, args.count, int(args.big_gib * (1 << 30)))
        print(
            f"setup: {args.count} CT slices + {args.big_gib} GiB instance ingested in"
            f" {time.perf_counter() - t:.1f} s"
        )
        print(f"{'read':34} {'TTFB ms':>9} {'MB/s':>8} {'base MB':>8} {'peak RSS MB':>12}")
        for what, label in (("study", f"{args.count}-slice CT study"), ("big", "1 instance")):
            for mode in ("retrieve", "plain"):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", str(home), mode, what, ids[what]],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                r = json.loads(out.strip().splitlines()[-1])
                name = f"{label}, {'retrieve (stream)' if mode == 'retrieve' else 'get + open'}"
                print(
                    f"{name:34} {r['ttfb'] * 1e3:9.2f} {r['bytes'] / r['wall'] / 1e6:8.0f}"
                    f" {r['base_kb'] / 1024:8.0f} {r['peak_kb'] / 1024:12.0f}"
                )


if __name__ == "__main__":
    main()
