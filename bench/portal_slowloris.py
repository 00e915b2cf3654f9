"""Portal slowloris benchmark: many TLS connections trickling header lines, never finishing.

Prints figures, never pass/fail. Reproduces issue #8's case 6 against a real ``ztbridge up``
(the portal on HTTPS with a throwaway self-signed certificate): ``--connections`` TLS
connections (1500 by default) from ``--addresses`` loopback source addresses (127.0.0.2,
127.0.0.3, ...), each sending a request line and then one header line every ``--interval``
seconds for ``--seconds`` (30), never the blank line that ends the headers. Meanwhile one
ordinary request a second comes from 127.0.0.1. Then every attacking socket is closed and
the server left alone for ``--settle`` seconds.

Reported: the gateway process's RSS before, at its peak during the attack and after; how
many connections were refused (connect or handshake failed), how many the server closed
during the attack and after how long (with the status line it sent, if any); and how many
ordinary requests succeeded during the attack.

Run it against any tree's code (the gateway runs from the ``PYTHONPATH`` given)::

    PYTHONPATH=$PWD .venv/bin/python bench/portal_slowloris.py
    PYTHONPATH=$PWD .venv/bin/python bench/portal_slowloris.py --addresses 30
    PYTHONPATH=$PWD .venv/bin/python bench/portal_slowloris.py \
        --env ZTBRIDGE_PORTAL__MAX_CONNECTIONS=2000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import psutil

from tests.support.gateway_proc import GatewayProcess, free_port, make_gateway
from tests.support.tls import self_signed


@dataclass
class Tally:
    """What the attacking connections saw."""

    refused: int = 0
    opened: int = 0
    closed_by_server: list[float] = field(default_factory=list)
    status_lines: Counter[str] = field(default_factory=Counter)


def _mb(n: int) -> float:
    return n / 1e6


def _rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


async def _attacker(
    host: str,
    port: int,
    source: str,
    ctx: ssl.SSLContext,
    seconds: float,
    interval: float,
    tally: Tally,
    opening: asyncio.Semaphore,
    writers: list[asyncio.StreamWriter],
) -> None:
    """One slowloris connection: a request line, then one header line per interval."""
    try:
        async with opening:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ctx, local_addr=(source, 0)), 30
            )
    except (OSError, TimeoutError, ssl.SSLError):
        tally.refused += 1
        return
    tally.opened += 1
    writers.append(writer)
    start = time.monotonic()
    read = asyncio.ensure_future(reader.read(4096))
    n = 0
    try:
        writer.write(b"GET /api/v1/time HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        while time.monotonic() - start < seconds:
            done, _ = await asyncio.wait({read}, timeout=interval)
            if done:
                data = b""
                with contextlib.suppress(OSError, ssl.SSLError):
                    data = read.result()
                tally.closed_by_server.append(time.monotonic() - start)
                line = data.split(b"\r\n", 1)[0].decode("latin-1")
                tally.status_lines[line or "(no bytes)"] += 1
                return
            n += 1
            writer.write(f"X-Trickle-{n}: {'a' * 20}\r\n".encode())
    except (OSError, ssl.SSLError):
        tally.closed_by_server.append(time.monotonic() - start)
        tally.status_lines["(reset)"] += 1
    finally:
        if not read.done():
            read.cancel()


async def _attack(
    host: str, port: int, cert: Path, args: argparse.Namespace, tally: Tally
) -> list[asyncio.StreamWriter]:
    ctx = ssl.create_default_context(cafile=str(cert))
    opening = asyncio.Semaphore(args.parallel_handshakes)
    writers: list[asyncio.StreamWriter] = []
    sources = [f"127.0.0.{2 + i}" for i in range(args.addresses)]
    await asyncio.gather(
        *(
            _attacker(
                host,
                port,
                sources[i % len(sources)],
                ctx,
                args.seconds,
                args.interval,
                tally,
                opening,
                writers,
            )
            for i in range(args.connections)
        )
    )
    return writers


def _ordinary(url: str, cert: Path, stop: threading.Event, results: list[float | None]) -> None:
    """One ordinary request a second (a fresh connection each), from 127.0.0.1."""
    while not stop.wait(1.0):
        t0 = time.monotonic()
        try:
            with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=10) as c:
                ok = c.get(f"{url}/api/v1/time").status_code == 200
            results.append(time.monotonic() - t0 if ok else None)
        except httpx.HTTPError:
            results.append(None)


def _wait_portal(gw: GatewayProcess, port: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if f"portal on https://127.0.0.1:{port}" in gw.log():
            return
        time.sleep(0.1)
    raise SystemExit(f"the portal did not start:\n{gw.log()[-3000:]}")


def main() -> None:
    """Run the attack once and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1500)
    parser.add_argument("--addresses", type=int, default=1, help="loopback source addresses")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each trickles")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between lines")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds left alone after")
    parser.add_argument("--parallel-handshakes", type=int, default=100)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the gateway")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)

    with tempfile.TemporaryDirectory(prefix="ztbridge-slowloris-") as tmp_name:
        tmp = Path(tmp_name)
        cert, key = self_signed(tmp)
        port = free_port()
        gw = make_gateway(
            tmp,
            ZTBRIDGE_PORTAL__TLS_CERT_FILE=str(cert),
            ZTBRIDGE_PORTAL__TLS_KEY_FILE=str(key),
            ZTBRIDGE_PORTAL__PORT=str(port),
            PYTHONPATH=os.environ.get("PYTHONPATH", ""),
            **extra,
        )
        gw.start()
        try:
            _wait_portal(gw, port)
            assert gw.proc is not None
            pid = gw.proc.pid
            url = f"https://127.0.0.1:{port}"
            time.sleep(2)
            before = _rss(pid)
            peak = [before]
            sampling = threading.Event()

            def sample() -> None:
                while not sampling.wait(0.2):
                    peak[0] = max(peak[0], _rss(pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            stop = threading.Event()
            ordinary: list[float | None] = []
            prober = threading.Thread(target=_ordinary, args=(url, cert, stop, ordinary))
            prober.start()
            tally = Tally()
            t0 = time.monotonic()
            loop = asyncio.new_event_loop()
            writers = loop.run_until_complete(_attack("127.0.0.1", port, cert, args, tally))
            attack_seconds = time.monotonic() - t0
            still_open = tally.opened - len(tally.closed_by_server)
            at_end = _rss(pid)
            for w in writers:
                w.transport.abort()
            loop.run_until_complete(asyncio.sleep(0.5))
            loop.close()
            stop.set()
            prober.join()
            time.sleep(args.settle)
            sampling.set()
            sampler.join()
            after = _rss(pid)
        finally:
            gw.stop()

    ok = [t for t in ordinary if t is not None]
    closed = tally.closed_by_server
    print(
        f"portal slowloris: {args.connections} TLS connections from {args.addresses}"
        f" address(es), one header line every {args.interval:g} s for {args.seconds:g} s"
        f" ({attack_seconds:.1f} s)"
    )
    print(f"  refused at connect/handshake: {tally.refused}")
    print(f"  opened:                      {tally.opened}")
    if closed:
        print(
            f"  closed by the server:        {len(closed)} (after {min(closed):.1f} s to"
            f" {max(closed):.1f} s, median {statistics.median(closed):.1f} s)"
        )
    else:
        print("  closed by the server:        0")
    print(f"  still open at the end:       {still_open}")
    for line, n in tally.status_lines.most_common():
        print(f"    {n:5d} x {line}")
    print(
        f"  ordinary requests during it: {len(ok)}/{len(ordinary)} ok"
        + (f", slowest {max(ok):.2f} s" if ok else "")
    )
    print(f"  RSS before:   {_mb(before):7.1f} MB")
    print(f"  RSS peak:     {_mb(peak[0]):7.1f} MB")
    print(f"  RSS at end:   {_mb(at_end):7.1f} MB (attack still connected)")
    print(f"  RSS after:    {_mb(after):7.1f} MB ({args.settle:g} s after the sockets closed)")


if __name__ == "__main__":
    main()
