"""pynetdicom event handlers: thin translations to gateway verbs, returning DIMSE statuses.

Admission happens once, at A-ASSOCIATE-RQ time (EVT_REQUESTED), so a peer that may not send
is turned away before it transfers a byte of pixel data, with a standard rejection.
"""

from __future__ import annotations

import logging
import socket
import threading
import weakref
from collections.abc import Callable
from typing import Any

from pynetdicom import evt
from pynetdicom.events import InterventionEvent, NotificationEvent

from gateway.admission import AssociationFacts, RejectReason, decide
from gateway.audit import AuditEvent
from gateway.errors import ZtbridgeError
from gateway.ingest import Incoming, Origin
from gateway.service import Gateway

log = logging.getLogger("ztbridge.dicom")

EventBinding = (
    tuple[NotificationEvent | InterventionEvent, Callable[..., Any]]
    | tuple[NotificationEvent | InterventionEvent, Callable[..., Any], list[Any]]
)

# (result, source, diagnostic) per PS3.8 9.3.4: permanent, service-user.
_REJECTIONS = {
    RejectReason.CALLING_AE_NOT_RECOGNIZED: (0x01, 0x01, 0x03),
    RejectReason.CALLED_AE_NOT_RECOGNIZED: (0x01, 0x01, 0x07),
    RejectReason.NO_REASON_GIVEN: (0x01, 0x01, 0x01),
}
STATUS_PROCESSING_FAILURE = 0x0110


def _peer(assoc: Any) -> str:
    return f"{assoc.requestor.ae_title.strip()}@{assoc.requestor.address}"


class Handlers:
    """Binds the gateway to pynetdicom events; remembers each admitted association's origin."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self._origins: weakref.WeakKeyDictionary[Any, Origin] = weakref.WeakKeyDictionary()
        # Studies each association stored, handed to anchoring when it ends.
        self._studies: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self.draining = False  # set on shutdown: refuse new associations, finish open ones

    def bindings(self) -> list[EventBinding]:
        """The (event, handler) pairs for ``AE.start_server``."""
        return [
            (evt.EVT_CONN_OPEN, self.on_connection),
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_ACCEPTED, self.on_accepted),
            (evt.EVT_C_ECHO, self.handle_echo),
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_RELEASED, self.on_ended),
            (evt.EVT_ABORTED, self.on_ended),
        ]

    def on_connection(self, event: Any) -> None:
        """Disable Nagle: each C-STORE response is tiny and the peer waits for it."""
        sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as e:  # a socket already closed by the peer
                log.debug("TCP_NODELAY not set: %s", e)

    def on_requested(self, event: Any) -> None:
        """Run admission; reject the association here if any check fails.

        Fails closed: pynetdicom swallows exceptions from notification handlers and would
        go on to accept, so any error while deciding is itself a (transient) rejection.
        """
        try:
            self._admit(event)
        except Exception as e:
            assoc = event.assoc
            log.exception("admission failed with an error; refusing the association")
            self._audit(
                AuditEvent(
                    "association.refused",
                    _peer(assoc),
                    "",
                    "refused",
                    {"check": "admission-error", "reason": f"{type(e).__name__}: {e}"},
                )
            )
            if not assoc.is_rejected:
                assoc.acse.send_reject(0x02, 0x01, 0x01)  # transient, service user, no reason
            assoc.kill()

    def _admit(self, event: Any) -> None:
        assoc = event.assoc
        if self.draining:
            log.info("association from %s turned away: shutting down", _peer(assoc))
            assoc.acse.send_reject(0x02, 0x03, 0x01)  # transient, provider, temporary congestion
            assoc.kill()
            return
        rq = assoc.requestor.primitive
        calling = str(rq.calling_ae_title).strip()
        called = str(rq.called_ae_title).strip()
        device = self.gw.devices.by_ae(calling)
        facts = AssociationFacts(
            calling_ae=calling,
            called_ae=called,
            peer_ip=str(assoc.requestor.address),
            our_ae=self.gw.settings.dicom.ae_title,
            device=device,
        )
        refusal = decide(facts)
        actor = f"{calling}@{facts.peer_ip}"
        if refusal is not None:
            log.warning(
                "association from %s refused (%s): %s", actor, refusal.check, refusal.reason
            )
            self._audit(
                AuditEvent(
                    "association.refused",
                    actor,
                    called,
                    "refused",
                    {"check": refusal.check, "reason": refusal.reason},
                )
            )
            assoc.acse.send_reject(*_REJECTIONS[refusal.reject])
            # As pynetdicom does for its own rejections: wait until the DUL has sent the
            # A-ASSOCIATE-RJ and the peer closed, or the socket would be shut first.
            assoc.kill()
            return
        assert device is not None
        with self._lock:
            self._origins[assoc] = Origin(
                kind="c-store", actor=actor, calling_ae=calling, device_id=device.id
            )

    def on_accepted(self, event: Any) -> None:
        """Audit that an admitted association was established."""
        assoc = event.assoc
        contexts = len(assoc.accepted_contexts)
        log.info("association from %s accepted (%d contexts)", _peer(assoc), contexts)
        self._audit(
            AuditEvent(
                "association.accepted",
                _peer(assoc),
                self.gw.settings.dicom.ae_title,
                "ok",
                {"contexts": contexts},
            )
        )

    def handle_echo(self, event: Any) -> int:
        """C-ECHO: success."""
        return 0x0000

    def handle_store(self, event: Any) -> int:
        """C-STORE: hand the data set, exactly as received, to ingest; answer its status."""
        origin = self._origins.get(event.assoc)
        if origin is None:  # cannot happen: admission ran first
            return STATUS_PROCESSING_FAILURE
        request = event.request
        receipt = self.gw.ingestor.ingest(
            Incoming(
                dataset=request.DataSet.getbuffer(),  # a view: no copy of the pixels
                transfer_syntax=str(event.context.transfer_syntax),
                declared_sop_class=str(request.AffectedSOPClassUID),
                declared_sop_instance=str(request.AffectedSOPInstanceUID),
            ),
            origin,
        )
        if receipt.study_uid is not None:
            self._stored_study(event.assoc, receipt.study_uid)
        return receipt.status

    def _stored_study(self, assoc: Any, study_uid: str) -> None:
        studies = self._studies.get(assoc)
        if studies is None:
            with self._lock:
                studies = self._studies.setdefault(assoc, set())
        studies.add(study_uid)

    def on_ended(self, event: Any) -> None:
        """Released or aborted: the studies it brought can be anchored (off this thread)."""
        with self._lock:
            studies = self._studies.pop(event.assoc, None)
        if studies and self.gw.anchoring is not None:
            self.gw.anchoring.association_ended(studies)

    def _audit(self, event: AuditEvent) -> None:
        try:
            self.gw.audit.record(event)
        except ZtbridgeError as e:
            log.error("could not write audit event %s: %s", event.kind, e)
