"""Limits against hostile peers, fitted into pynetdicom at its few extension points.

pynetdicom trusts its peer: it reads whatever PDU length a peer declares (a header claiming
0xFFFFFFFF bytes makes it buffer as much as the peer cares to send), reads each PDU with no
deadline (one byte a minute keeps a thread forever), accumulates DIMSE command and data set
fragments without bound, performs the TLS handshake on its single accept thread (one silent
TLS client stops every other from connecting), and counts connections that never sent an
A-ASSOCIATE-RQ against ``maximum_associations``. This module closes each of those:

* ``BoundedDUL`` reads a PDU only after checking its declared length against a limit for
  its type (A-ASSOCIATE-RQ: ``max_associate_rq_bytes``; P-DATA-TF: our announced maximum
  PDU length; the fixed-size PDUs: their size), into one buffer of exactly that size, within
  one deadline for the whole PDU. An over-long A-ASSOCIATE-RQ gets an A-ASSOCIATE-RJ
  (permanent, service-provider, local-limit-exceeded); any other over-long PDU an A-ABORT
  (service-provider, invalid-PDU-parameter-value). Nothing past the header is read.
* ``BoundedDIMSE`` caps a DIMSE command set, and stops buffering a data set once it passes
  the instance size limit: the rest is counted and dropped as it arrives, and the C-STORE
  is answered 0xA700 when the transfer ends (the modality can go on with the next image).
* ``GuardedServer`` accepts without handshaking, and each connection's own thread does the
  TLS handshake under ``handshake_timeout``.
* ``PendingConnections`` caps connections that have not yet sent an A-ASSOCIATE-RQ
  (handshaking, or connected and silent); past the cap the *oldest* is dropped, so a flood
  of idle connections cannot keep a real modality out: its request arrives milliseconds
  after it connects.

The classes replace pynetdicom internals (``DULServiceProvider._read_pdu_data``,
``DIMSEServiceProvider.receive_primitive``, ``RequestHandler.handle``,
``AssociationServer.get_request``) whose behaviour was read in pynetdicom 3.0;
``check_pynetdicom`` refuses to start on another major/minor version.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import pynetdicom
from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_RJ
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from gateway.errors import ConfigError

log = logging.getLogger("ztbridge.dicom")

SUPPORTED_PYNETDICOM = ("3.0.",)

# PDU types (PS3.8 9.3): A-ASSOCIATE-RQ/AC/RJ, P-DATA-TF, A-RELEASE-RQ/RP, A-ABORT.
_ASSOCIATE_RQ, _ASSOCIATE_AC, _ASSOCIATE_RJ, _P_DATA = 0x01, 0x02, 0x03, 0x04
_FIXED_PDU_BYTES = 4  # A-RELEASE-RQ/RP and A-ABORT have a 4-byte variable field


def check_pynetdicom() -> None:
    """Refuse to run the hardened server on a pynetdicom these patches were not read against."""
    version = str(pynetdicom.__version__)
    ok = version.startswith(SUPPORTED_PYNETDICOM) and all(
        callable(getattr(cls, name, None))
        for cls, name in (
            (DULServiceProvider, "_read_pdu_data"),
            (DULServiceProvider, "_decode_pdu"),
            (DIMSEServiceProvider, "receive_primitive"),
            (RequestHandler, "_create_association"),
            (ThreadedAssociationServer, "get_request"),
        )
    )
    if not ok:
        raise ConfigError(
            f"pynetdicom {version} is not supported by ztbridge's DICOM limits (written for"
            f" {', '.join(v + 'x' for v in SUPPORTED_PYNETDICOM)}); install the pinned version"
            " from constraints.txt"
        )


@dataclass(frozen=True)
class Limits:
    """What a peer may make us hold."""

    max_pdu_bytes: int  # P-DATA-TF variable field: our announced Maximum Length
    max_associate_rq_bytes: int
    max_dataset_bytes: int
    io_timeout: float  # a whole PDU must arrive within this; also the socket timeout
    handshake_timeout: float
    max_command_bytes: int = 65536  # a real command set is a few hundred bytes

    def pdu_cap(self, pdu_type: int) -> int | None:
        """Largest variable field accepted for a PDU type; None for an unknown type."""
        if pdu_type in (_ASSOCIATE_RQ, _ASSOCIATE_AC, _ASSOCIATE_RJ):
            return self.max_associate_rq_bytes
        if pdu_type == _P_DATA:
            return self.max_pdu_bytes
        if pdu_type in (0x05, 0x06, 0x07):
            return _FIXED_PDU_BYTES
        return None


# (association, check, reason): a peer broke a limit; the caller logs and audits it.
ViolationHook = Callable[[Any, str, str], None]
# (peer address, exception): a TLS handshake failed.
HandshakeHook = Callable[[tuple[Any, ...], BaseException], None]


class Oversized(BytesIO):
    """Stands in for a data set past the size limit: counts bytes, keeps none."""

    def __init__(self, received: int) -> None:
        super().__init__()
        self.received = received

    def write(self, data: Any) -> int:
        n = len(data)
        self.received += n
        return n


def _send_and_close(assoc: Any, pdu: A_ABORT_RQ | A_ASSOCIATE_RJ) -> None:
    """Send a refusal PDU directly and drop the transport (Evt17 returns the FSM to Sta1)."""
    sock = assoc.dul.socket
    if sock is None or sock.socket is None:
        return
    sock.send(pdu.encode())
    sock.close()


def _abort_pdu() -> A_ABORT_RQ:
    pdu = A_ABORT_RQ()
    pdu.source = 0x02  # DICOM UL service-provider
    pdu.reason_diagnostic = 0x06  # invalid-PDU-parameter-value
    return pdu


def _recv_into(raw: socket.socket, view: memoryview, deadline: float) -> bool:
    """Fill ``view`` from ``raw`` before ``deadline``; False on EOF, error or time out."""
    got = 0
    while got < len(view):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            raw.settimeout(remaining)
            n = raw.recv_into(view[got:])
        except (OSError, ValueError):  # TimeoutError and ssl.SSLError are OSErrors
            return False
        if n == 0:
            return False
        got += n
    return True


class BoundedDUL(DULServiceProvider):
    """pynetdicom's DUL with a bounded, deadline-limited PDU reader (see module doc)."""

    ztb_limits: Limits
    ztb_on_violation: ViolationHook

    def _read_pdu_data(self) -> None:
        assoc_socket = self.socket
        raw = assoc_socket.socket if assoc_socket is not None else None
        if raw is None:
            self.event_queue.put("Evt17")
            return
        limits = self.ztb_limits
        deadline = time.monotonic() + limits.io_timeout
        header = bytearray(6)
        if not _recv_into(raw, memoryview(header), deadline):
            self.event_queue.put("Evt17")  # closed, reset or stalled before a whole header
            return
        pdu_type, _, length = struct.unpack(">BBL", header)
        cap = limits.pdu_cap(pdu_type)
        if cap is None:
            self._unknown_pdu(header)
            return
        if length > cap:
            self._refuse_oversized(pdu_type, length, cap)
            return
        buffer = bytearray(6 + length)
        buffer[:6] = header
        ok = _recv_into(raw, memoryview(buffer)[6:], deadline)
        with contextlib.suppress(OSError):
            raw.settimeout(limits.io_timeout)
        if not ok:
            self.event_queue.put("Evt17")
            return
        try:
            pdu, event = self._decode_pdu(buffer)
        except Exception as exc:
            log.warning("undecodable PDU from %s: %s", _peer(self.assoc), exc)
            self.event_queue.put("Evt19")
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def _unknown_pdu(self, header: bytearray) -> None:
        state = self.state_machine.current_state
        if state == "Sta13" or self.assoc.is_aborted:
            # Already aborting: what follows is the rest of the same garbage; just hang up.
            if self.socket is not None:
                self.socket.close()
            return
        if header[0] == 0x16 and header[1] == 0x03 and state in ("Sta1", "Sta2"):
            log.info(
                "TLS client on the plain DICOM port from %s: closed (DICOM TLS is on its own port)",
                _peer(self.assoc),
            )
            if self.socket is not None:
                self.socket.close()
            return
        log.warning("unknown PDU type 0x%02X from %s", header[0], _peer(self.assoc))
        self.event_queue.put("Evt19")  # the state machine aborts

    def _refuse_oversized(self, pdu_type: int, length: int, cap: int) -> None:
        what = f"PDU type 0x{pdu_type:02X} declares {length} bytes, more than the {cap} allowed"
        # Sta1 too: the reactor may read the first PDU before it has processed the
        # connection indication (Evt5) that moves it to Sta2.
        if pdu_type == _ASSOCIATE_RQ and self.state_machine.current_state in ("Sta1", "Sta2"):
            rj = A_ASSOCIATE_RJ()
            rj.result = 0x01  # rejected-permanent
            rj.source = 0x03  # DICOM UL service-provider (presentation related function)
            rj.reason_diagnostic = 0x02  # local-limit-exceeded
            self.assoc.is_rejected = True
            self.ztb_on_violation(self.assoc, "associate-rq-size", what)
            _send_and_close(self.assoc, rj)
            return
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.ztb_on_violation(self.assoc, "pdu-size", what)
        _send_and_close(self.assoc, _abort_pdu())


class BoundedDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider with bounded command and data set buffering."""

    ztb_limits: Limits
    ztb_on_violation: ViolationHook
    ztb_command_bytes: int = 0
    ztb_dataset_bytes: int = 0

    def receive_primitive(self, primitive: Any) -> None:
        limits = self.ztb_limits
        for _context_id, data in primitive.presentation_data_value_list:
            if data[0] & 1:
                self.ztb_command_bytes += len(data) - 1
            else:
                self.ztb_dataset_bytes += len(data) - 1
        if self.ztb_command_bytes > limits.max_command_bytes:
            self.ztb_on_violation(
                self.assoc,
                "command-size",
                f"DIMSE command set over {limits.max_command_bytes} bytes",
            )
            self.assoc.is_aborted = True
            self.assoc.is_established = False
            self.message = None
            _send_and_close(self.assoc, _abort_pdu())
            return
        message = self.message
        if (
            message is not None
            and self.ztb_dataset_bytes > limits.max_dataset_bytes
            and not isinstance(message.data_set, Oversized)
        ):
            buffered = message.data_set.tell() if message.data_set is not None else 0
            message.data_set = Oversized(buffered)  # drops what was buffered so far
        super().receive_primitive(primitive)
        if self.message is None:  # a message completed: the next one starts from zero
            self.ztb_command_bytes = 0
            self.ztb_dataset_bytes = 0


def _peer(assoc: Any) -> str:
    try:
        return str(assoc.requestor.address)
    except Exception:
        return "?"


def _shutdown(sock: socket.socket | None) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class PendingConnections:
    """Connections without an A-ASSOCIATE-RQ yet, oldest first; past the cap the oldest go."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._items: dict[object, Callable[[], None]] = {}
        self._lock = threading.Lock()
        self.evicted = 0
        self._last_log = 0.0

    def add(self, key: object, closer: Callable[[], None]) -> None:
        """Track a new connection; drops the oldest ones if over the cap."""
        victims = []
        with self._lock:
            self._items[key] = closer
            while len(self._items) > self._cap:
                oldest = next(iter(self._items))
                victims.append(self._items.pop(oldest))
            self.evicted += len(victims)
            now = time.monotonic()
            report = bool(victims) and now - self._last_log > 10
            if report:
                self._last_log = now
        for close in victims:
            close()
        if report:
            log.warning(
                "more than %d connections without an association request: dropped the"
                " oldest (%d dropped so far)",
                self._cap,
                self.evicted,
            )

    def discard(self, key: object) -> None:
        """The connection sent its request, or closed."""
        with self._lock:
            self._items.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class Guard:
    """Shared by the plain and TLS servers: limits, the pending pool, and the hooks."""

    def __init__(
        self,
        limits: Limits,
        max_pending: int,
        on_violation: ViolationHook,
        on_handshake_failure: HandshakeHook,
    ) -> None:
        check_pynetdicom()
        self.limits = limits
        self.pending = PendingConnections(max_pending)
        self.on_violation = on_violation
        self.on_handshake_failure = on_handshake_failure

    def install(self, assoc: Any) -> None:
        """Swap the association's DUL and DIMSE providers for the bounded ones.

        Done before the association's threads start; the subclasses add no state of their
        own beyond class-level defaults, so the swap keeps every queue and timer as built.
        """
        assoc.dul.__class__ = BoundedDUL
        assoc.dul.ztb_limits = self.limits
        assoc.dul.ztb_on_violation = self.on_violation
        assoc.dimse.__class__ = BoundedDIMSE
        assoc.dimse.ztb_limits = self.limits
        assoc.dimse.ztb_on_violation = self.on_violation

    def requested(self, assoc: Any) -> None:
        """The association's A-ASSOCIATE-RQ arrived: it is no longer pending."""
        self.pending.discard(assoc)

    def closed(self, event: Any) -> None:
        """EVT_CONN_CLOSE: forget the connection; wake an acceptor still waiting for its RQ.

        pynetdicom's acceptor thread waits ``acse_timeout`` for the A-ASSOCIATE-RQ even
        after the peer is gone; a None on its queue ends that wait at once.
        """
        assoc = event.assoc
        self.pending.discard(assoc)
        if assoc.is_acceptor and assoc.requestor.primitive is None:
            assoc.dul.to_user_queue.put(None)

    def bindings(self) -> list[tuple[Any, Callable[..., Any]]]:
        """Event handlers the servers need for the pending pool."""
        return [(evt.EVT_CONN_CLOSE, self.closed)]


class GuardedRequestHandler(RequestHandler):
    """Per connection, on its own thread: TLS handshake with a deadline, then the association."""

    server: GuardedServer

    def handle(self) -> None:
        guard = self.server.guard
        sock: socket.socket = self.request
        key = object()
        guard.pending.add(key, lambda: _shutdown(sock))
        try:
            if isinstance(sock, ssl.SSLSocket):
                sock.settimeout(guard.limits.handshake_timeout)
                try:
                    sock.do_handshake()
                except (OSError, ValueError) as e:
                    guard.on_handshake_failure(self.client_address, e)
                    _shutdown(sock)
                    sock.close()
                    return
            sock.settimeout(guard.limits.io_timeout)
        finally:
            guard.pending.discard(key)
        # As RequestHandler.handle, with the bounded providers and the pending pool.
        assoc = self._create_association()
        guard.install(assoc)
        guard.pending.add(assoc, lambda: _shutdown(sock))
        evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
        assoc.start()


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, accepting without a TLS handshake on the accept thread."""

    daemon_threads = True

    def __init__(
        self,
        ae: Any,
        address: tuple[str, int],
        ae_title: str,
        contexts: list[Any],
        ssl_context: ssl.SSLContext | None = None,
        evt_handlers: list[Any] | None = None,
        *,
        guard: Guard,
    ) -> None:
        self.guard = guard
        super().__init__(
            ae, address, ae_title, contexts, ssl_context, evt_handlers, GuardedRequestHandler
        )

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        client, address = self.socket.accept()
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False
            )
        return client, address
