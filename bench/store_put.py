"""Micro-benchmark: PackBlockStore.put of ~530 KB objects (one CT instance), fsync included.

Prints figures, never passes or fails. Why it exists: the gateway must durably store about
120 CT instances a second; this shows how much of that budget the content store uses, with
one thread and with several (one per DICOM association), and what a raw write+fdatasync of
the same bytes costs on this disk for comparison.

    .venv/bin/python bench/store_put.py [--count N] [--size BYTES] [--dir PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from gateway.store import PackBlockStore


def _baseline(directory: Path, payloads: list[bytes]) -> float:
    """Seconds per plain append + fdatasync of one payload: the floor for a durable put."""
    path = directory / "baseline.dat"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        start = time.perf_counter()
        for data in payloads:
            os.write(fd, data)
            os.fdatasync(fd)
        return (time.perf_counter() - start) / len(payloads)
    finally:
        os.close(fd)
        path.unlink()


def _run(directory: Path, payloads: list[bytes], threads: int) -> tuple[float, list[float]]:
    """Put all payloads from ``threads`` threads; return (wall seconds, per-put latencies)."""
    store = PackBlockStore(directory / f"store-{threads}")
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(items: list[bytes]) -> None:
        mine = []
        for data in items:
            t0 = time.perf_counter()
            store.put(data)
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    shards = [payloads[i::threads] for i in range(threads)]
    workers = [threading.Thread(target=worker, args=(shard,)) for shard in shards]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - start
    store.close()
    return wall, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--size", type=int, default=530_000)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: tmp)")
    args = parser.parse_args()

    payloads = [os.urandom(args.size) for _ in range(args.count)]
    mb = args.size * args.count / 1e6
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        base = _baseline(directory, payloads[: min(200, args.count)])
        print(f"object size {args.size} B, {args.count} puts, dir {directory}")
        print(f"baseline write+fdatasync: {base * 1e3:.2f} ms per object")
        for threads in (1, 2, 4, 8):
            wall, lat = _run(directory, payloads, threads)
            lat.sort()
            p99 = lat[int(len(lat) * 0.99) - 1]
            print(
                f"threads={threads}: {args.count / wall:7.1f} puts/s {mb / wall:7.1f} MB/s"
                f"  latency mean {statistics.mean(lat) * 1e3:.2f} ms"
                f" p50 {statistics.median(lat) * 1e3:.2f} ms p99 {p99 * 1e3:.2f} ms"
                f"  wall/put {wall / args.count * 1e3:.2f} ms"
            )


if __name__ == "__main__":
    main()
