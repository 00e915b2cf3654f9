"""pynetdicom event handlers: thin translations to gateway verbs, returning DIMSE statuses.

Admission happens once, at A-ASSOCIATE-RQ time (EVT_REQUESTED), so a peer that may not send
is turned away before it transfers a byte of pixel data, with a standard rejection.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import weakref
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

from pynetdicom import evt
from pynetdicom.events import InterventionEvent, NotificationEvent
from pynetdicom.pdu_primitives import UserIdentityNegotiation

from dicom_scp import reactor
from dicom_scp.guard import Guard, Oversized
from dicom_scp.tls import diagnose
from gateway import identity
from gateway.admission import (
    AssociationFacts,
    RejectReason,
    check_association_limits,
    check_posture,
    decide,
)
from gateway.audit import AuditEvent
from gateway.credentials import CredentialStore, DeviceCredentials
from gateway.dimse_status import STATUS_OUT_OF_RESOURCES, STATUS_SUCCESS
from gateway.dimse_status import STATUS_PROCESSING_FAILURE as STATUS_PROCESSING_FAILURE
from gateway.errors import ZtbridgeError
from gateway.ingest import Incoming, Origin
from gateway.logsafe import shown
from gateway.pki import fingerprint
from gateway.posture.service import PostureFailure
from gateway.service import Gateway

log = logging.getLogger("ztbridge.dicom")

EventBinding = (
    tuple[NotificationEvent | InterventionEvent, Callable[..., Any]]
    | tuple[NotificationEvent | InterventionEvent, Callable[..., Any], list[Any]]
)

# (result, source, diagnostic) per PS3.8 9.3.4: permanent (0x01) or transient (0x02),
# service-user.
_REJECTIONS = {
    RejectReason.CALLING_AE_NOT_RECOGNIZED: (0x01, 0x01, 0x03),
    RejectReason.CALLED_AE_NOT_RECOGNIZED: (0x01, 0x01, 0x07),
    RejectReason.NO_REASON_GIVEN: (0x01, 0x01, 0x01),
    RejectReason.TRANSIENT_NO_REASON_GIVEN: (0x02, 0x01, 0x01),
    RejectReason.AUTHENTICATION_FAILED: (0x01, 0x02, 0x01),  # permanent, ACSE, no reason
    RejectReason.LOCAL_LIMIT_EXCEEDED: (0x02, 0x03, 0x02),  # transient, presentation, limit
}


def _peer(assoc: Any) -> str:
    """``AE@address`` for logs and audit; the AE title is the peer's choice (gateway/logsafe)."""
    return f"{shown(assoc.requestor.ae_title.strip())}@{assoc.requestor.address}"


def _transport(assoc: Any) -> tuple[str, str | None]:
    """("tls", client certificate fingerprint) or ("tcp", None) for an association's socket."""
    sock = assoc.dul.socket.socket if assoc.dul.socket is not None else None
    if isinstance(sock, ssl.SSLSocket):
        der = sock.getpeercert(binary_form=True)
        return "tls", fingerprint(der) if der else None
    return "tcp", None


def _identity_claim(assoc: Any) -> identity.Claim | None:
    item = assoc.requestor.user_identity
    if item is None:
        return None
    return identity.Claim(
        identity_type=int(item.user_identity_type or 0),
        primary=bytes(item.primary_field or b""),
        secondary=bytes(item.secondary_field) if item.secondary_field is not None else None,
        wants_response=bool(item.positive_response_requested),
    )


def _days(days: int) -> timedelta | None:
    return timedelta(days=days) if days > 0 else None


class Handlers:
    """Binds the gateway to pynetdicom events; remembers each admitted association's origin."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self._origins: weakref.WeakKeyDictionary[Any, Origin] = weakref.WeakKeyDictionary()
        # Studies each association stored, handed to anchoring when it ends.
        self._studies: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self.draining = False  # set on shutdown: refuse new associations, finish open ones
        self.credentials = CredentialStore(gateway.db, gateway.audit, gateway.clock)
        self.guard: Guard | None = None  # set by the server: pending pool, limits
        # argon2id costs ~20 MiB and tens of ms per check: at most two at a time.
        self._identity_slots = threading.BoundedSemaphore(2)
        # Posture failures seen per device (under _lock), and the count each admitted
        # association was admitted at: a failure that lands while an association is between
        # its posture check and its A-ASSOCIATE-AC is caught at registration or on_accepted.
        self._posture_failures: dict[int, int] = {}
        self._admitted_at: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._aborting: weakref.WeakSet[Any] = weakref.WeakSet()

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
        """Before the association's threads start: event-driven loops, and no Nagle (each
        C-STORE response is tiny and the peer waits for it)."""
        reactor.accelerate(event.assoc)
        sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
        if sock is not None and self.gw.settings.dicom.tcp_nodelay:
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
        if self.guard is not None:
            self.guard.requested(assoc)
        rq = assoc.requestor.primitive
        calling = str(rq.calling_ae_title).strip()
        called = str(rq.called_ae_title).strip()
        device = self.gw.devices.by_ae(calling)
        with self._lock:  # before the posture snapshot below
            failures = self._posture_failures.get(device.id, 0) if device else 0
        transport, peer_cert = _transport(assoc)
        creds = self.credentials.get(device.id) if device else DeviceCredentials()
        owner = None
        if peer_cert is not None and peer_cert not in creds.fingerprints:
            owner = self.credentials.owner_of(peer_cert)
        s = self.gw.settings.dicom
        facts = AssociationFacts(
            calling_ae=calling,
            called_ae=called,
            peer_ip=str(assoc.requestor.address),
            our_ae=s.ae_title,
            device=device,
            posture=self.gw.posture.status(device.id) if device is not None else None,
            transport=transport,  # type: ignore[arg-type]
            peer_certificate=peer_cert,
            certificate_owner=owner,
            credentials=creds,
            user_identity=_identity_claim(assoc),
            max_jwt_validity=_days(self.gw.settings.tls.max_jwt_validity_days),
            jwt_leeway_seconds=self.gw.settings.tls.jwt_leeway_seconds,
            now=self.gw.clock.now(),
            max_associations=s.max_associations,
            max_per_device=s.max_associations_per_device,
        )
        total, mine = self._open_counts(device.id if device else None)
        facts = replace(facts, open_associations=total, open_for_device=mine)
        if creds.identity is not None:
            with self._identity_slots:
                refusal = decide(facts)
        else:
            refusal = decide(facts)
        actor = f"{shown(calling)}@{facts.peer_ip}"
        if refusal is None:
            assert device is not None
            with self._lock:  # count and register atomically: limits cannot be overrun
                total, mine = self._open_counts(device.id)
                refusal = check_association_limits(
                    replace(facts, open_associations=total, open_for_device=mine)
                )
                now_failures = self._posture_failures.get(device.id, 0)
                if refusal is None and now_failures != failures:  # failed while we checked
                    fresh = self.gw.posture.status(device.id)
                    refusal = check_posture(replace(facts, posture=fresh))
                if refusal is None:
                    self._origins[assoc] = Origin(
                        kind="c-store", actor=actor, calling_ae=calling, device_id=device.id
                    )
                    self._admitted_at[assoc] = now_failures
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
                    {"check": refusal.check, "reason": refusal.reason, "transport": transport},
                )
            )
            assoc.acse.send_reject(*_REJECTIONS[refusal.reject])
            # As pynetdicom does for its own rejections: wait until the DUL has sent the
            # A-ASSOCIATE-RJ and the peer closed, or the socket would be shut first.
            assoc.kill()
            return
        claim = facts.user_identity
        if creds.identity is not None and claim is not None and claim.wants_response:
            # Positive response (PS3.7 D.3.3.7.2): an empty server response, which is what
            # types 1 and 2 require; pynetdicom only answers types 3-5 by itself.
            response = UserIdentityNegotiation()
            response.server_response = b""
            assoc.acceptor.add_negotiation_item(response)

    def _open_counts(self, device_id: int | None) -> tuple[int, int]:
        """Admitted associations still running: in total, and for ``device_id``."""
        live = [o for a, o in list(self._origins.items()) if a.is_alive()]
        mine = sum(1 for o in live if device_id is not None and o.device_id == device_id)
        return len(live), mine

    def on_violation(self, assoc: Any, check: str, reason: str) -> None:
        """A peer broke a protocol limit (PDU or command size): log and audit it."""
        try:
            calling = str(assoc.requestor.primitive.calling_ae_title).strip()
        except AttributeError:
            calling = "?"
        actor = f"{shown(calling)}@{assoc.requestor.address}"
        log.warning("association from %s refused (%s): %s", actor, check, reason)
        self._audit(
            AuditEvent(
                "association.refused", actor, "", "refused", {"check": check, "reason": reason}
            )
        )

    def on_request_refused(self, assoc: Any, request: Any, status: int, reason: str) -> None:
        """The guard refused a request before serving it (its Affected SOP Class is not its
        context's): a C-STORE is logged and audited as a refused instance, like ingest's; any
        other request as a refused request."""
        origin = self._origins.get(assoc)
        uid = getattr(request, "AffectedSOPInstanceUID", None)
        if origin is not None and uid is not None:
            self.gw.ingestor.refuse(reason, status, origin, str(uid))
            return
        log.warning("request from %s refused (0x%04X): %s", _peer(assoc), status, reason)
        self._audit(
            AuditEvent(
                "request.refused",
                _peer(assoc),
                "",
                "refused",
                {"reason": reason, "status": f"0x{status:04X}"},
            )
        )

    def on_handshake_failure(self, address: tuple[Any, ...], error: BaseException) -> None:
        """A TLS handshake failed. Certificate problems are audited; noise is only logged."""
        failure = diagnose(error)
        actor = f"?@{address[0]}"
        if failure.about_certificate:
            log.warning(
                "TLS connection from %s refused (%s): %s", actor, failure.check, failure.reason
            )
            self._audit(
                AuditEvent(
                    "association.refused",
                    actor,
                    "",
                    "refused",
                    {"check": failure.check, "reason": failure.reason, "transport": "tls"},
                )
            )
        else:
            log.info(
                "TLS connection from %s dropped (%s): %s", actor, failure.check, failure.reason
            )

    def abort_device(self, failure: PostureFailure) -> None:
        """A device's posture just failed: abort its open associations if settings say so.

        Runs on the thread that received the report. Whatever the aborted modality had
        sent and was acknowledged is durable; it resends the rest once admitted again. An
        association admitted but not yet established is counted here and aborted by
        ``on_accepted`` (it may not be aborted before its A-ASSOCIATE-AC is sent).
        """
        with self._lock:
            self._posture_failures[failure.device_id] = (
                self._posture_failures.get(failure.device_id, 0) + 1
            )
            victims = [a for a, o in self._origins.items() if o.device_id == failure.device_id]
        if not self.gw.settings.posture.abort_on_failure:
            return
        reason = f"device {failure.ae_title!r} fails policy {failure.policy!r}: " + "; ".join(
            failure.reasons
        )
        for assoc in victims:
            if assoc.is_established:
                self.abort_for_posture(assoc, reason)

    def abort_for_posture(self, assoc: Any, reason: str) -> None:
        """Abort an admitted association whose device no longer passes posture: log, audit.

        The abort itself runs on a thread of its own: pynetdicom waits for the peer to close
        after an A-ABORT (up to the ARTIM timeout), and the caller (a posture report being
        answered, the posture watch, an association being accepted) must not wait with it.
        """
        with self._lock:
            if assoc in self._aborting or assoc.is_aborted or not assoc.is_alive():
                return
            self._aborting.add(assoc)
        log.warning("association from %s aborted (posture): %s", _peer(assoc), reason)
        self._audit(
            AuditEvent(
                "association.aborted",
                _peer(assoc),
                self.gw.settings.dicom.ae_title,
                "refused",
                {"check": "posture", "reason": reason},
            )
        )
        threading.Thread(target=assoc.abort, name="AbortPosture", daemon=True).start()

    def admitted(self) -> list[tuple[Any, Origin]]:
        """Admitted associations still running, with their origin (for the posture watch)."""
        with self._lock:
            return [(a, o) for a, o in list(self._origins.items()) if a.is_alive()]

    def on_accepted(self, event: Any) -> None:
        """Audit that an admitted association was established."""
        assoc = event.assoc
        contexts = len(assoc.accepted_contexts)
        sock = assoc.dul.socket.socket if assoc.dul.socket is not None else None
        detail: dict[str, Any] = {"contexts": contexts, "transport": "tcp"}
        if isinstance(sock, ssl.SSLSocket):
            cipher = sock.cipher()
            detail.update(transport="tls", tls=sock.version(), cipher=cipher[0] if cipher else None)
        via = f", {detail['tls']} {detail['cipher']}" if detail["transport"] == "tls" else ""
        log.info("association from %s accepted (%d contexts%s)", _peer(assoc), contexts, via)
        origin = self._origins.get(assoc)
        with self._lock:
            failed = (
                origin is not None
                and origin.device_id is not None
                and self._admitted_at.get(assoc) != self._posture_failures.get(origin.device_id, 0)
            )
        if failed and self.gw.settings.posture.abort_on_failure:
            # Its device failed posture after admission, before it was established.
            reason = "its device failed posture while the association was being established"
            self.abort_for_posture(assoc, reason)
        self._audit(
            AuditEvent(
                "association.accepted",
                _peer(assoc),
                self.gw.settings.dicom.ae_title,
                "ok",
                detail,
            )
        )

    def handle_echo(self, event: Any) -> int:
        """C-ECHO: success."""
        return STATUS_SUCCESS

    def handle_store(self, event: Any) -> int:
        """C-STORE: hand the data set, exactly as received, to ingest; answer its status."""
        origin = self._origins.get(event.assoc)
        if origin is None:  # cannot happen: admission ran first
            return STATUS_PROCESSING_FAILURE
        request = event.request
        if isinstance(request.DataSet, Oversized):
            return self._refuse_oversized(request, origin)
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

    def _refuse_oversized(self, request: Any, origin: Origin) -> int:
        """The guard stopped buffering this instance at the size limit: refuse it (0xA700)."""
        limit = self.gw.ingestor.max_instance_bytes
        receipt = self.gw.ingestor.refuse(
            f"instance of {request.DataSet.received} bytes exceeds the limit of {limit}"
            " (not buffered past the limit)",
            STATUS_OUT_OF_RESOURCES,
            origin,
            str(request.AffectedSOPInstanceUID),
        )
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
