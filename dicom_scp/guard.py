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
* ``GuardedServer`` accepts many connections per wake-up from a deep backlog and hands each
  to the lobby (``dicom_scp.lobby``): no thread, no Association and no TLS handshake until
  the peer sends its first byte; then each connection's own thread does the TLS handshake
  under ``handshake_timeout``. Every association shares one prebuilt list of presentation
  contexts (``SharedContexts``) instead of pynetdicom's deep copy per connection.
* ``PendingConnections`` (in the lobby module) caps connections that have not yet sent an
  A-ASSOCIATE-RQ, in total and per source address, silent ones and ones that spoke apart;
  past a cap the oldest of its tier is dropped, so a flood of idle connections cannot keep a
  real modality out: its request arrives milliseconds after it connects.
* ``BoundedDIMSE`` also enforces one outstanding request (no asynchronous operations window
  is negotiated): a peer that pipelines requests is aborted instead of queued.
* What a peer's bytes may not be (``dicom_scp.protocol``) is checked before pynetdicom's
  state machine acts on them, where a fault would be an exception: an A-ASSOCIATE-RQ with an
  even or repeated presentation context ID, an A-ASSOCIATE-AC or -RJ sent to us, DIMSE
  fragments out of order or on the wrong context, a command that does not decode. Each gets
  an A-ABORT at once and one log line; no thread dies of it.
* A request whose Affected SOP Class UID is not its presentation context's abstract syntax
  is answered "Refused: SOP Class Not Supported" (0x0122) without being served.

The classes replace pynetdicom internals (``DULServiceProvider._read_pdu_data``,
``DIMSEServiceProvider.receive_primitive``/``send_msg``, ``RequestHandler.handle``,
``socketserver.BaseServer._handle_request_noblock``, ``AssociationServer.service_actions``,
``Association._serve_request``)
whose behaviour was read in pynetdicom 3.0; ``check_pynetdicom`` refuses to start on another
major/minor version.
"""

from __future__ import annotations

import contextlib
import gc
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
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dimse_primitives import C_CANCEL, C_ECHO, C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from dicom_scp import fastpath
from dicom_scp.lobby import Lobby, Pending, PendingConnections
from dicom_scp.protocol import (
    ACCEPTOR_NEVER_RECEIVES,
    MessageAssembly,
    ProtocolViolationError,
    associate_rq_primitive,
    sop_class_mismatch,
)
from gateway.dimse_status import STATUS_SOP_CLASS_NOT_SUPPORTED
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
            (DIMSEMessage, "decode_msg"),
            (DIMSEMessage, "message_to_primitive"),
            (Association, "_serve_request"),
            (RequestHandler, "_create_association"),
            (ThreadedAssociationServer, "process_request"),
            (ThreadedAssociationServer, "service_actions"),
            (ThreadedAssociationServer, "_handle_request_noblock"),
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
# (association, request, status, reason): a request refused before it was served; the
# caller logs and audits it (the response is sent by the guard).
RequestRefusedHook = Callable[[Any, Any, int, str], None]
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


_INVALID_PDU_PARAMETER_VALUE, _UNEXPECTED_PDU = 0x06, 0x02  # A-ABORT reasons, PS3.8 9.3.8


def _abort_pdu(reason: int = _INVALID_PDU_PARAMETER_VALUE) -> A_ABORT_RQ:
    pdu = A_ABORT_RQ()
    pdu.source = 0x02  # DICOM UL service-provider
    pdu.reason_diagnostic = reason
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
    """pynetdicom's DUL with a bounded, deadline-limited PDU reader (see module doc).

    Its sends take ``ztb_send_lock``, which ``fastpath`` holds too when it writes a C-STORE
    response from the association thread: PDUs never interleave on the socket.
    """

    ztb_limits: Limits
    ztb_on_violation: ViolationHook
    ztb_send_lock: threading.Lock

    def _send(self, pdu: Any) -> None:
        with self.ztb_send_lock:
            super()._send(pdu)

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
        if pdu_type in ACCEPTOR_NEVER_RECEIVES:
            self._refuse(
                ProtocolViolationError(
                    "unexpected-pdu",
                    f"PDU type 0x{pdu_type:02X} (an answer to an association request) sent to"
                    " the association acceptor",
                ),
                _UNEXPECTED_PDU,
            )
            return
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
        if isinstance(pdu, A_ASSOCIATE_RQ):
            try:
                associate_rq_primitive(pdu)  # AE-6 converts it again; this one may fail
            except ProtocolViolationError as e:
                self._refuse(e, _INVALID_PDU_PARAMETER_VALUE)
                return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def _refuse(self, violation: ProtocolViolationError, reason: int) -> None:
        """A-ABORT at once for a PDU the state machine must not see; one log line."""
        if self.state_machine.current_state == "Sta13" or self.assoc.is_aborted:
            if self.socket is not None:
                self.socket.close()
            return
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.ztb_on_violation(self.assoc, violation.check, violation.reason)
        _send_and_close(self.assoc, _abort_pdu(reason))

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


# DIMSE command fields (PS3.7 E.1): bit 15 set marks a response (C-CANCEL-RQ, which answers
# nothing, is kept apart before the count).
_RESPONSE_BIT = 0x8000


class BoundedDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider with bounded command and data set buffering, one request
    at a time.

    We negotiate no Asynchronous Operations Window (PS3.7 D.3.3.3), so the default applies:
    one outstanding operation. pynetdicom's reader would nonetheless go on decoding and
    queueing complete messages while the association thread is still serving an earlier
    one, so a peer that sends C-STOREs without waiting for responses makes us hold all of
    them (200 x 8 MB took the gateway from 156 to 1049 MiB). Here a new message that starts
    while a request is unanswered aborts the association (A-ABORT, audited as
    ``async-window``) at its first fragment: what we hold is bounded by one instance being
    served, whatever the peer sends.
    """

    ztb_limits: Limits
    ztb_on_violation: ViolationHook
    ztb_lock: threading.Lock
    ztb_assembly: MessageAssembly
    ztb_command_bytes: int = 0
    ztb_dataset_bytes: int = 0
    ztb_outstanding: int = 0  # requests received and not yet answered

    def receive_primitive(self, primitive: Any) -> None:
        """``DIMSEServiceProvider.receive_primitive`` of pynetdicom 3.0 with the limits, and
        with each fragment checked by ``protocol.MessageAssembly`` before it is decoded."""
        limits = self.ztb_limits
        if self.message is None:  # the first fragment of a new message
            with self.ztb_lock:
                busy = self.ztb_outstanding
            if busy:
                self._ztb_abort(
                    "async-window",
                    "a new DIMSE message arrived before the previous request was answered"
                    " (no asynchronous operations window is negotiated: one request at a time)",
                )
                return
            self.message = DIMSEMessage()
            self.ztb_assembly = MessageAssembly(self.message, self.assoc._accepted_cx)
        for _context_id, data in primitive.presentation_data_value_list:
            if not data:
                continue  # refused by the assembly below
            if data[0] & 1:
                self.ztb_command_bytes += len(data) - 1
            else:
                self.ztb_dataset_bytes += len(data) - 1
        if self.ztb_command_bytes > limits.max_command_bytes:
            self._ztb_abort(
                "command-size", f"DIMSE command set over {limits.max_command_bytes} bytes"
            )
            return
        message = self.message
        if self.ztb_dataset_bytes > limits.max_dataset_bytes and not isinstance(
            message.data_set, Oversized
        ):
            buffered = message.data_set.tell() if message.data_set is not None else 0
            message.data_set = Oversized(buffered)  # drops what was buffered so far
        try:
            if not self.ztb_assembly.feed(primitive, self.assoc):
                return
            evt.trigger(self.assoc, evt.EVT_DIMSE_RECV, {"message": message})
            request = self.ztb_assembly.request()
        except ProtocolViolationError as e:
            self._ztb_abort(e.check, e.reason)
            return
        context_id = int(message.context_id or 0)  # set by the last command fragment
        # As pynetdicom does (its issue #41): let go of the buffers at once.
        message.encoded_command_set = BytesIO()
        message.data_set = BytesIO()
        message._data_set_file = None
        message._data_set_path = None
        self.message = None
        self.ztb_command_bytes = 0
        self.ztb_dataset_bytes = 0
        if isinstance(request, C_CANCEL):
            if len(self.cancel_req) < 10:
                self.cancel_req[int(request.MessageIDBeingRespondedTo or 0)] = request
            return
        command = message.command_set.get("CommandField")
        if isinstance(command, int) and not command & _RESPONSE_BIT:
            with self.ztb_lock:  # before the queue: its answer may be sent at once
                self.ztb_outstanding += 1
        # pynetdicom serves an N-EVENT-REPORT-RQ on a thread of its own, one per request;
        # we accept no context that carries one, so it is queued like the rest.
        self.msg_queue.put((context_id, request))

    def send_msg(self, primitive: Any, context_id: int) -> None:
        """Sending a response answers the outstanding request. Counted down *before* the
        response is queued for the wire, so the peer's next request can never arrive first."""
        if primitive.MessageIDBeingRespondedTo is not None:
            with self.ztb_lock:
                self.ztb_outstanding = max(0, self.ztb_outstanding - 1)
        if fastpath.send_c_store_rsp(self.assoc, primitive, context_id):
            return
        super().send_msg(primitive, context_id)

    def _ztb_abort(self, check: str, reason: str) -> None:
        self.ztb_on_violation(self.assoc, check, reason)
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.message = None
        _send_and_close(self.assoc, _abort_pdu())


def _peer(assoc: Any) -> str:
    try:
        return str(assoc.requestor.address)
    except Exception:
        return "?"


class SharedContexts(list):  # type: ignore[type-arg]
    """The supported presentation contexts, built once and shared by every association.

    pynetdicom deep-copies the server's contexts into each new association (171 contexts of
    up to 32 transfer syntaxes: ~26 ms of CPU and ~1 MiB per connection, before the peer has
    sent a byte). Nothing writes to an acceptor's supported contexts after it is set:
    ``negotiate_as_acceptor`` builds new ``PresentationContext`` objects for its results and
    only reads these (checked in pynetdicom 3.0; ``check_pynetdicom`` pins the version, and
    a unit test checks a negotiation leaves them as they were). So "copying" returns the
    same list.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedContexts:
        return self


def _refusal_response(request: Any, status: int) -> Any:
    """The response to a C-STORE or C-ECHO request refused with ``status``; None for others."""
    if isinstance(request, C_STORE):
        rsp: Any = C_STORE()
        rsp.AffectedSOPInstanceUID = request.AffectedSOPInstanceUID
    elif isinstance(request, C_ECHO):
        rsp = C_ECHO()
    else:
        return None
    rsp.MessageIDBeingRespondedTo = request.MessageID
    rsp.AffectedSOPClassUID = request.AffectedSOPClassUID
    rsp.Status = status
    return rsp


def _guarded_serve(
    assoc: Any, request: Any, context_id: int, on_refused: RequestRefusedHook
) -> None:
    """``Association._serve_request``, first refusing a request whose Affected SOP Class is
    not its presentation context's abstract syntax (pynetdicom picks the service from the
    request's class and never compares the two)."""
    context = assoc._accepted_cx.get(context_id)
    reason = None
    if context is not None and request.is_valid_request:
        reason = sop_class_mismatch(request, str(context.abstract_syntax))
    if reason is None:
        Association._serve_request(assoc, request, context_id)
        return
    on_refused(assoc, request, STATUS_SOP_CLASS_NOT_SUPPORTED, reason)
    response = _refusal_response(request, STATUS_SOP_CLASS_NOT_SUPPORTED)
    if response is None:  # no other service is negotiable here; refuse it the hard way
        assoc.dimse._ztb_abort("sop-class", reason)
        return
    assoc.dimse.send_msg(response, context_id)


class Guard:
    """Shared by the plain and TLS servers: limits, the pending pool, the lobby, the hooks."""

    def __init__(
        self,
        limits: Limits,
        pending: PendingConnections,
        on_violation: ViolationHook,
        on_handshake_failure: HandshakeHook,
        *,
        first_byte_timeout: float = 30.0,
        on_request_refused: RequestRefusedHook | None = None,
    ) -> None:
        check_pynetdicom()
        self.limits = limits
        self.pending = pending
        self.lobby = Lobby(self.pending, first_byte_timeout)
        self.on_violation = on_violation
        self.on_handshake_failure = on_handshake_failure
        self.on_request_refused = on_request_refused or (lambda *_: None)

    def install(self, assoc: Any, pending: Pending) -> None:
        """Swap the association's DUL and DIMSE providers for the bounded ones.

        Done before the association's threads start; the subclasses' own state is set here,
        so the swap keeps every queue and timer as built.
        """
        assoc.ztb_pending = pending
        assoc.dul.__class__ = BoundedDUL
        assoc.dul.ztb_limits = self.limits
        assoc.dul.ztb_on_violation = self.on_violation
        assoc.dul.ztb_send_lock = threading.Lock()
        assoc.dimse.__class__ = BoundedDIMSE
        assoc.dimse.ztb_limits = self.limits
        assoc.dimse.ztb_on_violation = self.on_violation
        assoc.dimse.ztb_lock = threading.Lock()
        refused = self.on_request_refused
        assoc._serve_request = lambda request, context_id: _guarded_serve(
            assoc, request, context_id, refused
        )

    def requested(self, assoc: Any) -> None:
        """The association's A-ASSOCIATE-RQ arrived: it is no longer pending."""
        pending = getattr(assoc, "ztb_pending", None)
        if pending is not None:
            self.pending.discard(pending)

    def closed(self, event: Any) -> None:
        """EVT_CONN_CLOSE: forget the connection; wake an acceptor still waiting for its RQ.

        pynetdicom's acceptor thread waits ``acse_timeout`` for the A-ASSOCIATE-RQ even
        after the peer is gone; a None on its queue ends that wait at once.
        """
        assoc = event.assoc
        self.requested(assoc)
        if assoc.is_acceptor and assoc.requestor.primitive is None:
            assoc.dul.to_user_queue.put(None)

    def bindings(self) -> list[tuple[Any, Callable[..., Any]]]:
        """Event handlers the servers need for the pending pool."""
        return [(evt.EVT_CONN_CLOSE, self.closed)]


class GuardedRequestHandler(RequestHandler):
    """Per connection that has spoken, on its own thread: TLS handshake with a deadline, then
    the association."""

    server: GuardedServer

    def handle(self) -> None:
        guard = self.server.guard
        pending: Pending = self.request  # GuardedServer passes the lobby's entry
        sock = pending.sock
        context = self.server.ssl_context
        try:
            if context is not None:
                sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                pending.sock = sock  # an eviction must shut the wrapper (it owns the fd now)
                sock.settimeout(guard.limits.handshake_timeout)
                sock.do_handshake()
            sock.settimeout(guard.limits.io_timeout)
        except (OSError, ValueError) as e:
            evicted = pending not in guard.pending  # we hung up on it: nothing to report
            guard.pending.discard(pending)
            if context is not None and not evicted:
                guard.on_handshake_failure(self.client_address, e)
            with contextlib.suppress(OSError):
                sock.close()
            return
        if pending not in guard.pending:  # evicted while handshaking
            with contextlib.suppress(OSError):
                sock.close()
            return
        # As RequestHandler.handle, with the bounded providers and the pending pool.
        self.request = sock
        assoc = self._create_association()
        guard.install(assoc, pending)
        evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
        assoc.start()


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, fitted for floods: a deep listen backlog, accepting
    many connections per wake-up, and a lobby that holds each one without a thread until it
    sends its first byte (TLS handshakes, too, happen on the connection's own thread)."""

    daemon_threads = True
    request_queue_size = 1024  # the kernel caps it at net.core.somaxconn
    ACCEPT_BATCH = 64
    GC_INTERVAL = 60.0

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
        self._last_gc = time.monotonic()
        super().__init__(
            ae,
            address,
            ae_title,
            SharedContexts(contexts),
            ssl_context,
            evt_handlers,
            GuardedRequestHandler,
        )
        assert self.socket is not None
        self.socket.setblocking(False)
        guard.lobby.start()

    def _handle_request_noblock(self) -> None:
        """Accept what the backlog holds (up to a batch) and hand each to the lobby.

        Nothing here costs more than an ``accept``: no thread, no Association, no TLS.
        """
        assert self.socket is not None
        for _ in range(self.ACCEPT_BATCH):
            try:
                client, address = self.socket.accept()
            except OSError:  # BlockingIOError: backlog empty; anything else: try next time
                return
            try:
                self.guard.lobby.admit(client, address, self._proceed)
            except Exception:
                log.exception("could not take the connection from %s", address[0])
                client.close()

    def _proceed(self, pending: Pending, address: tuple[str, int]) -> None:
        """The connection spoke: serve it on its own thread (ThreadingMixIn)."""
        self.process_request(pending, address)  # type: ignore[arg-type]

    def shutdown_request(self, request: Any) -> None:
        if isinstance(request, Pending):
            self.guard.pending.discard(request)
            request = request.sock
        super().shutdown_request(request)

    def service_actions(self) -> None:
        """pynetdicom collects garbage every 60 accept-loop passes: under a connection flood
        that is a full collection every few milliseconds. Once a minute is plenty."""
        now = time.monotonic()
        if now - self._last_gc > self.GC_INTERVAL:
            self._last_gc = now
            gc.collect()
