"""Micro-benchmark: PackBlockStore.put of ~530 KB objects (one CT instance), fsync included.

Prints figures, never passes or fails. Why it exists: the gateway must durably store about
120 CT instances a second, and the ingest path waits for every put; this shows how much of
that budget the content store uses and what each part of the design buys:

* raw floors: append+fdatasync vs overwrite of pre-zeroed space+fdatasync, same bytes;
* put() with plain appends (``runway_bytes=0``, the old design) vs with the zero runway;
* put_nowait() + 0.5 ms of caller work + wait(): the latency the caller still sees. The work
  is simulated twice: sleeping (releases the GIL, like waiting on SQLite) and spinning
  (holds it, like Python-level ORM code), because the syncer thread needs the GIL for a
  moment before it can start the flush;
* each at a steady 120 puts/s (what a modality sends; the extender works in the gaps) and
  flat out (no gaps: the extender mostly starves and puts fall back to appending);
* flat out from several threads (one per DICOM association), for group commit.

    .venv/bin/python bench/store_put.py [--count N] [--size BYTES] [--rate R] [--dir PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from gateway.store import PackBlockStore

_RUNWAY = 64 << 20


def _stats(lat: list[float]) -> str:
    lat = sorted(lat)
    p99 = lat[max(0, int(len(lat) * 0.99) - 1)]
    return (
        f"mean {statistics.mean(lat) * 1e3:5.2f}  p50 {statistics.median(lat) * 1e3:5.2f}"
        f"  p99 {p99 * 1e3:6.2f} ms"
    )


def _raw(directory: Path, payloads: list[bytes], prezero: bool) -> list[float]:
    """Per-payload seconds of a bare write+fdatasync: appending, or into pre-zeroed space."""
    path = directory / "raw.dat"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        total = sum(len(p) for p in payloads)
        if prezero:
            zeros = bytes(8 << 20)
            for off in range(0, total + len(zeros), len(zeros)):
                os.pwrite(fd, zeros, off)
            os.fsync(fd)
        latencies = []
        off = 0
        for data in payloads:
            start = time.perf_counter()
            os.pwrite(fd, data, off)
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - start)
            off += len(data)
        return latencies
    finally:
        os.close(fd)
        path.unlink()


def _spin(seconds: float) -> None:
    """Busy work that holds the GIL, like Python code building SQL rows."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _open(path: Path, runway: int) -> PackBlockStore:
    """Open a fresh store and, with a runway, let the extender build it before timing."""
    store = PackBlockStore(path, runway_bytes=runway)
    deadline = time.monotonic() + 30
    while runway and store._alloc_end < runway and time.monotonic() < deadline:
        time.sleep(0.01)
    return store


def _one_thread(
    path: Path,
    payloads: list[bytes],
    runway: int,
    rate: float | None,
    work: Callable[[float], None] | None,
) -> tuple[list[float], list[float]]:
    """Put payloads one after the other, at ``rate`` per second or flat out.

    Without ``work``: put(); returns (put latencies, []). With it: put_nowait, work 0.5 ms,
    wait; returns (put_nowait to wait() return, time blocked in wait()).
    """
    store = _open(path, runway)
    total: list[float] = []
    blocked: list[float] = []
    next_at = time.perf_counter()
    try:
        for data in payloads:
            if rate:
                now = time.perf_counter()
                if next_at > now:
                    time.sleep(next_at - now)
                next_at += 1 / rate
            start = time.perf_counter()
            if work is None:
                store.put(data)
            else:
                pending = store.put_nowait(data)
                work(0.0005)
                before_wait = time.perf_counter()
                pending.wait()
                blocked.append(time.perf_counter() - before_wait)
            total.append(time.perf_counter() - start)
    finally:
        store.close()
    return total, blocked


def _threads(
    path: Path, payloads: list[bytes], runway: int, threads: int
) -> tuple[float, list[float]]:
    """Put all payloads from ``threads`` threads flat out; return (wall seconds, latencies)."""
    store = _open(path, runway)
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
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--size", type=int, default=530_000)
    parser.add_argument("--rate", type=float, default=120.0, help="paced puts per second")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: tmp)")
    args = parser.parse_args()

    payloads = [os.urandom(args.size) for _ in range(args.count)]
    n = 0
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)

        def fresh() -> Path:
            nonlocal n
            n += 1
            return directory / f"store-{n}"

        print(f"object size {args.size} B, {args.count} puts per line, dir {directory}")
        for prezero, label in ((False, "raw append"), (True, "raw overwrite of zeros")):
            print(f"{label + ' + fdatasync':44s} {_stats(_raw(directory, payloads, prezero))}")
        for rate in (args.rate, None):
            pace = f"{rate:.0f}/s" if rate else "flat out"
            for runway, name in ((0, "append"), (_RUNWAY, "runway")):
                lat, _ = _one_thread(fresh(), payloads, runway, rate, None)
                print(f"{f'put() {name}, {pace}':44s} {_stats(lat)}")
            for runway, name in ((0, "append"), (_RUNWAY, "runway")):
                for work, how in ((time.sleep, "sleep"), (_spin, "spin")):
                    lat, blocked = _one_thread(fresh(), payloads, runway, rate, work)
                    label = f"nowait+0.5ms {how}+wait {name}, {pace}"
                    print(f"{label:44s} {_stats(lat)}   blocked in wait(): {_stats(blocked)}")
        for threads in (2, 4, 8):
            for runway, name in ((0, "append"), (_RUNWAY, "runway")):
                wall, lat = _threads(fresh(), payloads, runway, threads)
                label = f"put() {name}, {threads} threads flat out"
                print(f"{label:44s} {_stats(lat)}   {args.count / wall:6.1f} puts/s")


if __name__ == "__main__":
    main()
