"""Posture is checked at admission, and again while an association stays open.

Why: admission judges a device's posture once, when its A-ASSOCIATE-RQ arrives. A failing
report aborts the device's open associations at once (``Handlers.abort_device``), but nothing
else did: a report going stale (the agent stopped, or the host was taken off the network to
be tampered with), a policy changed from the CLI (another process), a new posture key, or a
device suspended or removed, all left open associations sending for as long as the modality
kept them. Every ``posture.recheck_seconds`` this thread judges each device that has open
associations as admission would now, and with ``posture.abort_on_failure`` aborts those that
would be refused (what was acknowledged is kept; the modality resends the rest once it is
admitted again).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Any

from dicom_scp.handlers import Handlers
from gateway.admission import AssociationFacts, check_posture
from gateway.service import Gateway

log = logging.getLogger("ztbridge.dicom")


class PostureWatch:
    """A daemon thread re-judging the posture behind open associations."""

    def __init__(self, gateway: Gateway, handlers: Handlers, interval: float) -> None:
        self._gw = gateway
        self._handlers = handlers
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start checking (nothing to do with ``posture.abort_on_failure`` off)."""
        if self._interval <= 0 or not self._gw.settings.posture.abort_on_failure:
            return
        self._thread = threading.Thread(target=self._run, name="PostureWatch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop checking; waits for a check in progress."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check_once()
            except Exception:  # the index may be briefly unavailable: try again next time
                log.exception("posture re-check of open associations failed")

    def check_once(self) -> int:
        """Judge every device with open associations now; abort what fails. Returns how many
        associations were aborted."""
        by_device: dict[tuple[int, str], list[Any]] = defaultdict(list)
        for assoc, origin in self._handlers.admitted():
            if origin.device_id is not None and origin.calling_ae and assoc.is_established:
                by_device[(origin.device_id, origin.calling_ae)].append(assoc)
        aborted = 0
        our_ae = self._gw.settings.dicom.ae_title
        for (device_id, ae), assocs in by_device.items():
            device = self._gw.devices.by_ae(ae)
            if device is None or device.id != device_id or not device.active:
                reason = f"device {ae!r} was removed or suspended"
            else:
                facts = AssociationFacts(
                    ae,
                    our_ae,
                    "",
                    our_ae,
                    device,
                    posture=self._gw.posture.status(device.id),
                    now=self._gw.clock.now(),
                )
                refusal = check_posture(facts)
                if refusal is None:
                    continue
                reason = refusal.reason
            for assoc in assocs:
                self._handlers.abort_for_posture(assoc, reason)
                aborted += 1
        return aborted
