"""The portal's connection guard: deadlines and caps in front of uvicorn, in our own code.

Issue #8 case 6: 1500 TLS connections, each sending a header line a second and never the
blank line, were all still open after 30 s, and the process grew from 205 to 587 MB. The
portal faces patients on the internet; it needs a deadline for the TLS handshake and for
the request headers, a cap on connections per address and in all, bounded memory, memory
returned afterwards, and a problem+json answer to malformed HTTP.

Which server. uvicorn has a keep-alive timeout, h11's cap on the size of a request head and
``limit_concurrency`` (checked per request, not per connection), but no deadline for the
request head (each byte re-arms nothing, so a trickle is served forever), no deadline at all
for a connection that is silent after its handshake, asyncio's fixed 60 s for a stalled
handshake, and no cap per address. Hypercorn adds a handshake timeout, but its
``read_timeout`` is per read (a trickle resets it) and it has no connection caps. Granian
has hyper's header-read timeout, but serves the app from worker processes of its own while
the portal shares the gateway object (index, keys, ledger client) in-process, and has no cap
per address either. A front proxy (nginx: ``client_header_timeout``, ``limit_conn``) would
do it, but ``ztbridge up`` must be safe on its own. So uvicorn stays, and this module adds
what it lacks at the asyncio level, where it costs nothing per byte:

* ``Gate``, given to uvicorn as its HTTP protocol class on a plain socket, meets each TCP
  connection first. ``ConnectionTable.admit`` refuses it beyond ``max_connections_per_address``
  from its address; at ``max_connections`` in all it closes the oldest *idle* connection
  (still in its handshake, or waiting for request headers) to make room, and refuses only
  when every connection is busy with a request. So an attacker from many addresses cannot
  starve real clients: each newcomer pushes a stalled connection out. A refused TLS
  connection is closed at once, before any handshake work; over plain HTTP it gets a 503
  problem document.
* The TLS handshake runs under ``tls_handshake_timeout`` (``loop.start_tls``); the decrypted
  stream is then handed to ``EdgeH11Protocol``.
* ``EdgeH11Protocol`` is uvicorn's h11 protocol with a deadline for the request line and
  headers (``header_timeout``, from the handshake's end or the previous response's end,
  whatever arrives meanwhile: 408 problem document, then close), malformed requests answered
  with a problem document (400; 431 past ``max_header_bytes``) carrying the portal's security
  headers, and its slot in the table released when it closes.
* Request bodies (``max_body_bytes``, ``body_window`` / ``body_min_bytes``): a declared
  ``Content-Length`` over the limit gets 413 as soon as the head is in, before a byte of
  the body is read; a chunked body is counted as it arrives (on the wire, chunk framing
  included) and gets 413 the moment it passes the limit. A body must deliver
  ``body_min_bytes`` in each window of ``body_window`` seconds, or it gets 408: a client
  that trickles a STOW-RS upload cannot hold a slot and a request task for hours. A window
  in which the app is not reading (uvicorn paused the socket: flow control) does not count
  against the client. The refused request's app task sees a disconnect, so a route that
  spools its body (STOW-RS) stores nothing; after the problem document the connection
  drains what the client still sends for a moment (``LINGER_SECONDS``, as nginx's
  lingering close does), so the client reads the answer instead of a reset.

Memory: each TLS connection costs ~0.3 MB (asyncio's SSL transport keeps a 256 KiB read
buffer per connection), so the caps bound it: ``max_connections`` x 0.3 MB. After a burst,
``release_memory`` (glibc's ``malloc_trim``) hands the freed buffers back to the system:
glibc keeps them otherwise, which is why the issue saw 587 MB after the connections closed.

Everything here runs on the event loop's thread; the counters are read by the housekeeping
thread for a summary line (one per window, never one per refused connection).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import logging
import re
import ssl
import sys
from collections import Counter, OrderedDict
from dataclasses import dataclass
from http import HTTPStatus
from ipaddress import IPv6Address, ip_address, ip_network
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from portal.headers import security_headers
from portal.problems import MEDIA_TYPE

log = logging.getLogger("ztbridge.portal")

_HEAD_END = re.compile(rb"\n\r?\n")  # h11 ends a head at a blank line, CRLF or bare LF


@dataclass(frozen=True)
class EdgeLimits:
    """The limits the guard enforces (from ``portal.*`` settings) and the TLS context."""

    max_connections: int
    max_per_address: int
    handshake_timeout: float
    header_timeout: float
    max_header_bytes: int
    hsts_max_age: int
    tls: ssl.SSLContext | None
    max_body_bytes: int = 2048 << 20
    body_window: float = 10.0
    body_min_bytes: int = 16 << 10


#: Seconds a refused body is still read (and dropped) before the connection is closed, so
#: the client gets to read the 408/413 instead of a TCP reset; bounded in bytes as well.
LINGER_SECONDS = 2.0
LINGER_BYTES = 8 << 20


class Slot:
    """One admitted connection's place in the table."""

    __slots__ = ("address", "busy", "released", "task", "transport")

    def __init__(self, address: str, transport: asyncio.Transport) -> None:
        self.address = address
        self.transport = transport
        self.busy = False
        self.released = False
        self.task: asyncio.Task[None] | None = None


def address_key(peer: str) -> str:
    """What the per-address cap counts by: the IPv4 address (also when it arrives mapped into
    IPv6 on a dual-stack socket), or the IPv6 /64, the smallest block one subscriber gets
    (RFC 6177): counted per /128, one host could take every slot by itself."""
    try:
        ip = ip_address(peer)
    except ValueError:
        return peer
    if isinstance(ip, IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ip_network(f"{ip}/64", strict=False))
    return str(ip)


class ConnectionTable:
    """Open connections, per address and in all; idle ones in the order they became idle."""

    def __init__(self, max_total: int, max_per_address: int) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.total = 0
        self.peak = 0
        self._per_address: Counter[str] = Counter()
        self._idle: OrderedDict[int, Slot] = OrderedDict()
        self.events: Counter[str] = Counter()  # refusals, evictions, deadlines: for summaries

    def admit(self, address: str, transport: asyncio.Transport) -> Slot | None:
        """A slot for a new connection, or None if it must be refused (counted)."""
        if self._per_address[address] >= self.max_per_address:
            self.events["refused: too many from one address"] += 1
            return None
        if self.total >= self.max_total:
            if not self._idle:
                self.events["refused: every connection busy"] += 1
                return None
            _, oldest = self._idle.popitem(last=False)
            self.events["closed: oldest idle, to make room"] += 1
            self.release(oldest)
            if oldest.task is not None:  # still in its handshake
                oldest.task.cancel()
            oldest.transport.abort()
        slot = Slot(address, transport)
        self._per_address[address] += 1
        self.total += 1
        self.peak = max(self.peak, self.total)
        self._idle[id(slot)] = slot
        return slot

    def set_busy(self, slot: Slot, busy: bool) -> None:
        """A request started (busy) or the connection waits for the next one (idle)."""
        if slot.released or slot.busy == busy:
            return
        slot.busy = busy
        if busy:
            self._idle.pop(id(slot), None)
        else:
            self._idle[id(slot)] = slot  # the newest idle: the last to be pushed out

    def release(self, slot: Slot) -> None:
        """The connection is gone (idempotent)."""
        if slot.released:
            return
        slot.released = True
        self._idle.pop(id(slot), None)
        self.total -= 1
        self._per_address[slot.address] -= 1
        if self._per_address[slot.address] <= 0:
            del self._per_address[slot.address]

    def open_from(self, address: str) -> int:
        """Connections open from ``address`` now."""
        return self._per_address[address]

    def take_events(self) -> Counter[str]:
        """The counts since the last call (for the summary line), reset."""
        events, self.events = self.events, Counter()
        return events


def problem_bytes(status: int, detail: str, https: bool, hsts_max_age: int) -> bytes:
    """A whole HTTP/1.1 response with a problem document, for the guard's own answers
    (written raw: no request may have been parsed, so h11 cannot frame it)."""
    title = HTTPStatus(status).phrase
    body = json.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": detail}
    ).encode()
    headers = [
        (b"content-type", MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *security_headers(https, hsts_max_age),
    ]
    head = f"HTTP/1.1 {status} {title}\r\n".encode()
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return head + b"\r\n" + body


class EdgeH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline and problem+json refusals."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None,
        table: ConnectionTable,
        slot: Slot,
        limits: EdgeLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.table = table
        self.slot = slot
        self.limits = limits
        self._head_deadline: asyncio.TimerHandle | None = None
        self._body_clock: asyncio.TimerHandle | None = None
        self._body_bytes = 0  # this request's body so far, on the wire
        self._window_bytes = 0  # of it, in the current window
        self._lingering = -1  # bytes dropped since a body was refused; -1: not refused

    @property
    def _too_long(self) -> str:
        return (
            f"the request line and headers exceed {self.limits.max_header_bytes} bytes"
            " (portal.max_header_bytes)"
        )

    def _await_head(self) -> None:
        """Start the clock for the next request line and headers."""
        self._stop_head_clock()
        self._head_deadline = self.loop.call_later(self.limits.header_timeout, self._head_late)
        self.table.set_busy(self.slot, False)

    def _stop_head_clock(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_arrived(self) -> bool:
        return self.conn.their_state is not h11.IDLE or (
            self.cycle is not None and not self.cycle.response_complete
        )

    def _head_late(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing() or self._head_arrived():
            return
        self.table.events["closed: request headers late (408)"] += 1
        self._answer(
            408,
            f"the request line and headers did not arrive within"
            f" {self.limits.header_timeout:g} s (portal.header_timeout)",
        )

    def _answer(self, status: int, detail: str) -> None:
        self.transport.write(
            problem_bytes(status, detail, self.scheme == "https", self.limits.hsts_max_age)
        )
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """uvicorn's, then the head clock starts."""
        super().connection_made(transport)
        self._await_head()

    def _head_too_long(self, data: bytes) -> bool:
        """Whether the head now waiting exceeds ``max_header_bytes``. h11's own cap only
        applies while a head is incomplete: one that arrives whole in one read passes it
        whatever its size."""
        buffered, _ = self.conn.trailing_data
        limit = self.limits.max_header_bytes
        if len(buffered) + len(data) <= limit:
            return False
        return _HEAD_END.search((buffered + data)[: limit + 4]) is None

    def data_received(self, data: bytes) -> None:
        """uvicorn's; once a whole request head is in, its clock stops and the body's
        starts; the body is counted against its limit as it arrives."""
        if self._lingering >= 0:  # refused: drop what the client still sends, then close
            self._lingering += len(data)
            if self._lingering > LINGER_BYTES:
                self.transport.close()
            return
        if self.conn.their_state is h11.IDLE and self._head_too_long(data):
            self.table.events["answered: malformed request (431)"] += 1
            self._stop_head_clock()
            self._answer(431, self._too_long)
            return
        in_body = self.conn.their_state is h11.SEND_BODY
        super().data_received(data)
        if in_body:
            self._count_body(len(data))
        elif self._head_deadline is not None and self._head_arrived():
            self._stop_head_clock()
            self.table.set_busy(self.slot, True)
            self._body_started()

    # -- request bodies -----------------------------------------------------------------

    def _declared_length(self) -> int | None:
        """The request's Content-Length (h11 has refused conflicting or malformed ones)."""
        for name, value in self.headers:
            if name == b"content-length":
                return int(value)
        return None

    def _body_started(self) -> None:
        """A head is in: refuse a declared length over the limit, else start the body's
        clock if a body is still to come."""
        self._body_bytes = self._window_bytes = 0
        cycle = self.cycle
        declared = self._declared_length()
        if declared is not None and declared > self.limits.max_body_bytes:
            for task in self.tasks:  # its app task has not run yet: it never will
                task.cancel()
            self._refuse_body(413, self._body_too_large(f"Content-Length {declared}"))
            return
        if cycle is not None:  # what uvicorn already took from this read
            self._body_bytes = self._window_bytes = len(cycle.body)
        if self.conn.their_state is h11.SEND_BODY:
            self._arm_body_clock()

    def _body_too_large(self, what: str) -> str:
        mb = self.limits.max_body_bytes / (1 << 20)
        return f"{what} exceeds the request body limit of {mb:g} MiB (portal.max_body_mb)"

    def _count_body(self, n: int) -> None:
        self._body_bytes += n
        self._window_bytes += n
        if self._body_bytes > self.limits.max_body_bytes:
            self._refuse_body(413, self._body_too_large("the request body"))
        elif self.conn.their_state is not h11.SEND_BODY:
            self._stop_body_clock()  # the whole body is in
            if self.conn.their_state is h11.IDLE and self._head_deadline is None:
                self._await_head()  # it was answered early: the next head is on the clock

    def _arm_body_clock(self) -> None:
        self._stop_body_clock()
        self._body_clock = self.loop.call_later(self.limits.body_window, self._body_tick)

    def _stop_body_clock(self) -> None:
        if self._body_clock is not None:
            self._body_clock.cancel()
            self._body_clock = None

    def _body_tick(self) -> None:
        """End of a window: enough bytes, or the app was not reading, or 408."""
        self._body_clock = None
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return
        delivered, self._window_bytes = self._window_bytes, 0
        cycle = self.cycle
        waiting_for_us = self.flow.read_paused or (
            cycle is not None and cycle.waiting_for_100_continue
        )
        if waiting_for_us or delivered >= self.limits.body_min_bytes:
            self._arm_body_clock()
            return
        self._refuse_body(
            408,
            f"the request body delivered {delivered} bytes in"
            f" {self.limits.body_window:g} s, less than the"
            f" {self.limits.body_min_bytes // 1024} KiB required"
            " (portal.body_min_kib per portal.body_window_seconds)",
        )

    def _refuse_body(self, status: int, detail: str) -> None:
        """Cut a request whose body is too large or too slow: the app sees a disconnect
        (nothing it spooled is used), the client a problem document if no response has
        begun, then a short lingering drain and close."""
        self._stop_body_clock()
        self.table.events[f"refused: request body ({status})"] += 1
        cycle = self.cycle
        started = cycle is not None and cycle.response_started and not cycle.response_complete
        if cycle is not None:
            cycle.disconnected = True
            cycle.message_event.set()
        self.flow.resume_reading()
        if started:  # a response is half written: nothing can follow it
            self.transport.close()
            return
        self.transport.write(
            problem_bytes(status, detail, self.scheme == "https", self.limits.hsts_max_age)
        )
        self._lingering = 0
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def on_response_complete(self) -> None:
        """uvicorn's; a kept-alive connection then waits for its next head, on the clock."""
        super().on_response_complete()
        if self.transport.is_closing() or self._lingering >= 0:
            return
        if self.conn.their_state is h11.SEND_BODY:
            return  # answered before its body was read: the body's clock keeps running
        self._stop_body_clock()
        if self._head_arrived():  # a pipelined request was already in
            self.table.set_busy(self.slot, True)
            self._body_started()
        else:
            self._await_head()

    def send_400_response(self, msg: str) -> None:
        """A malformed request (h11 refused it): a problem document, not uvicorn's text.

        Called from inside uvicorn's ``except h11.RemoteProtocolError``, so the exception
        is at hand: its status hint tells an oversized head (431) from the rest (400)."""
        exc = sys.exc_info()[1]
        status = exc.error_status_hint if isinstance(exc, h11.RemoteProtocolError) else 400
        if status == 431:
            detail = self._too_long
        elif status == 501:
            detail = "only the chunked transfer coding is supported"
        else:
            status, detail = 400, "the request is not well-formed HTTP/1.1"
        self.table.events[f"answered: malformed request ({status})"] += 1
        self._stop_head_clock()
        self._answer(status, detail)

    def connection_lost(self, exc: Exception | None) -> None:
        """uvicorn's, and the slot is free again."""
        self._stop_head_clock()
        self._stop_body_clock()
        self.table.release(self.slot)
        super().connection_lost(exc)


class _Handover(asyncio.Protocol):
    """Holds what arrives between the handshake's end and the hand-over to h11."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.eof = False
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def eof_received(self) -> bool | None:
        self.eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


class Gate(asyncio.Protocol):
    """The protocol uvicorn runs per accepted socket: admit, handshake, hand over to h11.

    Bound to a table and limits by ``gate_class`` (uvicorn builds protocols from a class).
    """

    table: ConnectionTable
    limits: EdgeLimits

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.loop = _loop or asyncio.get_event_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit or refuse; over TLS, nothing is read until the handshake owns the socket."""
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        address = address_key(str(peer[0])) if isinstance(peer, tuple) and peer else "unknown"
        tls = self.limits.tls
        if tls is not None:
            transport.pause_reading()
        slot = self.table.admit(address, transport)
        if slot is None:
            if tls is None:
                transport.write(
                    problem_bytes(
                        503,
                        "too many connections; try again shortly",
                        False,
                        self.limits.hsts_max_age,
                    )
                )
                transport.close()
            else:
                transport.abort()
            return
        inner = EdgeH11Protocol(
            self.config,
            self.server_state,
            self.app_state,
            self.loop,
            self.table,
            slot,
            self.limits,
        )
        if tls is None:
            transport.set_protocol(inner)
            inner.connection_made(transport)
            return
        slot.task = self.loop.create_task(self._handshake(transport, tls, slot, inner))

    async def _handshake(
        self,
        transport: asyncio.Transport,
        tls: ssl.SSLContext,
        slot: Slot,
        inner: EdgeH11Protocol,
    ) -> None:
        handover = _Handover()
        try:
            wrapped = await self.loop.start_tls(
                transport,
                handover,
                tls,
                server_side=True,
                ssl_handshake_timeout=self.limits.handshake_timeout,
            )
        except asyncio.CancelledError:
            self.table.release(slot)
            transport.abort()
            raise
        except Exception as e:  # a peer's failed, stalled or aborted handshake
            late = isinstance(e, ConnectionAbortedError) and "taking longer" in str(e)
            self.table.events["closed: TLS handshake late" if late else "TLS handshake failed"] += 1
            self.table.release(slot)
            transport.abort()
            return
        finally:
            slot.task = None
        if handover.lost or wrapped is None or slot.released:
            self.table.release(slot)
            return
        wrapped.set_protocol(inner)
        inner.connection_made(wrapped)
        for data in handover.data:
            inner.data_received(data)
        if handover.eof:
            inner.eof_received()

    def data_received(self, data: bytes) -> None:  # pragma: no cover - reading is paused
        """Never called: over TLS reading is paused until the handshake takes the socket,
        over plain HTTP the connection is handed over in ``connection_made``."""

    def connection_lost(self, exc: Exception | None) -> None:  # pragma: no cover
        """Only a refused connection ends while the gate still owns it: nothing to free."""


def gate_class(table: ConnectionTable, limits: EdgeLimits) -> type[Gate]:
    """A ``Gate`` bound to ``table`` and ``limits``, for ``uvicorn.Config(http=...)``."""
    return type("BoundGate", (Gate,), {"table": table, "limits": limits})


_LIBC: Any = None


def release_memory() -> bool:
    """Hand memory freed by closed connections back to the system (glibc ``malloc_trim``);
    False where the C library has no such call."""
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        _LIBC = ctypes.CDLL(name) if name else False
    trim = getattr(_LIBC, "malloc_trim", None) if _LIBC else None
    if trim is None:
        return False
    trim(0)
    return True
