"""Starting and stopping the DICOM listener."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pynetdicom import AE, _config

from dicom_scp.contexts import storage_contexts, verification_context
from dicom_scp.fdlimit import silent_caps
from dicom_scp.guard import Guard, GuardedServer, Limits
from dicom_scp.handlers import Handlers
from dicom_scp.lobby import PendingConnections
from dicom_scp.tls import server_context
from dicom_scp.watch import PostureWatch
from gateway.errors import ConfigError
from gateway.pki import PkiPaths
from gateway.service import Gateway

log = logging.getLogger("ztbridge.dicom")


class DicomServer:
    """The pynetdicom AE configured from settings, serving in background threads.

    One AE, up to two listeners: plain TCP on ``dicom.port`` (unless ``dicom.plain_tcp`` is
    off) and DICOM TLS on ``tls.port`` (when a CA exists, or ``tls.enabled = "on"``). Both
    share the admission handlers and the limits of ``dicom_scp.guard``.
    """

    def __init__(self, gateway: Gateway) -> None:
        s = gateway.settings.dicom
        self.gateway = gateway
        self.handlers = Handlers(gateway)
        gateway.posture.on_failure(self.handlers.abort_device)
        # pynetdicom's "standard" handlers only feed its DEBUG log (capped at WARNING by
        # ztbridge) and parse every PDU again to do it; on a peer's odd but decodable PDU
        # they raised and logged a traceback (an A-ASSOCIATE-AC with no user information).
        _config.LOG_HANDLER_LEVEL = "none"
        ae = AE(ae_title=s.ae_title)
        ae.supported_contexts = [*storage_contexts(), verification_context()]
        ae.maximum_pdu_size = s.max_pdu_length
        # Admission enforces the real limits (total and per device, counting only admitted
        # associations); pynetdicom's own count includes connections still negotiating, so
        # it is only a backstop here.
        ae.maximum_associations = s.max_associations + s.max_pending_connections + 8
        ae.acse_timeout = s.acse_timeout
        ae.dimse_timeout = s.dimse_timeout
        ae.network_timeout = s.network_timeout
        self.ae = ae
        self.guard = Guard(
            Limits(
                max_pdu_bytes=s.max_pdu_length,
                max_associate_rq_bytes=s.max_associate_rq_bytes,
                max_dataset_bytes=gateway.ingestor.max_instance_bytes,
                io_timeout=s.network_timeout,
                handshake_timeout=gateway.settings.tls.handshake_timeout,
            ),
            PendingConnections(
                s.max_pending_connections,
                s.max_pending_per_address,
                *silent_caps(s.max_silent_connections, s.max_silent_per_address),
            ),
            self.handlers.on_violation,
            self.handlers.on_handshake_failure,
            first_byte_timeout=s.acse_timeout,
            on_request_refused=self.handlers.on_request_refused,
        )
        self.handlers.guard = self.guard
        self.watch = PostureWatch(gateway, self.handlers, gateway.settings.posture.recheck_seconds)
        self._servers: list[Any] = []
        self._server: Any = None  # the first listener (kept for callers that test it)
        self.listening: list[str] = []

    def _tls_context(self) -> Any:
        """The TLS context, None when TLS is off (or 'auto' and no CA exists yet)."""
        settings = self.gateway.settings
        paths = PkiPaths(settings.home)
        if settings.tls.enabled == "off":
            return None
        if settings.tls.enabled == "auto" and not paths.exists():
            log.info("DICOM TLS off: no CA yet ('ztbridge ca init' creates it)")
            return None
        return server_context(paths, settings.tls)

    def _listen(self, port: int, ssl_context: Any) -> None:
        s = self.gateway.settings.dicom
        try:
            server = self.ae.make_server(
                (s.host, port),
                ssl_context=ssl_context,
                evt_handlers=[*self.handlers.bindings(), *self.guard.bindings()],
                server_class=GuardedServer,
                guard=self.guard,
            )
        except OSError as e:  # name the address that failed (filename slot)
            raise OSError(e.errno, e.strerror, f"{s.host}:{port}") from e
        thread = threading.Thread(
            target=server.serve_forever, name=f"AcceptorServer-{port}", daemon=True
        )
        thread.start()
        self.ae._servers.append(server)
        self._servers.append(server)
        if self._server is None:
            self._server = server
        kind = "DICOM TLS" if ssl_context is not None else "DICOM"
        self.listening.append(f"{kind} on port {port}")
        log.info("%s listener on %s:%d, AE title %s", kind, s.host, port, s.ae_title)

    def start(self) -> None:
        """Listen without blocking; associations are served on their own threads."""
        settings = self.gateway.settings
        context = self._tls_context()
        if not settings.dicom.plain_tcp and context is None:
            raise ConfigError(
                "nothing to listen on: plain TCP is off (dicom.plain_tcp) and DICOM TLS is off"
                " or has no CA ('ztbridge ca init')"
            )
        try:
            if settings.dicom.plain_tcp:
                self._listen(settings.dicom.port, None)
            if context is not None:
                self._listen(settings.tls.port, context)
        except OSError:
            self._shutdown_servers()
            raise
        self.watch.start()

    def _transferring(self) -> list[Any]:
        """Established associations we accepted (a bare TCP connect does not count)."""
        return [a for a in self.ae.active_associations if a.is_acceptor and a.is_established]

    def stop(self, grace_seconds: float = 20.0) -> None:
        """Drain, then stop: new associations are turned away (transient, congestion),
        open ones get ``grace_seconds`` to finish their transfers, the rest are aborted.

        A modality whose association is aborted keeps the unacknowledged instances queued
        and resends them; nothing acknowledged is affected either way.
        """
        if self._server is None:
            return
        self.handlers.draining = True
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline and self._transferring():
            time.sleep(0.05)
        left = self._transferring()
        if left:
            log.warning(
                "aborting %d association(s) still open after %.0f s", len(left), grace_seconds
            )
        self._shutdown_servers()

    def _shutdown_servers(self) -> None:
        self.watch.stop()
        for server in self._servers:
            server.shutdown()
        self._servers = []
        self._server = None
        self.guard.lobby.stop()
