"""The anchoring worker: one background thread in ``ztbridge up``.

Every ``poll_seconds`` (or at once when woken by an ended association) it seals due batches,
then, unless it is backing off, connects to the chain if needed and sends the outbox. Chain
trouble (node down, wrong chain, no funds, another process holding the ledger) is logged and
retried with exponential backoff up to ``retry_max_seconds``; the rows stay pending, ingest
goes on. Every wait inside a chain call goes through ``_sleep``, which ends as soon as the
worker is asked to stop, so shutdown never hangs on a receipt that will not come.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from gateway.anchoring.policy import backoff_seconds
from gateway.anchoring.service import Anchoring
from gateway.errors import ZtbridgeError
from gateway.ledger.errors import LedgerConfigError, LedgerUnavailableError

if TYPE_CHECKING:
    from gateway.anchoring.session import Session

log = logging.getLogger("ztbridge.anchoring")


class _StoppingError(LedgerUnavailableError):
    """Raised out of a chain wait when the worker is stopping."""


class AnchorWorker:
    """Runs ``Anchoring`` in a thread; ``stop`` seals what is left and returns."""

    def __init__(self, anchoring: Anchoring) -> None:
        self.anchoring = anchoring
        self.settings = anchoring.settings.ledger
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._session: Session | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._last_problem = ""
        self._busy_since: float | None = None
        anchoring.on_work = self._wake.set

    def start(self) -> None:
        """Start the thread."""
        self._thread = threading.Thread(target=self._run, name="ztbridge-anchor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to finish (it seals remaining studies first) and wait for it."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            wait = timeout if timeout is not None else self.settings.request_timeout + 10
            self._thread.join(wait)
            if self._thread.is_alive():
                log.warning("the anchoring worker did not stop within %.0f s", wait)
            self._thread = None

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _StoppingError("ztbridge is stopping")

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.tick()
                self._wake.wait(self.settings.poll_seconds)
                self._wake.clear()
            try:
                sealed = self.anchoring.seal_due(force=True)
                if sealed:
                    log.info(
                        "sealed %d batch(es) on the way out; anchored at next start", len(sealed)
                    )
            except ZtbridgeError as e:
                log.error("could not seal the last batches: %s (they are sealed at next start)", e)
        finally:
            self._drop_session()
            self.anchoring.lock.release()

    def tick(self) -> None:
        """One round: seal, then send unless backing off. Never raises."""
        try:
            self.anchoring.seal_due()
        except ZtbridgeError as e:
            log.error("sealing batches failed: %s", e)
        except Exception:
            log.exception("sealing batches failed")
        now = self.anchoring.clock.monotonic()
        if now < self._retry_at or self._stop.is_set() or self._yield_to_ingest(now):
            return
        try:
            with self.anchoring.session_guard:  # the portal's grants use the same session
                session = self._session or self._connect()
                self.anchoring.send_pending(session, stopping=self._stop.is_set)
        except _StoppingError:
            return
        except ZtbridgeError as e:
            self._backoff(e)
            return
        except Exception as e:  # a bug: keep the thread alive, keep the rows, say so loudly
            log.exception("anchoring failed unexpectedly")
            self._backoff(e)
            return
        if self._failures:
            log.info("ledger reachable again; anchoring resumed")
        self._failures = 0
        self._last_problem = ""

    def _yield_to_ingest(self, now: float) -> bool:
        """Hold transactions back while instances keep arriving (bounded; see settings).

        Why: sending is CPU work in this process (signing, ABI encoding, and on the embedded
        chain the EVM itself), and it competes with the DICOM threads for the interpreter.
        Sealing is not held back, so every finished batch is already durable in the outbox.
        """
        limit = self.settings.defer_while_busy_seconds
        if not self.anchoring.ingest_moving or limit <= 0:
            self._busy_since = None
            return False
        if self._busy_since is None:
            self._busy_since = now
        if now - self._busy_since < limit:
            return True
        self._busy_since = None  # waited long enough: send this round, then defer again
        return False

    def _drop_session(self) -> None:
        with self.anchoring.session_guard:
            if self._session is not None:
                self._session.close()
                self._session = None
            self.anchoring.live_session = None

    def _connect(self) -> Session:
        if self.anchoring.live_session is not None:  # the portal connected first
            self._session = self.anchoring.live_session
            return self._session
        lock = self.anchoring.lock
        if not lock.acquire():
            raise LedgerUnavailableError(
                f"another ztbridge process (pid {lock.holder() or '?'}) holds the ledger"
                f" ({lock.path}); anchors wait until it is done"
            )
        self._session = self.anchoring.connect(sleep=self._sleep)
        self.anchoring.live_session = self._session
        d = self._session.deployment
        log.info("ledger: registry %s on the %s chain (id %d)", d.address, d.backend, d.chain_id)
        return self._session

    def _backoff(self, error: BaseException) -> None:
        self._failures += 1
        if isinstance(error, LedgerConfigError) and self._session is not None:
            self._drop_session()  # the chain may have changed: check it again next time
        delay = backoff_seconds(self._failures, 1.0, self.settings.retry_max_seconds)
        self._retry_at = self.anchoring.clock.monotonic() + delay
        problem = str(error)
        level = logging.WARNING if problem != self._last_problem else logging.INFO
        log.log(
            level,
            "ledger: %s; retrying in %.0f s (anchors wait in the outbox)",
            problem,
            delay,
        )
        self._last_problem = problem
