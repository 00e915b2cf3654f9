"""Event-driven reactors for pynetdicom's acceptor threads.

Why: pynetdicom 3.0 runs two polling loops per association. The DUL thread sleeps 1 ms
whenever a pass finds nothing to do, and the association thread sleeps 1 ms before every
pass. Each C-STORE crosses both loops twice (the last P-DATA in, the response out), so a
modality waiting for each response loses up to ~4 ms of pure waiting per instance, more
than ztbridge's whole ingest step; and an idle association still wakes 2000 times a second.

Here the same loops block instead: the DUL thread in ``select`` on the peer's socket plus a
wake-up socket that rings when anything is queued for it, the association thread on an
event that rings when a DIMSE message or an ACSE primitive arrives. Every decision inside
the loops is pynetdicom's own code, copied from 3.0 with only the waits changed; timers
(ARTIM, network idle) and kills are still noticed within ``MAX_WAIT``. (Reading a PDU is
``guard.BoundedDUL``'s job: one preallocated buffer, length checked first.) Installed per
association from the ``EVT_CONN_OPEN`` handler, before the association's threads start; any
pynetdicom other than the versions this was checked against keeps its stock loops (with a
warning).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from types import MethodType
from typing import Any

import pynetdicom
from pynetdicom.pdu import A_ABORT_RQ

log = logging.getLogger("ztbridge.dicom")

#: pynetdicom releases whose reactor loops the copies below reproduce.
CHECKED_VERSIONS = ("3.0.4",)
#: Longest a loop blocks without an event: bounds how late a timer or a kill is noticed.
MAX_WAIT = 0.02


def supported() -> bool:
    """Whether the installed pynetdicom is one these reactors were checked against."""
    return str(pynetdicom.__version__) in CHECKED_VERSIONS


class _RingingQueue(queue.Queue):  # type: ignore[type-arg]
    """A queue that calls ``ring`` after every put, so a waiting consumer wakes at once."""

    def __init__(self, rings: list[Callable[[], None]], replacing: queue.Queue[Any]) -> None:
        super().__init__()
        self._rings = rings
        while True:
            try:
                super().put(replacing.get_nowait())
            except queue.Empty:
                break

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        for ring in self._rings:
            ring()


class _WakeSocket:
    """A socket pair: ``ring`` makes the read end readable, for a ``select`` to wake on."""

    def __init__(self) -> None:
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)

    def ring(self) -> None:
        # BlockingIOError: already ringing (buffer full); OSError: closed. Either is fine.
        with contextlib.suppress(OSError):
            self._writer.send(b"\x00")

    def drain(self) -> None:
        try:
            while self.reader.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        self.reader.close()
        self._writer.close()


def accelerate(assoc: Any) -> bool:
    """Give ``assoc`` (an acceptor whose threads have not started) the event-driven loops.

    Returns False, leaving pynetdicom's loops in place, for an unchecked pynetdicom version.
    """
    if not supported():
        log.warning(
            "pynetdicom %s is not one of %s: keeping its polling loops (slower)",
            pynetdicom.__version__,
            ", ".join(CHECKED_VERSIONS),
        )
        return False
    dul = assoc.dul
    if dul.is_alive() or assoc.is_alive():
        raise RuntimeError("accelerate() must run before the association starts")
    wake = _WakeSocket()
    bell = threading.Event()
    # The acceptor's socket has already queued "Evt5" (connection open): keep what is queued.
    dul.to_provider_queue = _RingingQueue([wake.ring], dul.to_provider_queue)
    dul.event_queue = _RingingQueue([wake.ring], dul.event_queue)
    dul.to_user_queue = _RingingQueue([bell.set], dul.to_user_queue)
    assoc.dimse.msg_queue = _RingingQueue([bell.set], assoc.dimse.msg_queue)
    dul.run = MethodType(lambda self: _dul_reactor(self, wake), dul)
    stock_kill = dul.kill_dul

    def stop_dul() -> bool:
        """``DULServiceProvider.stop_dul``, waking the loop so it sees the kill flag now."""
        if dul.state_machine.current_state != "Sta1":
            return False
        dul._kill_thread = True
        wake.ring()
        if threading.current_thread() is dul:  # the loop itself: it exits at its next check
            return True
        while dul.is_alive():
            dul.join(MAX_WAIT)
        return True

    def kill_dul() -> None:
        stock_kill()
        wake.ring()

    dul.stop_dul, dul.kill_dul = stop_dul, kill_dul
    assoc._run_reactor = MethodType(lambda self: _association_reactor(self, bell), assoc)
    return True


def _wait_for_peer(dul: Any, wake: _WakeSocket) -> None:
    """Block until the peer sends, something is queued for the DUL, or a timer may be due."""
    sock = dul.socket.socket if dul.socket is not None else None
    watched: list[Any] = [wake.reader]
    if sock is not None and getattr(dul.socket, "_is_connected", False):
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return
        watched.append(sock)
    try:
        select.select(watched, [], [], MAX_WAIT)
    except (OSError, ValueError):  # the peer's socket closed under us: the loop will see it
        time.sleep(0.001)
    wake.drain()


def _dul_reactor(dul: Any, wake: _WakeSocket) -> None:
    """``DULServiceProvider.run_reactor`` of pynetdicom 3.0, waiting on events, not a timer."""
    dul._idle_timer.start()
    sleep = False
    try:
        while True:
            if not dul.assoc._dul_ready.is_set():
                dul.assoc._dul_ready.set()
                sleep = True
            if sleep:
                _wait_for_peer(dul, wake)
            if dul._kill_thread:
                break
            if dul.artim_timer.expired:
                dul.event_queue.put("Evt18")
            try:
                if dul._process_recv_primitive():
                    pass
                elif dul._is_transport_event():
                    dul._idle_timer.restart()
            except Exception as exc:
                log.error("exception in the DUL reactor, aborting the association: %s", exc)
                _hard_abort(dul)
                return
            try:
                event = dul.event_queue.get(block=False)
            except queue.Empty:
                sleep = True
                continue
            try:
                dul.state_machine.do_action(event)
            except Exception as exc:
                # pynetdicom's loop lets this end the thread (a peer's even presentation
                # context ID did, with no answer sent); guard.py refuses the known causes
                # first, so this is a bug: logged, and the association still ends at once.
                log.error("state machine failed on %s, aborting the association: %s", event, exc)
                _hard_abort(dul)
                return
            sleep = False
    finally:
        wake.close()


def _hard_abort(dul: Any) -> None:
    """As pynetdicom does after an exception in its DUL loop: send an A-ABORT past the state
    machine (it may be broken), close, and stop both of the association's loops."""
    abort_pdu = A_ABORT_RQ()
    abort_pdu.source = 0x02
    abort_pdu.reason_diagnostic = 0x00
    with contextlib.suppress(Exception):
        if dul.socket is not None:
            dul.socket.send(abort_pdu.encode())
            dul.socket.close()
    dul.assoc.is_aborted = True
    dul.assoc.is_established = False
    dul.assoc._kill = True
    dul._kill_thread = True


def _association_reactor(assoc: Any, bell: threading.Event) -> None:
    """``Association._run_reactor`` (acceptor) of pynetdicom 3.0, woken by arrivals."""
    from pynetdicom import evt

    assoc._is_paused = False
    while not assoc._kill:
        bell.wait(MAX_WAIT)
        bell.clear()

        assoc._is_paused = True
        assoc._reactor_checkpoint.wait()
        assoc._is_paused = False

        context_id, msg = assoc.dimse.get_msg(block=False)
        if msg:
            assoc._serve_request(msg, context_id)
            bell.set()  # more may be queued: look again before waiting

        if assoc.is_established and assoc.acse.is_release_requested():
            assoc.acse.send_release(is_response=True)
            log.debug("association released")
            assoc.is_released = True
            assoc.is_established = False
            evt.trigger(assoc, evt.EVT_RELEASED, {})
            assoc.kill()
            return

        if assoc.acse.is_aborted():
            assoc.dul.receive_pdu(wait=False)
            assoc.is_aborted = True
            assoc.is_established = False
            evt.trigger(assoc, evt.EVT_ABORTED, {})
            assoc.kill()
            return

        if not assoc.dul.is_alive():
            assoc.kill()
            return

        if assoc.dul.idle_timer_expired():
            log.error("network timeout reached")
            if assoc.network_timeout_response == "A-RELEASE":
                assoc._is_paused = True
                assoc._reactor_checkpoint.wait()
                assoc.release()
                assoc._is_paused = False
            else:
                assoc.abort()
            assoc.kill()
            return
