"""The portal's connection guard (portal/edge.py) on real sockets: a real portal server on a
thread, real TLS, bytes written the way a hostile or broken client writes them.

Deadlines are set short (1 s) so each case waits about that long; no test measures speed.
Source addresses are distinct loopback addresses (127.0.0.x), one per case where the cap
per address matters, so the cases do not share a count.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect

from gateway.service import Gateway, open_gateway
from gateway.settings import load_settings
from portal.app import create_app
from portal.edge import ConnectionTable, address_key
from portal.server import PortalServer
from tests.support.gateway_proc import free_port
from tests.support.tls import self_signed

PER_ADDRESS = 4
HEAD_BYTES = 4096
BODY_MB = 1  # portal.max_body_mb of the TLS portal
MIN_KIB = 8  # portal.body_min_kib per portal.body_window_seconds (1 s)


@dataclass
class Served:
    """A running portal: where, its CA (TLS) and the event its streaming route waits on."""

    port: int
    ctx: ssl.SSLContext | None
    release: threading.Event
    server: PortalServer
    bodies: list[str]  # what the body-reading route saw of each request: "N bytes" or "cut"


def _app(gw: Gateway, release: threading.Event, bodies: list[str]) -> FastAPI:
    app = create_app(gw)

    @app.post("/test/body")
    async def body(request: Request) -> dict[str, int]:
        n = 0
        try:
            async for chunk in request.stream():
                n += len(chunk)
        except ClientDisconnect:
            bodies.append("cut")
            raise
        bodies.append(f"{n} bytes")
        return {"bytes": n}

    @app.get("/test/stream")
    async def stream() -> StreamingResponse:
        async def body() -> Any:
            yield b"first\n"
            for _ in range(200):  # at most 10 s: a buffering middleware would end here
                if release.is_set():
                    yield b"released\n"
                    return
                await asyncio.sleep(0.05)
            yield b"never released\n"

        return StreamingResponse(body(), media_type="text/plain")

    return app


def _serve(tmp: Path, mode: str, **portal: Any) -> Iterator[Served]:
    port = free_port()
    settings: dict[str, Any] = {"host": "127.0.0.1", "port": port, **portal}
    ctx = None
    if mode == "https":
        cert, key = self_signed(tmp)
        settings.update(tls_cert_file=cert, tls_key_file=key)
        ctx = ssl.create_default_context(cafile=str(cert))
    else:
        settings.update(allow_plain_http=True)
    s = load_settings(
        home=tmp / "home",
        custodian_passphrase="unit-test",
        ledger={"enabled": False},
        portal=settings,
    )
    gw = open_gateway(s)
    release = threading.Event()
    bodies: list[str] = []
    server = PortalServer(gw, "https" if mode == "https" else "http", app=_app(gw, release, bodies))
    server.start()
    try:
        yield Served(port, ctx, release, server, bodies)
    finally:
        release.set()
        server.stop()
        gw.close()


@pytest.fixture(scope="module")
def tls_portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve(
        tmp_path_factory.mktemp("edge-tls"),
        "https",
        header_timeout=1.0,
        tls_handshake_timeout=1.0,
        max_connections_per_address=PER_ADDRESS,
        max_connections=64,
        max_header_bytes=HEAD_BYTES,
        max_body_mb=BODY_MB,
        body_window_seconds=1.0,
        body_min_kib=MIN_KIB,
    )


@pytest.fixture(scope="module")
def plain_portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve(
        tmp_path_factory.mktemp("edge-plain"),
        "http",
        header_timeout=5.0,
        max_connections_per_address=2,
        max_connections=3,
    )


def connect(p: Served, source: str = "127.0.0.1") -> socket.socket:
    """A connection from ``source``, TLS handshake done when the portal speaks TLS."""
    raw = socket.create_connection(("127.0.0.1", p.port), timeout=10, source_address=(source, 0))
    if p.ctx is None:
        return raw
    return p.ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (10 s at most, then the test fails)."""
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass
    finally:
        sock.close()
    return out


def problem(response: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    """(status, headers, problem document) of a raw HTTP response."""
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert headers["content-type"] == "application/problem+json", response
    doc = json.loads(body)
    assert doc["status"] == status and doc["title"], doc
    assert headers["x-content-type-options"] == "nosniff", headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"], headers
    return status, headers, doc


@pytest.mark.parametrize(
    ("case", "sent"),
    [
        ("not HTTP at all", b"HELLO\x00\xff WORLD\r\n\r\n"),
        ("bad header name", b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n"),
        ("header without colon", b"GET / HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n"),
        ("control byte in target", b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n"),
        (
            "conflicting Content-Length (smuggling)",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ),
        (
            "Content-Length not a number",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n",
        ),
        ("no Host", b"GET / HTTP/1.1\r\n\r\n"),
    ],
)
def test_junk_gets_a_problem_document(tls_portal: Served, case: str, sent: bytes) -> None:
    sock = connect(tls_portal)
    sock.sendall(sent)
    status, headers, doc = problem(read_all(sock))
    assert status == 400, (case, doc)
    assert headers["connection"] == "close"
    assert headers["strict-transport-security"].startswith("max-age="), headers


def test_the_portal_still_answers_after_junk(tls_portal: Served) -> None:
    with httpx.Client(verify=tls_portal.ctx) as c:
        assert c.get(f"https://127.0.0.1:{tls_portal.port}/api/v1/time").status_code == 200


@pytest.mark.parametrize("pieces", [1, 16], ids=["in one write", "trickled"])
def test_an_oversized_head_gets_431(tls_portal: Served, pieces: int) -> None:
    head = b"GET /api/v1/time HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2 * HEAD_BYTES + b"\r\n\r\n"
    sock = connect(tls_portal)
    step = -(-len(head) // pieces)
    for i in range(0, len(head), step):
        sock.sendall(head[i : i + step])
    status, _, doc = problem(read_all(sock))
    assert status == 431 and "portal.max_header_bytes" in doc["detail"], doc


def test_a_head_just_under_the_cap_is_served(tls_portal: Served) -> None:
    with httpx.Client(verify=tls_portal.ctx) as c:
        r = c.get(
            f"https://127.0.0.1:{tls_portal.port}/api/v1/time",
            headers={"x-padding": "a" * (HEAD_BYTES - 400)},
        )
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("case", "sent"),
    [
        ("silent after the handshake", b""),
        ("half a request line", b"GET /api/v1/ti"),
        ("headers never finished", b"GET /api/v1/time HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n"),
    ],
)
def test_a_head_that_does_not_arrive_in_time_gets_408(
    tls_portal: Served, case: str, sent: bytes
) -> None:
    sock = connect(tls_portal)
    sock.sendall(sent)
    status, _, doc = problem(read_all(sock))
    assert status == 408 and "portal.header_timeout" in doc["detail"], (case, doc)


def test_a_kept_alive_connection_is_on_the_clock_again(tls_portal: Served) -> None:
    """The deadline restarts after each response: a second request trickled forever on a
    kept-alive connection is cut off like the first would be."""
    sock = connect(tls_portal)
    sock.sendall(b"GET /api/v1/time HTTP/1.1\r\nHost: x\r\n\r\n")
    first = b""
    while b"unix_ms" not in first:
        first += sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200"), first
    sock.sendall(b"GET /api/v1/time HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    status, _, _ = problem(read_all(sock))
    assert status == 408


@pytest.mark.parametrize(
    ("case", "sent"), [("nothing", b""), ("a third of a ClientHello", b"\x16\x03\x01\x02")]
)
def test_a_stalled_handshake_is_closed(tls_portal: Served, case: str, sent: bytes) -> None:
    raw = socket.create_connection(("127.0.0.1", tls_portal.port), timeout=10)
    raw.sendall(sent)
    assert read_all(raw) == b"", case


def test_the_cap_per_address_refuses_the_excess(tls_portal: Served) -> None:
    held = [connect(tls_portal, "127.0.0.21") for _ in range(PER_ADDRESS)]
    try:
        with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
            connect(tls_portal, "127.0.0.21").sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        other = connect(tls_portal, "127.0.0.22")  # another address is not affected
        other.sendall(b"GET /api/v1/time HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_all(other).startswith(b"HTTP/1.1 200")
    finally:
        held.pop().close()
    again = connect(tls_portal, "127.0.0.21")  # a closed slot is free again
    again.sendall(b"GET /api/v1/time HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert read_all(again).startswith(b"HTTP/1.1 200")
    for s in held:
        s.close()


def test_a_streamed_response_streams_through_the_headers_middleware(tls_portal: Served) -> None:
    """The first chunk arrives while the route still waits: nothing buffers the body."""
    tls_portal.release.clear()
    url = f"https://127.0.0.1:{tls_portal.port}/test/stream"
    with httpx.Client(verify=tls_portal.ctx) as c, c.stream("GET", url) as r:
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "no-store"
        chunks = r.iter_bytes()
        assert next(chunks) == b"first\n"
        tls_portal.release.set()
        assert b"".join(chunks) == b"released\n"


def test_plain_http_over_the_cap_per_address_gets_503(plain_portal: Served) -> None:
    held = [connect(plain_portal, "127.0.0.31") for _ in range(2)]
    try:
        status, headers, _ = problem(read_all(connect(plain_portal, "127.0.0.31")))
        assert status == 503
        assert "strict-transport-security" not in headers  # plain HTTP: no HSTS
    finally:
        for s in held:
            s.close()


def _still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False
    finally:
        sock.setblocking(True)


def test_when_full_the_oldest_idle_connection_makes_room(plain_portal: Served) -> None:
    """Three idle connections from three addresses fill the table (max_connections = 3): a
    newcomer is served and the oldest idle one is closed, so stalled connections cannot
    keep real clients out."""
    idle = [connect(plain_portal, f"127.0.0.{41 + i}") for i in range(3)]
    try:
        newcomer = connect(plain_portal, "127.0.0.44")
        newcomer.sendall(b"GET /api/v1/time HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_all(newcomer).startswith(b"HTTP/1.1 200")
        assert read_all(idle[0]) == b""  # pushed out
        assert _still_open(idle[1]) and _still_open(idle[2])
    finally:
        for s in idle:
            s.close()


def test_when_every_connection_is_busy_a_newcomer_gets_503(plain_portal: Served) -> None:
    plain_portal.release.clear()
    busy = [connect(plain_portal, f"127.0.0.{51 + i}") for i in range(3)]
    try:
        for s in busy:
            s.sendall(b"GET /test/stream HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while b"first" not in got:
                got += s.recv(65536)
        status, _, _ = problem(read_all(connect(plain_portal, "127.0.0.54")))
        assert status == 503
    finally:
        plain_portal.release.set()
        for s in busy:
            s.close()


class _Transport:
    """Stands in for an asyncio transport in the table's bookkeeping test."""

    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


def test_the_table_counts_per_address_and_pushes_out_the_oldest_idle() -> None:
    table = ConnectionTable(max_total=3, max_per_address=2)
    t = [_Transport() for _ in range(5)]
    a = table.admit("10.0.0.1", t[0])  # type: ignore[arg-type]
    b = table.admit("10.0.0.1", t[1])  # type: ignore[arg-type]
    assert a is not None and b is not None
    assert table.admit("10.0.0.1", t[2]) is None  # type: ignore[arg-type]
    table.set_busy(a, True)
    c = table.admit("10.0.0.2", t[2])  # type: ignore[arg-type]
    assert c is not None and table.total == 3
    d = table.admit("10.0.0.3", t[3])  # type: ignore[arg-type]
    assert d is not None and t[1].aborted and not t[0].aborted  # b: the oldest idle
    table.set_busy(c, True)
    table.set_busy(d, True)
    assert table.admit("10.0.0.4", t[4]) is None  # type: ignore[arg-type]  # all busy
    table.release(a)
    table.release(a)  # idempotent
    assert table.total == 2 and table.open_from("10.0.0.1") == 0
    events = table.take_events()
    assert events["refused: too many from one address"] == 1
    assert events["refused: every connection busy"] == 1
    assert events["closed: oldest idle, to make room"] == 1
    assert not table.take_events()


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("unix-socket", "unix-socket"),
    ],
)
def test_ipv6_addresses_are_counted_per_64(peer: str, key: str) -> None:
    assert address_key(peer) == key


def _post_head(extra: str) -> bytes:
    return f"POST /test/body HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


def test_a_body_within_the_limits_is_served(tls_portal: Served) -> None:
    body = bytes(BODY_MB << 19)  # half the limit
    with httpx.Client(verify=tls_portal.ctx) as c:
        r = c.post(f"https://127.0.0.1:{tls_portal.port}/test/body", content=body)
    assert r.status_code == 200 and r.json() == {"bytes": len(body)}, r.text


def test_a_declared_length_over_the_limit_gets_413_before_the_body(tls_portal: Served) -> None:
    """413 as soon as the head is in: the route never runs, not a byte of body is read."""
    seen = len(tls_portal.bodies)
    sock = connect(tls_portal, "127.0.0.61")
    sock.sendall(_post_head(f"Content-Length: {(BODY_MB << 20) + 1}\r\n"))
    status, headers, doc = problem(read_all(sock))
    assert status == 413 and "portal.max_body_mb" in doc["detail"], doc
    assert headers["connection"] == "close"
    assert tls_portal.bodies[seen:] == []  # the app was never called


def test_a_chunked_body_is_counted_as_it_arrives(tls_portal: Served) -> None:
    """No length declared: 413 the moment the body passes the limit, and the route that was
    reading it sees a disconnect (what it spooled is never used)."""
    seen = len(tls_portal.bodies)
    sock = connect(tls_portal, "127.0.0.62")
    sock.sendall(_post_head("Transfer-Encoding: chunked\r\n"))
    chunk = b"%x\r\n" % (64 << 10) + bytes(64 << 10) + b"\r\n"
    for _ in range((BODY_MB << 4) + 2):  # 64 KiB chunks: two past the limit
        sock.sendall(chunk)
    status, _, doc = problem(read_all(sock))
    assert status == 413 and "portal.max_body_mb" in doc["detail"], doc
    assert tls_portal.bodies[seen:] == ["cut"]


def test_a_trickled_body_gets_408(tls_portal: Served) -> None:
    """A body that delivers less than body_min_kib in a window is cut off, however long it
    would go on: a slow upload cannot hold a connection and a request task for hours."""
    seen = len(tls_portal.bodies)
    sock = connect(tls_portal, "127.0.0.63")
    sock.sendall(_post_head("Content-Length: 100000\r\n"))
    got = b""
    sock.settimeout(0.2)
    for _ in range(50):  # 100 bytes every 0.2 s: 0.5 KiB a second, under 8 KiB a second
        try:
            sock.sendall(bytes(100))
            got += sock.recv(65536)
            if got:
                break
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            break
    sock.settimeout(10)
    status, _, doc = problem(got + read_all(sock))
    assert status == 408 and "portal.body_min_kib" in doc["detail"], doc
    assert tls_portal.bodies[seen:] == ["cut"]
