"""Starting and stopping the DICOM listener."""

from __future__ import annotations

import logging
import time
from typing import Any

from pynetdicom import AE

from dicom_scp.contexts import storage_contexts, verification_context
from dicom_scp.handlers import Handlers
from gateway.service import Gateway

log = logging.getLogger("ztbridge.dicom")


class DicomServer:
    """The pynetdicom AE configured from settings, serving in background threads."""

    def __init__(self, gateway: Gateway) -> None:
        s = gateway.settings.dicom
        self.gateway = gateway
        self.handlers = Handlers(gateway)
        gateway.posture.on_failure(self.handlers.abort_device)
        ae = AE(ae_title=s.ae_title)
        ae.supported_contexts = [*storage_contexts(), verification_context()]
        ae.maximum_pdu_size = s.max_pdu_length
        ae.maximum_associations = s.max_associations
        ae.acse_timeout = s.acse_timeout
        ae.dimse_timeout = s.dimse_timeout
        ae.network_timeout = s.network_timeout
        self.ae = ae
        self._server: Any = None

    def start(self) -> None:
        """Listen without blocking; associations are served on their own threads."""
        s = self.gateway.settings.dicom
        self._server = self.ae.start_server(
            (s.host, s.port), block=False, evt_handlers=list(self.handlers.bindings())
        )
        log.info("DICOM listener on %s:%d, AE title %s", s.host, s.port, s.ae_title)

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
        self._server.shutdown()
        self._server = None
